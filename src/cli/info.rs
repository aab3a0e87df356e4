//! `oscar-wgpu adapters` and `oscar-wgpu info`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oscar_wgpu::codec::{self, read_header, ModelTag, OscarFile, HEADER_LEN};
use oscar_wgpu::gpu::{list_adapters, GpuOptions};
use oscar_wgpu::image_io::extension;
use oscar_wgpu::model::ModelInfo;
use oscar_wgpu::weights::ModelFile;

use super::{model_path, read_oscar};

pub fn adapters(gpu: &GpuOptions, json: bool) -> Result<()> {
    let list = list_adapters(gpu)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for a in &list {
        println!(
            "[{}] {} ({}, {})",
            a.index, a.name, a.backend, a.device_type
        );
        println!("    driver: {} {}", a.driver, a.driver_info);
        println!(
            "    max storage binding {} MiB, max buffer {} MiB, {} workgroups per dimension, {} KiB workgroup memory",
            a.max_storage_binding >> 20,
            a.max_buffer >> 20,
            a.max_workgroups_per_dim,
            a.max_workgroup_storage >> 10
        );
        println!(
            "    shader-f16: {}, subgroups: {}, int64: {}, timestamps: {}",
            a.shader_f16, a.subgroups, a.shader_int64, a.timestamps
        );
    }
    Ok(())
}

/// Describes a .oscar file (by its extension or magic byte) or a model file, and with
/// `verify` checks that it is intact.
pub fn info(path: &Path, model: &Option<PathBuf>, json: bool, verify: bool) -> Result<()> {
    let cannot = || format!("cannot read {}", path.display());
    let mut file = std::fs::File::open(path).with_context(cannot)?;
    let mut head = Vec::with_capacity(HEADER_LEN);
    (&mut file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .with_context(cannot)?;
    anyhow::ensure!(!head.is_empty(), "{} is empty", path.display());
    // A damaged first byte is a damaged .oscar file, not a model file.
    if head[0] == codec::container::MAGIC || extension(path).as_deref() == Some("oscar") {
        // The model is optional here (the nominal rate), unless the tokens are checked.
        let model = if verify {
            Some(model_path(model)?)
        } else {
            model.clone()
        };
        let bytes = read_oscar(file, head, path)?;
        oscar_info(path, &bytes, model.as_deref(), json, verify)
    } else if image::guess_format(&head).is_ok() {
        bail!(
            "{} is a picture: info describes .oscar files and model files",
            path.display()
        );
    } else {
        model_info(path, json, verify)
    }
}

fn oscar_info(
    file: &Path,
    bytes: &[u8],
    model: Option<&Path>,
    json: bool,
    verify: bool,
) -> Result<()> {
    let (header, coding) = read_header(bytes).with_context(|| format!("{}", file.display()))?;
    let (rows, cols) = header.token_grid()?;
    let bpp = codec::bpp(bytes.len(), header.width, header.height);
    let info = match model {
        Some(m) => ModelInfo::from_file(&ModelFile::open(m)?)?,
        None => oscar_wgpu::model::synthetic::Architecture::sd21()?.info,
    };
    let nominal = info.level(header.level as usize)?.bpp_nominal;
    if verify {
        let tag = ModelTag::from_hex(&info.content_hash)?;
        let table = info.freq_table(usize::from(header.level))?;
        OscarFile::parse(bytes, tag)
            .and_then(|f| f.decode(&table))
            .with_context(|| format!("{}", file.display()))?;
    }
    if json {
        let record = serde_json::json!({
            "file": file.display().to_string(), "bytes": bytes.len(), "level": header.level,
            "width": header.width, "height": header.height, "tokens": [rows, cols],
            "coding": format!("{coding:?}"), "model_tag": header.model.to_string(), "a_z": header.a_z,
            "bpp": bpp, "bpp_nominal": nominal, "verified": verify,
        });
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        println!("{}: .oscar, {} bytes", file.display(), bytes.len());
        println!(
            "  image {}×{}, level {}, {rows}×{cols} tokens, coding {coding:?}",
            header.width, header.height, header.level
        );
        println!("  model {}…, A_z {:?}", header.model, header.a_z);
        println!(
            "  {bpp:.4} bpp (every byte counted; level's nominal {nominal:.4} bpp at 512×512)"
        );
        if verify {
            println!("  intact: every token decoded and matched the file's CRC");
        }
    }
    Ok(())
}

fn model_info(file: &Path, json: bool, verify: bool) -> Result<()> {
    let model = ModelFile::open(file)?;
    let info = ModelInfo::from_file(&model)?;
    if verify {
        let actual = model.content_hash()?;
        anyhow::ensure!(
            actual == info.content_hash,
            "{} is damaged: its weights hash to {actual}, not to the {} it was converted with",
            file.display(),
            info.content_hash
        );
    }
    let params: usize = model
        .names()
        .iter()
        .filter_map(|n| model.shape(n))
        .map(|s| s.iter().product::<usize>())
        .sum();
    if json {
        let record = serde_json::json!({
            "file": file.display().to_string(), "content_hash": info.content_hash, "dtype": model.meta("dtype"),
            "parameters": params, "levels": info.levels, "unet": info.unet, "vae": info.vae, "scheduler": info.scheduler,
            "verified": verify,
        });
        println!("{}", serde_json::to_string_pretty(&record)?);
        return Ok(());
    }
    println!(
        "{}: oscar-wgpu model, {} parameters ({}), hash {}",
        file.display(),
        params,
        model.meta("dtype").unwrap_or("?"),
        info.content_hash
    );
    println!(
        "  UNet blocks {:?}, heads {:?}, cross-attention {}",
        info.unet.block_out_channels, info.unet.heads, info.unet.cross_attention_dim
    );
    println!(
        "  VAE blocks {:?}, latent {} channels, scaling {}",
        info.vae.block_out_channels, info.vae.latent_channels, info.vae.scaling_factor
    );
    println!("  level  stride  codebook  timestep  nominal bpp  rANS table");
    for l in &info.levels {
        let table = if info.freqs[l.level].is_some() {
            "static"
        } else {
            "uniform"
        };
        println!(
            "  {:>5}  {:>6}  {:>8}  {:>8}  {:>11.4}  {table}",
            l.level, l.stride, l.codebook_size, l.timestep, l.bpp_nominal
        );
    }
    if verify {
        println!("  intact: the weights match the hash they were converted with");
    }
    Ok(())
}
