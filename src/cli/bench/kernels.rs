//! `bench --kernels`: the kernel benchmark of each adapter, as tables, JSON or CSV.

use anyhow::Result;
use oscar_wgpu::bench::kernels::{run_kernel_bench, table, KernelResult};
use oscar_wgpu::gpu::{Gpu, GpuOptions};

use super::{AdapterLabel, BenchArgs};

/// One adapter's kernel benchmark.
#[derive(serde::Serialize)]
struct KernelReport {
    #[serde(flatten)]
    gpu: AdapterLabel,
    fma_peak_gflops: f64,
    bandwidth_gbs: f64,
    kernels: Vec<KernelResult>,
}

/// Runs the kernel benchmark on each of `adapters`. A table is printed as each adapter
/// finishes; JSON (one adapter's report, or with `--all-adapters` a list of them) and
/// CSV (a line per adapter and kernel) once all have.
pub(super) fn run(adapters: &[GpuOptions], args: &BenchArgs) -> Result<()> {
    let mut reports = Vec::new();
    for options in adapters {
        let gpu = Gpu::new(options)?;
        let (peak, bandwidth, kernels) = run_kernel_bench(&gpu, args.quick, &args.only)?;
        let report = KernelReport {
            gpu: AdapterLabel::of(&gpu),
            fma_peak_gflops: peak,
            bandwidth_gbs: bandwidth,
            kernels,
        };
        if !args.json && !args.csv {
            print_table(&report);
        }
        reports.push(report);
    }
    if args.json {
        let json = match reports.as_slice() {
            [one] if !args.all_adapters => serde_json::to_string_pretty(one)?,
            all => serde_json::to_string_pretty(all)?,
        };
        println!("{json}");
    } else if args.csv {
        print!("{}", csv(&reports));
    }
    Ok(())
}

fn print_table(report: &KernelReport) {
    println!(
        "{} ({}): FMA peak {:.1} GFLOP/s, bandwidth {:.1} GB/s",
        report.gpu.adapter, report.gpu.backend, report.fma_peak_gflops, report.bandwidth_gbs
    );
    print!("{}", table(&report.kernels));
}

fn csv(reports: &[KernelReport]) -> String {
    let mut w = String::from("adapter,backend,driver,fma_peak_gflops,bandwidth_gbs,kernel,shape,ms,gflops,probe_gflops,peak_fraction,bytes,flops_per_byte,roofline_fraction\n");
    for r in reports {
        for k in &r.kernels {
            w += &format!(
                "{},{:.2},{:.2},{},{},{:.4},{:.2},{:.2},{:.4},{},{:.3},{:.4}\n",
                r.gpu.csv(),
                r.fma_peak_gflops,
                r.bandwidth_gbs,
                k.name,
                super::csv_text(&k.shape),
                k.ms,
                k.gflops,
                k.probe_gflops,
                k.peak_fraction,
                k.bytes,
                k.flops_per_byte,
                k.roofline_fraction
            );
        }
    }
    w
}
