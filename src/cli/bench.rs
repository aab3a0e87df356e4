//! `oscar-wgpu bench`: encode and decode timed per stage on one adapter or all of them,
//! with a real model or seeded synthetic weights of the full SD-2.1 OSCAR architecture,
//! next to the adapter's own measured FMA peak and bandwidth.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Result};
use oscar_wgpu::bench::kernels::{run_kernel_bench, table};
use oscar_wgpu::bench::{median, probe};
use oscar_wgpu::codec::{self, rans_gpu, ModelTag, OscarFile};
use oscar_wgpu::gpu::{list_adapters, Gpu, GpuOptions};
use oscar_wgpu::graph::StageTime;
use oscar_wgpu::model::synthetic::Architecture;
use oscar_wgpu::model::{DecodeSchedule, EncodeSchedule, Oscar, RunOptions, TilePolicy};
use oscar_wgpu::rng::Rng;
use oscar_wgpu::weights::Precision;

use super::Output;

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
    /// Timed runs after the warm-up.
    #[arg(long, default_value_t = 3)]
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

/// One line of the results: (adapter, size, level, stage).
#[derive(serde::Serialize)]
struct Record {
    adapter: String,
    backend: String,
    driver: String,
    precision: String,
    /// The kernel set the ops took: `subgroup8` or `portable` (see `ops::kernel_set`).
    kernels: &'static str,
    version: &'static str,
    size: usize,
    level: usize,
    stage: String,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    gflops: f64,
    peak_fraction: f64,
    peak_memory_bytes: u64,
    /// How far the adapter's own FMA peak or bandwidth moved across the probes taken
    /// before, between and after the runs (0.05: 5 %); past [`STEADY`], the machine's
    /// speed changed under the runs and their numbers compare poorly with another run's.
    machine_drift: f64,
}

/// Drift of the probes, and spread of a stage's runs ((max − min) / median), past
/// which the bench warns that the machine was not steady.
const STEADY: f64 = 0.05;

/// The roofline probes of one adapter at one moment.
#[derive(Clone, Copy)]
struct Probes {
    fma_gflops: f64,
    bandwidth_gbs: f64,
}

impl Probes {
    fn measure(gpu: &Gpu) -> Result<Probes> {
        Ok(Probes {
            fma_gflops: probe::fma_peak(gpu)?,
            bandwidth_gbs: probe::bandwidth(gpu)?,
        })
    }

    /// The larger relative spread, (max − min) / min, of either probe over `readings`.
    fn drift(readings: &[Probes]) -> f64 {
        let spread = |(lo, hi): (f64, f64)| {
            if hi > 0.0 {
                (hi - lo) / lo.max(1e-9)
            } else {
                0.0
            }
        };
        let fma = low_high(readings.iter().map(|p| p.fma_gflops));
        let bandwidth = low_high(readings.iter().map(|p| p.bandwidth_gbs));
        spread(fma).max(spread(bandwidth))
    }
}

/// The lowest and highest of `values` (∞ and 0 when there are none).
fn low_high(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Median, min and max of a sample.
fn spread(v: Vec<f64>) -> (f64, f64, f64) {
    let (low, high) = low_high(v.iter().copied());
    (median(v), low, high)
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else if args.csv {
        let mut w = String::from("adapter,backend,driver,precision,kernels,version,size,level,stage,median_ms,min_ms,max_ms,gflops,peak_fraction,peak_memory_bytes,machine_drift\n");
        for r in &records {
            w += &format!(
                "\"{}\",{},\"{}\",{},{},{},{},{},{},{:.4},{:.4},{:.4},{:.2},{:.4},{},{:.4}\n",
                r.adapter,
                r.backend,
                r.driver,
                r.precision,
                r.kernels,
                r.version,
                r.size,
                r.level,
                r.stage,
                r.median_ms,
                r.min_ms,
                r.max_ms,
                r.gflops,
                r.peak_fraction,
                r.peak_memory_bytes,
                r.machine_drift
            );
        }
        print!("{w}");
    } else {
        println!(
            "{:<28} {:>5} {:>5} {:<14} {:>10} {:>10} {:>10} {:>9} {:>7} {:>10}",
            "adapter",
            "size",
            "level",
            "stage",
            "median ms",
            "min ms",
            "max ms",
            "GFLOP/s",
            "% peak",
            "peak MiB"
        );
        for r in &records {
            println!(
                "{:<28} {:>5} {:>5} {:<14} {:>10.2} {:>10.2} {:>10.2} {:>9.1} {:>6.1}% {:>10.1}",
                r.adapter.chars().take(28).collect::<String>(),
                r.size,
                r.level,
                r.stage,
                r.median_ms,
                r.min_ms,
                r.max_ms,
                r.gflops,
                100.0 * r.peak_fraction,
                r.peak_memory_bytes as f64 / 1048576.0
            );
        }
    }
    Ok(())
}

/// Milliseconds per call of `f`, averaged over as many calls as fill
/// [`SHORT_STAGE_BUDGET`] (at least one): the range coder takes milliseconds or less, where
/// one timing would be mostly clock and scheduling jitter.
fn repeated_ms<E: std::error::Error + Send + Sync + 'static>(
    mut f: impl FnMut() -> std::result::Result<(), E>,
) -> Result<f64> {
    let start = Instant::now();
    let mut calls = 0u32;
    while calls == 0 || start.elapsed() < SHORT_STAGE_BUDGET {
        f()?;
        calls += 1;
    }
    Ok(start.elapsed().as_secs_f64() * 1e3 / calls as f64)
}

/// Time over which [`repeated_ms`] repeats a short stage.
const SHORT_STAGE_BUDGET: std::time::Duration = std::time::Duration::from_millis(200);

/// Where a profiled run's GPU time went, kernel by kernel, slowest first (to stderr, so
/// that --json and --csv output stays clean).
fn print_kernels(what: &str, kernels: &BTreeMap<String, StageTime>, peak: f64) {
    let total: f64 = kernels.values().map(|k| k.gpu_ms).sum();
    eprintln!("{what}: GPU time by kernel ({total:.1} ms in all)");
    eprintln!(
        "  {:<36} {:>10} {:>10} {:>6} {:>9} {:>7}",
        "kernel", "dispatches", "ms", "share", "GFLOP/s", "% peak"
    );
    let mut rows: Vec<_> = kernels.iter().collect();
    rows.sort_by(|a, b| b.1.gpu_ms.total_cmp(&a.1.gpu_ms));
    for (name, k) in rows {
        let gflops = k.flops as f64 / k.gpu_ms.max(1e-9) / 1e6;
        eprintln!(
            "  {name:<36} {:>10} {:>10.1} {:>5.1}% {gflops:>9.1} {:>6.1}%",
            k.dispatches,
            k.gpu_ms,
            100.0 * k.gpu_ms / total.max(1e-9),
            100.0 * gflops / peak
        );
    }
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

fn bench_adapter(options: &GpuOptions, args: &BenchArgs, out: Output) -> Result<Vec<Record>> {
    let gpu = Gpu::new(options)?;
    let name = gpu.info.name.clone();
    let precision = Precision::packed_f16(args.f16);
    let t0 = Instant::now();
    let oscar = match &args.model {
        Some(path) => Oscar::load(gpu, path, precision)?,
        None => Oscar::synthetic(gpu, &Architecture::sd21()?, 0, precision)?,
    };
    oscar.info.check_codec()?;
    progress(
        out,
        format!(
            "model opened in {:.1} s ({:.0} MiB of weights, uploaded as the first run asks)",
            t0.elapsed().as_secs_f64(),
            oscar.weights.bytes as f64 / 1048576.0
        ),
    );
    // Probed right before the runs, not at start-up: started just after another large
    // process (the previous bench) ended, a start-up probe read 87 GFLOP/s against the
    // 143 it read after the runs.
    progress(out, format!("{name}: probing FMA peak and bandwidth…"));
    let before = Probes::measure(&oscar.gpu)?;
    let first_peak = before.fma_gflops;
    // Probed again after every timed run: a slow spell between two probes minutes apart
    // went unseen (BENCHMARKS.md, the fourth repeatability pair). Not inside what is timed.
    let mut readings = vec![before];
    progress(
        out,
        format!(
            "{name}: {first_peak:.1} GFLOP/s FMA peak, {:.1} GB/s",
            before.bandwidth_gbs
        ),
    );
    let base =
        |size: usize, level: usize, stage: &str, times: Vec<f64>, flops: u64, memory: u64| {
            let (median_ms, min_ms, max_ms) = spread(times);
            let gflops = flops as f64 / median_ms / 1e6;
            Record {
                adapter: oscar.gpu.info.name.clone(),
                backend: format!("{:?}", oscar.gpu.info.backend).to_lowercase(),
                driver: format!("{} {}", oscar.gpu.info.driver, oscar.gpu.info.driver_info),
                precision: format!("{precision:?}").to_lowercase(),
                kernels: oscar_wgpu::ops::kernel_set(&oscar.gpu),
                version: env!("CARGO_PKG_VERSION"),
                size,
                level,
                stage: stage.to_string(),
                median_ms,
                min_ms,
                max_ms,
                gflops,
                // Set once the probes after the runs are in, below.
                peak_fraction: 0.0,
                peak_memory_bytes: memory,
                machine_drift: 0.0,
            }
        };
    // Runs tile where the user's budget (or the adapter's default) says, as encode and decode do.
    let plain = RunOptions {
        trace: false,
        profile: false,
        tiling: Some(args.tiles.policy(&oscar)?),
    };
    let tag = ModelTag::from_hex(&oscar.info.content_hash)?;
    let mut records = Vec::new();
    // The adapter's first encode and decode also create the pipelines (or read them from
    // the driver's shader cache) and upload the weights: what a user waits for before the
    // first picture. Timed on the first warm-up, kept apart from the timed runs.
    let mut first_run = None;
    for &size in &args.sizes {
        let image = Rng::new(size as u64).vec(3 * size * size, 1.0);
        for &level in &args.levels {
            progress(out, format!("size {size}, level {level}…"));
            let table = oscar.info.freq_table(level)?;
            for _ in 0..args.warmup {
                let t = Instant::now();
                let (tokens, _) = oscar.encode(&image, size, size, level, plain)?;
                oscar.decode(&tokens, plain)?;
                if records.is_empty() && first_run.is_none() {
                    first_run = Some(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            let (mut enc, mut dec, mut range_enc, mut range_dec) = (vec![], vec![], vec![], vec![]);
            let mut stage_times: BTreeMap<String, (Vec<f64>, u64)> = BTreeMap::new();
            let (mut enc_report, mut dec_report) = (Default::default(), Default::default());
            // GPU time per kernel of the last profiled encode and decode, for -v.
            let mut kernel_times: [(&str, BTreeMap<String, StageTime>); 2] = Default::default();
            for _ in 0..args.runs.max(1) {
                // Wall time around whole runs; GPU stage times from separate timestamped runs.
                let t = Instant::now();
                let (tokens, trace) = oscar.encode(&image, size, size, level, plain)?;
                enc.push(t.elapsed().as_secs_f64() * 1e3);
                enc_report = trace.report;
                let header = tokens.header(size as u32, size as u32, tag)?;
                let file = codec::encode(&header, &tokens.indices, &table)?;
                range_enc.push(repeated_ms(|| {
                    codec::encode(&header, &tokens.indices, &table).map(drop)
                })?);
                let parsed = OscarFile::parse(&file, tag)?;
                range_dec.push(repeated_ms(|| {
                    rans_gpu::decode_on_gpu(&oscar.gpu, parsed.stream(), &table, parsed.tokens())
                        .map(drop)
                })?);
                let t = Instant::now();
                let (_, trace) = oscar.decode(&tokens, plain)?;
                dec.push(t.elapsed().as_secs_f64() * 1e3);
                dec_report = trace.report;
                if oscar.gpu.has(wgpu::Features::TIMESTAMP_QUERY) && !args.no_stages {
                    let profiled = RunOptions {
                        profile: true,
                        ..plain
                    };
                    let (_, e) = oscar.encode(&image, size, size, level, profiled)?;
                    let (_, d) = oscar.decode(&tokens, profiled)?;
                    for (stage, s) in e.report.stages.iter().chain(&d.report.stages) {
                        let entry = stage_times.entry(stage.clone()).or_default();
                        entry.0.push(s.gpu_ms);
                        entry.1 = s.flops;
                    }
                    kernel_times = [("encode", e.report.kernels), ("decode", d.report.kernels)];
                }
                readings.push(Probes::measure(&oscar.gpu)?);
            }
            if out.verbose {
                let profiled: Vec<_> = kernel_times.iter().filter(|(_, k)| !k.is_empty()).collect();
                for (run, kernels) in &profiled {
                    print_kernels(
                        &format!("size {size}, level {level}, {run}"),
                        kernels,
                        first_peak,
                    );
                }
                if profiled.is_empty() {
                    progress(
                        out,
                        format!(
                            "size {size}, level {level}: no GPU time by kernel ({})",
                            if args.no_stages {
                                "--no-stages"
                            } else {
                                "the adapter has no timestamp queries"
                            }
                        ),
                    );
                }
            }
            let weights = oscar.weights.bytes;
            let enc_mem = enc_report.peak_bytes + weights;
            let dec_mem = dec_report.peak_bytes + weights;
            if let Some(ms) = first_run.take() {
                records.push(base(
                    size,
                    level,
                    "first_run",
                    vec![ms],
                    0,
                    enc_mem.max(dec_mem),
                ));
            }
            records.push(base(
                size,
                level,
                "encode_total",
                enc,
                enc_report.flops,
                enc_mem,
            ));
            records.push(base(
                size,
                level,
                "decode_total",
                dec,
                dec_report.flops,
                dec_mem,
            ));
            records.push(base(size, level, "range_encode", range_enc, 0, 0));
            records.push(base(size, level, "range_decode", range_dec, 0, 0));
            for (stage, (times, flops)) in stage_times {
                let memory = if stage.contains("encode") || stage == "vq" {
                    enc_mem
                } else {
                    dec_mem
                };
                records.push(base(size, level, &stage, times, flops, memory));
            }
        }
    }
    // The best reading counts: a peak is what the device can do, and a busy moment only
    // ever lowers it.
    let (low, peak) = low_high(readings.iter().map(|r| r.fma_gflops));
    let (bw_low, bw_high) = low_high(readings.iter().map(|r| r.bandwidth_gbs));
    let drift = Probes::drift(&readings);
    progress(
        out,
        format!(
            "{name}: {} probes around the runs: FMA peak {low:.1}–{peak:.1} GFLOP/s ({peak:.1} counts), bandwidth {bw_low:.1}–{bw_high:.1} GB/s",
            readings.len()
        ),
    );
    for r in &mut records {
        r.peak_fraction = r.gflops / peak;
        r.machine_drift = drift;
    }
    warn_if_unsteady(&name, drift, &records);
    Ok(records)
}

/// Says on stderr (even with --quiet: it is about the numbers, not progress) when the
/// probes moved or a stage's runs spread by more than [`STEADY`]: such numbers are not
/// for comparing with another run or another machine.
fn warn_if_unsteady(adapter: &str, drift: f64, records: &[Record]) {
    let spread: Vec<String> = records
        .iter()
        .filter(|r| r.max_ms - r.min_ms > STEADY * r.median_ms)
        .map(|r| {
            format!(
                "{}@{} {:.0} %",
                r.stage,
                r.size,
                100.0 * (r.max_ms - r.min_ms) / r.median_ms
            )
        })
        .collect();
    if drift > STEADY {
        eprintln!("warning: {adapter}: the adapter's own probes moved by {:.1} % during the runs: the machine was not steady, run again on an idle one before comparing", 100.0 * drift);
    }
    if !spread.is_empty() {
        eprintln!(
            "warning: {adapter}: runs spread by more than {:.0} % of their median in: {}",
            100.0 * STEADY,
            spread.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Probes;

    #[test]
    fn drift_is_the_larger_relative_spread_of_all_readings() {
        let at = |fma_gflops, bandwidth_gbs| Probes {
            fma_gflops,
            bandwidth_gbs,
        };
        assert_eq!(Probes::drift(&[at(100.0, 5.0), at(100.0, 5.0)]), 0.0);
        assert!((Probes::drift(&[at(100.0, 5.0), at(110.0, 5.0)]) - 0.1).abs() < 1e-12);
        // A drop counts like a rise of the same ratio, and bandwidth like the FMA peak.
        assert!((Probes::drift(&[at(110.0, 5.0), at(100.0, 5.0)]) - 0.1).abs() < 1e-12);
        assert!((Probes::drift(&[at(100.0, 4.0), at(101.0, 5.0)]) - 0.25).abs() < 1e-12);
        // A dip between two equal readings counts: the slow spell fell inside the runs.
        assert!(
            (Probes::drift(&[at(100.0, 5.0), at(80.0, 5.0), at(100.0, 5.0)]) - 0.25).abs() < 1e-12
        );
    }
}
