//! `cargo bench --bench kernels [-- --quick] [-- NAME]`: the op kernels at Stable
//! Diffusion shapes against the device's probed FMA peak; NAME (conv2d, linear, matmul,
//! group_norm, attention, or part of a shape) runs only the kernels whose name or shape contains it.

use oscar_wgpu::bench::kernels::{run_kernel_bench, table};
use oscar_wgpu::gpu::{Gpu, GpuOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // cargo bench passes `--bench`; any other word names the kernels to run.
    let only = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or("", String::as_str);
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!(
        "adapter: {} ({:?}, {})",
        gpu.info.name, gpu.info.backend, gpu.info.driver_info
    );
    let (peak, bw, results) = run_kernel_bench(&gpu, quick, only)?;
    println!("FMA peak probe: {peak:.1} GFLOP/s   bandwidth probe: {bw:.1} GB/s\n");
    print!("{}", table(&results));
    Ok(())
}
