//! `oscar-wgpu decode`: .oscar files → PNG, one loaded model for all of them.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use oscar_wgpu::codec::{ModelTag, OscarFile};
use oscar_wgpu::gpu::GpuOptions;
use oscar_wgpu::image_io::{to_rgb8, OutputFormat, Planar};
use oscar_wgpu::model::RunOptions;

use super::{load_model, read_oscar, Jobs, ModelArgs, Output, TileArgs};

pub fn run(
    gpu: &GpuOptions,
    model: &ModelArgs,
    tiles: &TileArgs,
    jobs: &Jobs,
    out: Output,
) -> Result<()> {
    let pairs = jobs.pairs(&["oscar"], "png")?;
    let formats = pairs
        .iter()
        .map(|(_, output)| OutputFormat::for_path(output))
        .collect::<Result<Vec<_>, _>>()?;
    let oscar = load_model(gpu, model)?;
    let policy = tiles.policy(&oscar)?;
    let tag = ModelTag::from_hex(&oscar.info.content_hash)?;
    let bar = out.progress(pairs.len());
    for ((input, output), format) in pairs.iter().zip(formats) {
        bar.set_message(input.display().to_string());
        let t0 = Instant::now();
        let opened = std::fs::File::open(input)
            .with_context(|| format!("cannot read {}", input.display()))?;
        let bytes = read_oscar(opened, Vec::new(), input)?;
        let file = OscarFile::parse(&bytes, tag).with_context(|| format!("{}", input.display()))?;
        let header = *file.header();
        let level = usize::from(header.level);
        let table = oscar.info.freq_table(level)?;
        let cell = oscar.info.pixels_per_token(level)?;
        let (rows, cols) = file.grid();
        let (height, width) = (rows * cell, cols * cell);
        if height < header.height as usize || width < header.width as usize {
            bail!(
                "{}: the model's level {level} token grid does not cover a {}×{} image",
                input.display(),
                header.width,
                header.height
            );
        }
        if out.verbose {
            out.detail(format!(
                "  {}",
                oscar
                    .decode_schedule(level, (rows, cols), &policy)?
                    .describe()
            ));
        }
        let opts = RunOptions {
            profile: out.verbose,
            tiling: Some(policy),
            ..RunOptions::default()
        };
        let (image, trace) = oscar
            .decode_stream(
                level,
                (rows, cols),
                &header.a_z,
                file.stream(),
                &table,
                opts,
            )
            .with_context(|| format!("{}", input.display()))?;
        let rgb = to_rgb8(
            &Planar {
                width,
                height,
                data: image,
            },
            header.width as usize,
            header.height as usize,
        );
        let picture = format
            .encode(&rgb)
            .with_context(|| format!("cannot encode {}", output.display()))?;
        jobs.write(output, &picture)?;
        bar.inc(1);
        out.say(format!(
            "{} → {}: {}×{}, level {level}, {:.2} s",
            input.display(),
            output.display(),
            header.width,
            header.height,
            t0.elapsed().as_secs_f64()
        ));
        out.stages(&trace.report);
    }
    bar.finish_and_clear();
    Ok(())
}
