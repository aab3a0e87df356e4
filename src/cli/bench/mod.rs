//! `oscar-wgpu bench`: encode and decode timed per stage on one adapter or all of them,
//! with a real model or seeded synthetic weights of the full SD-2.1 OSCAR architecture,
//! next to the adapter's own measured FMA peak and bandwidth ([`runs`]); or the kernel
//! benchmark; or the plans alone (`--plan-only`).

use anyhow::{bail, Result};
use oscar_wgpu::bench::kernels::{run_kernel_bench, table};
use oscar_wgpu::codec;
use oscar_wgpu::gpu::{list_adapters, Gpu, GpuOptions};
use oscar_wgpu::model::synthetic::Architecture;
use oscar_wgpu::model::{DecodeSchedule, EncodeSchedule, Oscar, TilePolicy};
use oscar_wgpu::weights::Precision;

use super::Output;
use runs::{bench_adapter, print_records};

mod runs;

/// Progress goes to stderr, so `--json` / `--csv` output stays machine-readable.
fn progress(out: Output, line: String) {
    if !out.quiet {
        eprintln!("{line}");
    }
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seeded random weights of the full SD-2.1 OSCAR architecture (no download).
    #[arg(long, conflicts_with = "model")]
    synthetic: bool,
    /// A model file instead of synthetic weights.
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Image sizes (square, multiples of 64).
    #[arg(long, value_delimiter = ',', default_value = "256", value_parser = parse_size)]
    sizes: Vec<usize>,
    /// Levels to run.
    #[arg(long, value_delimiter = ',', default_value = "5")]
    levels: Vec<usize>,
    /// Timed runs after the warm-up (at least one).
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    runs: usize,
    /// Untimed runs first (pipelines compiled, caches warm).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// No per-stage GPU times: skips the timestamped encode and decode that follow each
    /// timed pair (for sizes where every run counts).
    #[arg(long)]
    no_stages: bool,
    /// Packed f16 weights on the decode side.
    #[arg(long)]
    f16: bool,
    /// Every adapter, one after the other.
    #[arg(long)]
    all_adapters: bool,
    /// The kernel benchmark (conv, matmul, attention at SD shapes) instead: each as a
    /// fraction of the FMA probe read just before and after its runs.
    #[arg(long)]
    kernels: bool,
    /// Kernel benchmark without the largest shapes.
    #[arg(long)]
    quick: bool,
    /// Kernel benchmark: only the kernels whose name or shape contains this (conv2d,
    /// linear, matmul, group_norm, attention; "@ 8×8", "[64,").
    #[arg(long, requires = "kernels", default_value = "")]
    only: String,
    /// Only plan decodes and encodes of the synthetic full-size model (no weights,
    /// nothing runs): the GPU memory each size takes untiled and tiled within the
    /// budget, for sizes too slow to run here.
    #[arg(long)]
    plan_only: bool,
    #[command(flatten)]
    tiles: super::TileArgs,
    /// The results as JSON on stdout (progress stays on stderr).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// The results as CSV on stdout (progress stays on stderr).
    #[arg(long)]
    csv: bool,
}

/// A `--sizes` entry: pictures are padded to multiples of 64, so only those are timed.
fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let multiple = codec::PICTURE_MULTIPLE as usize;
    match text.trim().parse::<usize>() {
        Ok(size) if size > 0 && size.is_multiple_of(multiple) => Ok(size),
        _ => Err(format!("'{text}' is not a positive multiple of {multiple}")),
    }
}

pub fn run(gpu: &GpuOptions, args: &BenchArgs, out: Output) -> Result<()> {
    let adapters: Vec<GpuOptions> = if args.all_adapters {
        list_adapters(gpu)?
            .iter()
            .map(|a| GpuOptions {
                adapter: Some(a.index.to_string()),
                ..gpu.clone()
            })
            .collect()
    } else {
        vec![gpu.clone()]
    };
    if args.kernels {
        for options in &adapters {
            kernels(&Gpu::new(options)?, args, out)?;
        }
        return Ok(());
    }
    if args.plan_only {
        return plan_only(gpu, args);
    }
    if !args.synthetic && args.model.is_none() {
        bail!("pass --synthetic (full SD-2.1 OSCAR sizes, seeded weights) or --model FILE");
    }
    let mut records = Vec::new();
    for options in &adapters {
        records.extend(bench_adapter(options, args, out)?);
    }
    print_records(&records, args)
}

fn plan_only(options: &GpuOptions, args: &BenchArgs) -> Result<()> {
    let arch = Architecture::sd21()?;
    let precision = Precision::packed_f16(args.f16);
    let oscar = Oscar::planning_only(Gpu::new(options)?, &arch, precision);
    let policy = args.tiles.policy(&oscar)?;
    let mib = |b: u64| format!("{:.0}", b as f64 / 1048576.0);
    println!(
        "plans of the full-size model ({precision:?} weights: {} MiB), activations in MiB; tiled within {} MiB",
        mib(oscar.weights.bytes),
        mib(policy.budget)
    );
    println!(
        "{:>6} {:>5} {:<7} {:>9} {:>9}  {:<52}",
        "size", "level", "", "untiled", "tiled", "tiles (latent pixels)"
    );
    let forced = TilePolicy {
        budget: policy.budget,
        vae_tile: Some(policy.vae_tile.unwrap_or(usize::MAX)),
        unet_tile: None,
    };
    for &size in &args.sizes {
        for &level in &args.levels {
            let cell = oscar.info.pixels_per_token(level)?;
            let grid = (size / cell, size / cell);
            let untiled = match oscar.plan_decode(level, grid) {
                Ok(plan) => mib(plan.peak_bytes),
                Err(oscar_wgpu::Error::TooLarge { .. }) => "refused".into(),
                Err(e) => return Err(e.into()),
            };
            let decode = oscar.decode_schedule(level, grid, &forced)?;
            let tiles = match &decode {
                DecodeSchedule::Staged { unet, vae, .. } => {
                    format!("UNet {}, VAE {}", unet.describe(), vae.describe())
                }
                DecodeSchedule::Whole { .. } => "whole".into(),
            };
            println!(
                "{size:>6} {level:>5} {:<7} {untiled:>9} {:>9}  {tiles}",
                "decode",
                mib(decode.peak_bytes())
            );
            let untiled = match oscar.encode_schedule(
                level,
                size,
                size,
                &TilePolicy {
                    budget: u64::MAX,
                    vae_tile: None,
                    unet_tile: None,
                },
            ) {
                Ok(s) => mib(s.peak_bytes()),
                Err(oscar_wgpu::Error::TooLarge { .. }) => "refused".into(),
                Err(e) => return Err(e.into()),
            };
            let (tiled, tiles) = match oscar.encode_schedule(level, size, size, &forced) {
                Ok(EncodeSchedule::Staged { vae, hyper_bytes }) => (
                    mib(vae.peak_bytes.max(hyper_bytes)),
                    format!("VAE {}", vae.describe()),
                ),
                Ok(EncodeSchedule::Whole { peak_bytes }) => (mib(peak_bytes), "whole".into()),
                Err(e @ oscar_wgpu::Error::OverBudget { .. }) => ("over".into(), e.to_string()),
                Err(e) => return Err(e.into()),
            };
            println!(
                "{size:>6} {level:>5} {:<7} {untiled:>9} {tiled:>9}  {tiles}",
                "encode"
            );
        }
    }
    Ok(())
}

fn kernels(gpu: &Gpu, args: &BenchArgs, out: Output) -> Result<()> {
    let (peak, bandwidth, results) = run_kernel_bench(gpu, args.quick, &args.only)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"adapter": gpu.info.name, "fma_peak_gflops": peak, "bandwidth_gbs": bandwidth, "kernels": results})
            )?
        );
        return Ok(());
    }
    progress(
        out,
        format!(
            "{} ({:?}): FMA peak {peak:.1} GFLOP/s, bandwidth {bandwidth:.1} GB/s",
            gpu.info.name, gpu.info.backend
        ),
    );
    print!("{}", table(&results));
    Ok(())
}
