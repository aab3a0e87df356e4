//! `bench --plan-only`: the GPU memory encodes and decodes of the full-size model would
//! take on each adapter, untiled and tiled within the budget, without running them.

use anyhow::Result;
use oscar_wgpu::gpu::{Gpu, GpuOptions};
use oscar_wgpu::model::synthetic::Architecture;
use oscar_wgpu::model::{DecodeSchedule, EncodeSchedule, Oscar, TilePolicy};
use oscar_wgpu::weights::Precision;
use oscar_wgpu::Error;

use super::{AdapterLabel, BenchArgs};

/// The plans of one run (an encode or a decode) of one size and level on one adapter.
#[derive(serde::Serialize)]
struct PlanRecord {
    #[serde(flatten)]
    gpu: AdapterLabel,
    precision: String,
    size: usize,
    level: usize,
    run: &'static str,
    /// Activation memory of the run as one graph; None where one of its buffers exceeds
    /// what the device allows.
    untiled_bytes: Option<u64>,
    /// The most it holds at once in stages and tiles within `budget_bytes`; None where
    /// even the smallest tiles do not fit.
    tiled_bytes: Option<u64>,
    budget_bytes: u64,
    /// The stages and tiles, or why none fit.
    tiles: String,
}

pub(super) fn run(adapters: &[GpuOptions], args: &BenchArgs) -> Result<()> {
    let arch = Architecture::sd21()?;
    let precision = Precision::packed_f16(args.f16);
    let mut records = Vec::new();
    for options in adapters {
        let oscar = Oscar::planning_only(Gpu::new(options)?, &arch, precision);
        let plans = plan(&oscar, precision, args)?;
        if !args.json && !args.csv {
            print_table(&oscar, &plans);
        }
        records.extend(plans);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else if args.csv {
        print!("{}", csv(&records));
    }
    Ok(())
}

fn plan(oscar: &Oscar, precision: Precision, args: &BenchArgs) -> Result<Vec<PlanRecord>> {
    let policy = args.tiles.policy(oscar)?;
    // Always staged: naming a VAE tile (the user's, else one as large as the picture)
    // makes the tiled column the staged plan even where the picture fits whole.
    let forced = TilePolicy {
        budget: policy.budget,
        vae_tile: Some(policy.vae_tile.unwrap_or(usize::MAX)),
        unet_tile: None,
    };
    let unlimited = TilePolicy {
        budget: u64::MAX,
        vae_tile: None,
        unet_tile: None,
    };
    let record = |size, level, run, untiled, tiled, tiles| PlanRecord {
        gpu: AdapterLabel::of(&oscar.gpu),
        precision: format!("{precision:?}").to_lowercase(),
        size,
        level,
        run,
        untiled_bytes: untiled,
        tiled_bytes: tiled,
        budget_bytes: policy.budget,
        tiles,
    };
    let mut records = Vec::new();
    for &size in &args.sizes {
        for &level in &args.levels {
            let cell = oscar.info.pixels_per_token(level)?;
            let grid = (size / cell, size / cell);
            let untiled = refused_as_none(oscar.plan_decode(level, grid).map(|p| p.peak_bytes))?;
            let (tiled, tiles) = match oscar.decode_schedule(level, grid, &forced) {
                Ok(schedule) => {
                    let tiles = match &schedule {
                        DecodeSchedule::Staged { unet, vae, .. } => {
                            format!("UNet {}, VAE {}", unet.describe(), vae.describe())
                        }
                        DecodeSchedule::Whole { .. } => "whole".into(),
                    };
                    (Some(schedule.peak_bytes()), tiles)
                }
                Err(e @ Error::OverBudget { .. }) => (None, e.to_string()),
                Err(e) => return Err(e.into()),
            };
            records.push(record(size, level, "decode", untiled, tiled, tiles));

            let untiled = oscar.encode_schedule(level, size, size, &unlimited);
            let untiled = refused_as_none(untiled.map(|s| s.peak_bytes()))?;
            let (tiled, tiles) = match oscar.encode_schedule(level, size, size, &forced) {
                Ok(EncodeSchedule::Staged { vae, hyper_bytes }) => (
                    Some(vae.peak_bytes.max(hyper_bytes)),
                    format!("VAE {}", vae.describe()),
                ),
                Ok(EncodeSchedule::Whole { peak_bytes }) => (Some(peak_bytes), "whole".into()),
                Err(e @ Error::OverBudget { .. }) => (None, e.to_string()),
                Err(e) => return Err(e.into()),
            };
            records.push(record(size, level, "encode", untiled, tiled, tiles));
        }
    }
    Ok(records)
}

/// A plan's bytes, or None where the device refuses one of its buffers.
fn refused_as_none(planned: oscar_wgpu::Result<u64>) -> Result<Option<u64>> {
    match planned {
        Ok(bytes) => Ok(Some(bytes)),
        Err(Error::TooLarge { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1048576.0)
}

fn print_table(oscar: &Oscar, records: &[PlanRecord]) {
    let Some(first) = records.first() else {
        return;
    };
    println!(
        "plans of the full-size model on {} ({}), {} weights: {} MiB; activations in MiB, tiled within {} MiB",
        first.gpu.adapter,
        first.gpu.backend,
        first.precision,
        mib(oscar.weights.bytes),
        mib(first.budget_bytes)
    );
    println!(
        "{:>6} {:>5} {:<7} {:>9} {:>9}  {:<52}",
        "size", "level", "", "untiled", "tiled", "tiles (latent pixels)"
    );
    for r in records {
        println!(
            "{:>6} {:>5} {:<7} {:>9} {:>9}  {}",
            r.size,
            r.level,
            r.run,
            r.untiled_bytes.map_or("refused".into(), mib),
            r.tiled_bytes.map_or("over".into(), mib),
            r.tiles
        );
    }
}

fn csv(records: &[PlanRecord]) -> String {
    let mut w = String::from(
        "adapter,backend,driver,precision,size,level,run,untiled_bytes,tiled_bytes,budget_bytes,tiles\n",
    );
    let bytes = |b: Option<u64>| b.map_or(String::new(), |b| b.to_string());
    for r in records {
        w += &format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.gpu.csv(),
            r.precision,
            r.size,
            r.level,
            r.run,
            bytes(r.untiled_bytes),
            bytes(r.tiled_bytes),
            r.budget_bytes,
            super::csv_text(&r.tiles)
        );
    }
    w
}
