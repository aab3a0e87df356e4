//! `oscar-wgpu bench`: encode and decode timed per stage on one adapter or all of them,
//! with a real model or seeded synthetic weights of the full SD-2.1 OSCAR architecture,
//! next to the adapter's own measured FMA peak and bandwidth ([`runs`]); or the kernel
//! benchmark; or the plans alone (`--plan-only`).

use anyhow::{bail, Result};
use oscar_wgpu::codec;
use oscar_wgpu::gpu::{list_adapters, Gpu, GpuOptions};

use super::Output;
use runs::{bench_adapter, print_records};

mod kernels;
mod plans;
mod runs;

/// The adapter every result of `bench` names.
#[derive(Clone, serde::Serialize)]
struct AdapterLabel {
    adapter: String,
    /// `vulkan`, `metal`, `dx12` or `gl`: one GPU can show on several, under one name.
    backend: String,
    driver: String,
}

impl AdapterLabel {
    fn of(gpu: &Gpu) -> AdapterLabel {
        let info = &gpu.info;
        AdapterLabel {
            adapter: info.name.clone(),
            backend: format!("{:?}", info.backend).to_lowercase(),
            // GL has no driver name, only its version in `driver_info`.
            driver: [info.driver.as_str(), info.driver_info.as_str()]
                .iter()
                .filter(|part| !part.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// As the first three fields of a CSV line.
    fn csv(&self) -> String {
        format!(
            "{},{},{}",
            csv_text(&self.adapter),
            self.backend,
            csv_text(&self.driver)
        )
    }
}

/// `text` as one CSV field: quoted, its quotes doubled.
fn csv_text(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

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
    /// Every adapter, one after the other (each result names its adapter and backend).
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
    /// The results as JSON on stdout (progress stays on stderr): a list of records, or
    /// with --kernels one adapter's report (a list of them with --all-adapters).
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
        return kernels::run(&adapters, args);
    }
    if args.plan_only {
        return plans::run(&adapters, args);
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
