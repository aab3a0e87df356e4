//! The model bench's runs on one adapter: encode and decode timed per stage, with the
//! adapter's FMA peak and bandwidth probed around them, and their records printed.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Result};
use oscar_wgpu::bench::{median, probe};
use oscar_wgpu::codec::{self, rans_gpu, ModelTag, OscarFile};
use oscar_wgpu::gpu::{Gpu, GpuOptions};
use oscar_wgpu::graph::{RunReport, StageTime};
use oscar_wgpu::model::synthetic::Architecture;
use oscar_wgpu::model::{Oscar, RunOptions};
use oscar_wgpu::rng::Rng;
use oscar_wgpu::weights::Precision;

use super::{progress, AdapterLabel, BenchArgs};
use crate::cli::Output;

/// One line of the results: (adapter, size, level, stage).
#[derive(serde::Serialize)]
pub(super) struct Record {
    #[serde(flatten)]
    gpu: AdapterLabel,
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

pub(super) fn bench_adapter(
    options: &GpuOptions,
    args: &BenchArgs,
    out: Output,
) -> Result<Vec<Record>> {
    let gpu = Gpu::new(options)?;
    let name = gpu.info.name.clone();
    let precision = Precision::packed_f16(args.f16);
    let t0 = Instant::now();
    let oscar = match &args.model {
        Some(path) => Oscar::load(gpu, path, precision)?,
        None => Oscar::synthetic(gpu, &Architecture::sd21()?, 0, precision)?,
    };
    oscar.info.check_codec()?;
    if let Some(&level) = args.levels.iter().find(|&&l| oscar.info.level(l).is_err()) {
        bail!(
            "--levels {level}: this model has levels 0..={}",
            oscar.info.levels.len() - 1
        );
    }
    // Runs tile where the user's budget (or the adapter's default) says, as encode and
    // decode do; a bad --tile is refused here, before the probes.
    let policy = args.tiles.policy(&oscar)?;
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
    let bench = LevelBench {
        oscar: &oscar,
        args,
        plain: RunOptions {
            tiling: Some(policy),
            ..RunOptions::default()
        },
        tag: ModelTag::from_hex(&oscar.info.content_hash)?,
    };
    let labels = Labels::of(&oscar, precision);
    let mut records = Vec::new();
    for &size in &args.sizes {
        for &level in &args.levels {
            progress(out, format!("size {size}, level {level}…"));
            let timed = bench.time(size, level, records.is_empty(), &mut readings)?;
            if out.verbose {
                timed.print_kernels(out, args, (size, level), first_peak);
            }
            records.extend(timed.records(&labels, (size, level), oscar.weights.bytes));
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

/// What every record of one adapter's bench says about the adapter and the model.
struct Labels {
    gpu: AdapterLabel,
    precision: String,
    kernels: &'static str,
}

impl Labels {
    fn of(oscar: &Oscar, precision: Precision) -> Labels {
        Labels {
            gpu: AdapterLabel::of(&oscar.gpu),
            precision: format!("{precision:?}").to_lowercase(),
            kernels: oscar_wgpu::ops::kernel_set(&oscar.gpu),
        }
    }

    /// A stage's record; its fraction of the peak and the drift come once the probes
    /// after all runs are in.
    fn record(
        &self,
        (size, level): (usize, usize),
        stage: &str,
        times: Vec<f64>,
        flops: u64,
        memory: u64,
    ) -> Record {
        let (median_ms, min_ms, max_ms) = spread(times);
        Record {
            gpu: self.gpu.clone(),
            precision: self.precision.clone(),
            kernels: self.kernels,
            version: env!("CARGO_PKG_VERSION"),
            size,
            level,
            stage: stage.to_string(),
            median_ms,
            min_ms,
            max_ms,
            gflops: flops as f64 / median_ms / 1e6,
            peak_fraction: 0.0,
            peak_memory_bytes: memory,
            machine_drift: 0.0,
        }
    }
}

/// The timed encode/decode runs of one model at one (size, level).
struct LevelBench<'a> {
    oscar: &'a Oscar,
    args: &'a BenchArgs,
    plain: RunOptions,
    tag: ModelTag,
}

/// What [`LevelBench::time`] measured, in milliseconds.
#[derive(Default)]
struct Timed {
    /// The adapter's first encode and decode, which also create the pipelines (or read
    /// them from the driver's shader cache) and upload the weights: what a user waits
    /// for before the first picture.
    first_run: Option<f64>,
    encode: Vec<f64>,
    decode: Vec<f64>,
    range_encode: Vec<f64>,
    range_decode: Vec<f64>,
    /// GPU time per stage of the timestamped runs, and the stage's FLOPs.
    stages: BTreeMap<String, (Vec<f64>, u64)>,
    encode_report: RunReport,
    decode_report: RunReport,
    /// GPU time per kernel of the last timestamped encode and decode, for -v.
    kernels: [(&'static str, BTreeMap<String, StageTime>); 2],
}

impl LevelBench<'_> {
    /// The warm-up (the first one timed as `first_run` where `first` says so), then the
    /// timed runs, each followed by a timestamped pair and a reading of the probes.
    fn time(
        &self,
        size: usize,
        level: usize,
        first: bool,
        readings: &mut Vec<Probes>,
    ) -> Result<Timed> {
        let (oscar, plain, tag) = (self.oscar, self.plain, self.tag);
        let image = Rng::new(size as u64).vec(3 * size * size, 1.0);
        let table = oscar.info.freq_table(level)?;
        let mut timed = Timed::default();
        for _ in 0..self.args.warmup {
            let t = Instant::now();
            let (tokens, _) = oscar.encode(&image, size, size, level, plain)?;
            oscar.decode(&tokens, plain)?;
            if first && timed.first_run.is_none() {
                timed.first_run = Some(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        for _ in 0..self.args.runs {
            // Wall time around whole runs; GPU stage times from separate timestamped runs.
            let t = Instant::now();
            let (tokens, trace) = oscar.encode(&image, size, size, level, plain)?;
            timed.encode.push(t.elapsed().as_secs_f64() * 1e3);
            timed.encode_report = trace.report;
            let header = tokens.header(size as u32, size as u32, tag)?;
            let file = codec::encode(&header, &tokens.indices, &table)?;
            timed.range_encode.push(repeated_ms(|| {
                codec::encode(&header, &tokens.indices, &table).map(drop)
            })?);
            let parsed = OscarFile::parse(&file, tag)?;
            timed.range_decode.push(repeated_ms(|| {
                rans_gpu::decode_on_gpu(&oscar.gpu, parsed.stream(), &table, parsed.tokens())
                    .map(drop)
            })?);
            let t = Instant::now();
            let (_, trace) = oscar.decode(&tokens, plain)?;
            timed.decode.push(t.elapsed().as_secs_f64() * 1e3);
            timed.decode_report = trace.report;
            if oscar.gpu.has(wgpu::Features::TIMESTAMP_QUERY) && !self.args.no_stages {
                let profiled = RunOptions {
                    profile: true,
                    ..plain
                };
                let (_, e) = oscar.encode(&image, size, size, level, profiled)?;
                let (_, d) = oscar.decode(&tokens, profiled)?;
                for (stage, s) in e.report.stages.iter().chain(&d.report.stages) {
                    let entry = timed.stages.entry(stage.clone()).or_default();
                    entry.0.push(s.gpu_ms);
                    entry.1 = s.flops;
                }
                timed.kernels = [("encode", e.report.kernels), ("decode", d.report.kernels)];
            }
            readings.push(Probes::measure(&oscar.gpu)?);
        }
        Ok(timed)
    }
}

impl Timed {
    /// -v: GPU time by kernel of the last timestamped runs, or why there is none.
    fn print_kernels(
        &self,
        out: Output,
        args: &BenchArgs,
        (size, level): (usize, usize),
        peak: f64,
    ) {
        let profiled: Vec<_> = self.kernels.iter().filter(|(_, k)| !k.is_empty()).collect();
        for (run, kernels) in &profiled {
            print_kernels(&format!("size {size}, level {level}, {run}"), kernels, peak);
        }
        if profiled.is_empty() {
            let why = if args.no_stages {
                "--no-stages"
            } else {
                "the adapter has no timestamp queries"
            };
            progress(
                out,
                format!("size {size}, level {level}: no GPU time by kernel ({why})"),
            );
        }
    }

    /// The records of these runs; `weights` (bytes) count into each run's memory.
    fn records(self, labels: &Labels, at: (usize, usize), weights: u64) -> Vec<Record> {
        let enc_mem = self.encode_report.peak_bytes + weights;
        let dec_mem = self.decode_report.peak_bytes + weights;
        let mut records = Vec::new();
        if let Some(ms) = self.first_run {
            records.push(labels.record(at, "first_run", vec![ms], 0, enc_mem.max(dec_mem)));
        }
        let totals = [
            (
                "encode_total",
                self.encode,
                self.encode_report.flops,
                enc_mem,
            ),
            (
                "decode_total",
                self.decode,
                self.decode_report.flops,
                dec_mem,
            ),
            ("range_encode", self.range_encode, 0, 0),
            ("range_decode", self.range_decode, 0, 0),
        ];
        for (stage, times, flops, memory) in totals {
            records.push(labels.record(at, stage, times, flops, memory));
        }
        for (stage, (times, flops)) in self.stages {
            let memory = if stage.contains("encode") || stage == "vq" {
                enc_mem
            } else {
                dec_mem
            };
            records.push(labels.record(at, &stage, times, flops, memory));
        }
        records
    }
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

/// The records as JSON, CSV or a table, on stdout.
pub(super) fn print_records(records: &[Record], args: &BenchArgs) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(records)?);
    } else if args.csv {
        let mut w = String::from("adapter,backend,driver,precision,kernels,version,size,level,stage,median_ms,min_ms,max_ms,gflops,peak_fraction,peak_memory_bytes,machine_drift\n");
        for r in records {
            w += &format!(
                "{},{},{},{},{},{},{},{:.4},{:.4},{:.4},{:.2},{:.4},{},{:.4}\n",
                r.gpu.csv(),
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
        for r in records {
            println!(
                "{:<28} {:>5} {:>5} {:<14} {:>10.2} {:>10.2} {:>10.2} {:>9.1} {:>6.1}% {:>10.1}",
                r.gpu.adapter.chars().take(28).collect::<String>(),
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
