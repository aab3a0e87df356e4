//! `oscar-wgpu encode`: images → .oscar files, one loaded model for all of them.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use oscar_wgpu::codec::{self, ModelTag};
use oscar_wgpu::gpu::GpuOptions;
use oscar_wgpu::image_io::{
    extension, read_picture, to_planar, Colours, OutputFormat, Padding, Picture, PICTURE_EXTENSIONS,
};
use oscar_wgpu::model::{Oscar, RunOptions};

use super::{load_model, Jobs, ModelArgs, Output, TileArgs};

/// The level `oscar-wgpu encode` uses when given neither --level nor --bpp.
pub const DEFAULT_LEVEL: usize = 5;

pub enum Target {
    Level(usize),
    /// The highest level whose nominal rate is at most this.
    Bpp(f64),
}

fn choose_level(oscar: &Oscar, target: &Target) -> Result<usize> {
    let levels = &oscar.info.levels;
    match *target {
        Target::Level(l) if l < levels.len() => Ok(l),
        Target::Level(l) => bail!(
            "level {l} does not exist: this model has levels 0..={}",
            levels.len() - 1
        ),
        Target::Bpp(bpp) => levels
            .iter()
            .filter(|l| l.bpp_nominal <= bpp)
            .max_by(|a, b| a.bpp_nominal.total_cmp(&b.bpp_nominal))
            .map(|l| l.level)
            .with_context(|| {
                format!(
                    "no level fits {bpp} bpp; the lowest is {} bpp",
                    levels[0].bpp_nominal
                )
            }),
    }
}

pub fn run(
    gpu: &GpuOptions,
    model: &ModelArgs,
    tiles: &TileArgs,
    jobs: &Jobs,
    target: Target,
    padding: Padding,
    out: Output,
) -> Result<()> {
    let pairs = jobs.pairs(&PICTURE_EXTENSIONS, "oscar")?;
    if let Some((coded, _)) = pairs
        .iter()
        .find(|(i, _)| extension(i).as_deref() == Some("oscar"))
    {
        bail!("{} is coded already: decode it", coded.display());
    }
    // A .oscar stream under a picture's name is a mix-up (`encode` for `decode`), and
    // with --force it would replace a picture.
    if let Some((_, output)) = pairs
        .iter()
        .find(|(_, o)| OutputFormat::for_path(o).is_ok())
    {
        bail!(
            "{} is a picture's name: encode writes .oscar files (decode writes pictures)",
            output.display()
        );
    }
    let start = Instant::now();
    let oscar = load_model(gpu, model)?;
    let policy = tiles.policy(&oscar)?;
    out.detail(format!(
        "model loaded in {:.2} s on {} ({:?})",
        start.elapsed().as_secs_f64(),
        oscar.gpu.info.name,
        oscar.gpu.info.backend
    ));
    let level = choose_level(&oscar, &target)?;
    let tag = ModelTag::from_hex(&oscar.info.content_hash)?;
    let table = oscar.info.freq_table(level)?;
    let cell = codec::PICTURE_MULTIPLE as usize;
    let bar = out.progress(pairs.len());
    for (input, output) in &pairs {
        bar.set_message(input.display().to_string());
        let t0 = Instant::now();
        let Picture {
            rgb,
            had_alpha,
            animated,
            colours,
        } = read_picture(input)?;
        if animated && !out.quiet {
            eprintln!(
                "warning: {}: it is an animation; only its first picture is coded",
                input.display()
            );
        }
        if had_alpha && !out.quiet {
            eprintln!(
                "warning: {}: its alpha channel is dropped (.oscar codes RGB); transparent \
                 areas keep the colours they store",
                input.display()
            );
        }
        match colours {
            Colours::Srgb => {}
            Colours::Converted(from) => out.detail(format!("  colours: {from} → sRGB")),
            Colours::Ignored(why) if !out.quiet => eprintln!(
                "warning: {}: {why}; its pixels are coded as sRGB",
                input.display()
            ),
            Colours::Ignored(_) => {}
        }
        let (width, height) = (rgb.width(), rgb.height());
        let planar = to_planar(&rgb, cell, padding);
        if out.verbose {
            out.detail(format!(
                "  {}",
                oscar
                    .encode_schedule(level, planar.height, planar.width, &policy)?
                    .describe()
            ));
        }
        let opts = RunOptions {
            profile: out.verbose,
            tiling: Some(policy),
            ..RunOptions::default()
        };
        let (tokens, trace) = oscar
            .encode(&planar.data, planar.height, planar.width, level, opts)
            .with_context(|| format!("{}", input.display()))?;
        let header = tokens.header(width, height, tag)?;
        let bytes = codec::encode(&header, &tokens.indices, &table)?;
        jobs.write(output, &bytes)?;
        bar.inc(1);
        let nominal = oscar.info.levels[level].bpp_nominal;
        out.say(format!(
            "{} → {}: level {level}, {} tokens, {} bytes, {:.4} bpp (nominal {nominal:.4}), {:.2} s",
            input.display(),
            output.display(),
            tokens.indices.len(),
            bytes.len(),
            codec::bpp(bytes.len(), width, height),
            t0.elapsed().as_secs_f64()
        ));
        out.stages(&trace.report);
    }
    bar.finish_and_clear();
    Ok(())
}
