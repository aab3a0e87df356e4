use oscar_wgpu::gpu::{Gpu, GpuOptions};

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("adapter: {}", gpu.info.name);
    let peak = oscar_wgpu::bench::probe::fma_peak(&gpu)?;
    println!("fma peak {peak:.1} GFLOP/s");
    let bw = oscar_wgpu::bench::probe::bandwidth(&gpu)?;
    println!("bandwidth {bw:.1} GB/s");
    Ok(())
}
