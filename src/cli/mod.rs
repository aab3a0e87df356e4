//! The subcommands, and what they share: where the model is, which files to work on,
//! and how much to say.

pub mod bench;
pub mod decode;
pub mod encode;
pub mod info;
mod jobs;

pub use jobs::Jobs;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oscar_wgpu::codec;
use oscar_wgpu::gpu::{Gpu, GpuOptions};
use oscar_wgpu::model::{Oscar, TilePolicy};
use oscar_wgpu::weights::Precision;

#[derive(Clone, Copy)]
pub struct Output {
    pub verbose: bool,
    pub quiet: bool,
}

impl Output {
    pub fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            println!("{}", line.as_ref());
        }
    }

    pub fn detail(&self, line: impl AsRef<str>) {
        if self.verbose {
            println!("{}", line.as_ref());
        }
    }

    /// With --verbose: a run's GPU time and FLOP rate by stage, and its GPU memory.
    pub fn stages(&self, report: &oscar_wgpu::graph::RunReport) {
        for (stage, t) in &report.stages {
            self.detail(format!(
                "  {stage:<14} {:>9.2} ms GPU  {:>8.1} GFLOP/s",
                t.gpu_ms,
                t.flops as f64 / t.gpu_ms.max(1e-9) / 1e6
            ));
        }
        self.detail(format!(
            "  GPU memory {:.1} MiB besides the weights (planned by liveness)",
            report.peak_bytes as f64 / 1048576.0
        ));
    }

    /// A progress bar for several files; hidden for one file or when quiet.
    pub fn progress(&self, len: usize) -> indicatif::ProgressBar {
        if self.quiet || len < 2 {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
                .expect("valid template"),
        );
        bar
    }
}

const HOW_TO_GET_A_MODEL: &str = "no model given: pass --model FILE, set $OSCAR_MODEL, or put {\"model\": \"/path/to/oscar.safetensors\"} \
in ~/.config/oscar-wgpu/config.json. To make one, download Stable Diffusion 2.1 (diffusers folder) and an OSCAR checkpoint (oscar.pkl), then run \
`python3 tools/convert_oscar.py --sd <sd21 folder> --oscar oscar.pkl -o oscar.safetensors` (see tools/README.md)";

/// The rest of a .oscar file after its first bytes `start`, read from `file` (once: it
/// may be a pipe) and refused past the largest valid file (`/dev/zero` is not one).
pub fn read_oscar(file: impl std::io::Read, mut start: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    let room = (codec::MAX_FILE_LEN + 1).saturating_sub(start.len());
    file.take(room as u64)
        .read_to_end(&mut start)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if start.len() > codec::MAX_FILE_LEN {
        bail!(
            "{} is larger than any .oscar file ({} bytes at most)",
            path.display(),
            codec::MAX_FILE_LEN
        );
    }
    Ok(start)
}

/// The model file: the flag, then $OSCAR_MODEL, then the user's config.
pub fn model_path(flag: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("OSCAR_MODEL").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|c| c.join("oscar-wgpu/config.json"));
    if let Some(config) = config.filter(|c| c.exists()) {
        let text = std::fs::read_to_string(&config)
            .with_context(|| format!("cannot read {}", config.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", config.display()))?;
        match value.get("model") {
            Some(serde_json::Value::String(p)) if !p.is_empty() => return Ok(PathBuf::from(p)),
            Some(other) => bail!(
                "{}: \"model\" is {other}, not the path of a model file",
                config.display()
            ),
            None => {}
        }
    }
    bail!(HOW_TO_GET_A_MODEL)
}

/// Which model to load, and how.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// Model file from tools/convert_oscar.py (default: $OSCAR_MODEL, then the
    /// `model` entry of ~/.config/oscar-wgpu/config.json).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Keep the decode-side weights as packed f16 on the GPU (half the memory).
    #[arg(long)]
    pub f16: bool,
}

pub fn load_model(gpu: &GpuOptions, args: &ModelArgs) -> Result<Oscar> {
    let path = model_path(&args.model)?;
    let device = Gpu::new(gpu)?;
    let precision = Precision::packed_f16(args.f16);
    let oscar = Oscar::load(device, &path, precision)
        .with_context(|| format!("cannot load model {}", path.display()))?;
    oscar.info.check_codec()?;
    Ok(oscar)
}

/// How much GPU memory encode and decode may use; larger pictures run in tiles.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TileArgs {
    /// GPU memory for activations, beyond the weights (e.g. 1.5G, 800M, bytes). Pictures
    /// that need more are processed in overlapping tiles. Default: the adapter's largest
    /// buffer, at most 4G.
    #[arg(long, value_parser = parse_bytes)]
    pub max_gpu_memory: Option<u64>,
    /// Tile the VAE at most this many image pixels per side (a multiple of 8; rounded
    /// down to a multiple of 32, at least 64), even where the picture would fit untiled.
    #[arg(long)]
    pub tile: Option<usize>,
}

impl TileArgs {
    pub fn policy(&self, oscar: &Oscar) -> Result<TilePolicy> {
        let down = oscar.info.vae.downscale();
        let vae_tile = match self.tile {
            Some(px) if px == 0 || px % down != 0 => {
                bail!("--tile {px}: tiles are a positive multiple of {down} pixels")
            }
            tile => tile.map(|px| px / down),
        };
        let automatic = TilePolicy::automatic(&oscar.gpu);
        Ok(TilePolicy {
            budget: self.max_gpu_memory.unwrap_or(automatic.budget),
            vae_tile,
            ..automatic
        })
    }
}

/// "1.5G", "800M", "64K" (binary units; a trailing "B" or "iB" is allowed) or bytes.
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let not_a_size = || format!("'{text}' is not a size such as 1.5G, 800M or 65536");
    let t = text
        .trim()
        .trim_end_matches("iB")
        .trim_end_matches(['B', 'b']);
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.trim().parse().map_err(|_| not_a_size())?;
    let scale = match unit.to_ascii_uppercase().as_str() {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(not_a_size()),
    };
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("'{text}': the size must be positive"));
    }
    let bytes = value * scale as f64;
    if bytes < 1.0 {
        return Err(format!("'{text}' is less than a byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("800M"), Ok(800 << 20));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("2gb"), Ok(2 << 30));
        assert_eq!(parse_bytes("123"), Ok(123));
        // "0.5" once passed as a budget of 0 bytes.
        for bad in ["", "0", "0.5", "-1G", "1X", "lots", "G"] {
            assert!(parse_bytes(bad).is_err(), "'{bad}' is not a size");
        }
    }
}
