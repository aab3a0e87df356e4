//! PyTorch GroupNorm (biased variance) with an optional fused SiLU, in three dispatches:
//! `partial` reduces fixed-size slices of each group to a (count, mean, M2) per thread
//! with a two-pass sum (SD activations have means far above their spread, so
//! E\[x²\] − E\[x\]² would cancel in f32), `finalize` merges a group's partials with Chan's
//! formula into its mean and 1/σ, and `apply` normalises (with those statistics or
//! given ones). Groups are contiguous, so tensors past the binding limit are split into
//! windows of whole groups.

use bytemuck::{Pod, Zeroable};

use super::{channel_chunks, is_f16, u32_of};
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    group_len: u32,
    slices: u32,
    groups: u32,
    group_base: u32,
    n: u32,
    hw: u32,
    cpg: u32,
    c_base: u32,
    eps: f32,
    _pad: [u32; 3],
}

const WORKGROUP: u64 = 64;
/// Elements one `partial` workgroup reduces (matches `SLICE` in the shader).
const SLICE: usize = 4096;

/// `x` [c, h, w], `gamma`/`beta` \[c\] → [c, h, w], normalised over `groups` groups of
/// c / groups channels, then SiLU if `silu`.
pub fn group_norm(
    g: &mut Graph,
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    let stats = group_norm_stats(g, x, groups, eps)?;
    group_norm_apply(g, x, stats, gamma, beta, silu)
}

/// The statistics of `x` [c, h, w] in `groups` groups: [groups, 2] of (mean, 1/σ), σ
/// including `eps`. Tiled decoding computes them once and applies them to every tile.
pub fn group_norm_stats(g: &mut Graph, x: Tensor, groups: usize, eps: f32) -> Result<Tensor> {
    let (c, hw) = group_shape(g, x, groups)?;
    let group_len = c / groups * hw;
    let slices = group_len.div_ceil(SLICE).max(1);
    // (count, mean, M2) of every partial thread.
    let partials = g.intermediate(&[groups * slices * WORKGROUP as usize, 3], DType::F32);
    let stats = g.intermediate(&[groups, 2], DType::F32);
    let base = Params {
        slices: u32_of(slices, "group_norm slices")?,
        ..params(c, hw, groups, eps)?
    };
    let group_bytes = 4 * group_len as u64;
    // A group's partials take 3/64 of its bytes, windowed with it (768 bytes per slice
    // keep every window's offset aligned); finalize merges them window by window.
    let partial_bytes = (slices * WORKGROUP as usize * 3 * 4) as u64;
    let sv = g.view(stats)?;
    for win in &channel_chunks(g.gpu, groups, group_bytes)? {
        let xv = g.window(
            x,
            win.start as u64 * group_bytes,
            win.len() as u64 * group_bytes,
        )?;
        let pv = g.window(
            partials,
            win.start as u64 * partial_bytes,
            win.len() as u64 * partial_bytes,
        )?;
        let params = Params {
            groups: win.len() as u32,
            group_base: win.start as u32,
            ..base
        };
        let grid = g.grid((win.len() * slices) as u64)?;
        let entry = if group_len.is_multiple_of(4) {
            "partial4"
        } else {
            "partial"
        };
        g.dispatch(
            KernelKey::new("group_norm", entry),
            bytemuck::bytes_of(&params),
            vec![xv, pv],
            grid,
            3 * (win.len() * group_len) as u64,
        );
        g.dispatch(
            KernelKey::new("group_norm", "finalize"),
            bytemuck::bytes_of(&params),
            vec![pv, sv],
            g.grid(win.len() as u64)?,
            0,
        );
    }
    Ok(stats)
}

/// Normalises `x` [c, h, w] with `stats` [groups, 2] from [`group_norm_stats`] (of `x`
/// or of another tensor), then `gamma`/`beta` \[c\], then SiLU if `silu`.
pub fn group_norm_apply(
    g: &mut Graph,
    x: Tensor,
    stats: Tensor,
    gamma: Tensor,
    beta: Tensor,
    silu: bool,
) -> Result<Tensor> {
    let groups = g.shape(stats).first().copied().unwrap_or(0);
    let (c, hw) = group_shape(g, x, groups)?;
    let affine_ok = g.shape(gamma) == [c]
        && g.shape(beta) == [c]
        && g.dtype(gamma) == g.dtype(beta)
        && g.dtype(gamma) != DType::U32;
    if !affine_ok || g.shape(stats) != [groups, 2] || g.dtype(stats) != DType::F32 {
        return Err(Error::Shape(format!(
            "group_norm: input {:?}, stats {:?}, gamma {:?}, beta {:?} disagree",
            g.shape(x),
            g.shape(stats),
            g.shape(gamma),
            g.shape(beta)
        )));
    }
    let base = params(c, hw, groups, 0.0)?;
    let cpg = c / groups;
    let group_len = cpg * hw;
    let group_bytes = 4 * group_len as u64;
    let y = g.intermediate(g.shape(x).to_vec().as_slice(), DType::F32);
    // A vec4 at a time where a channel's pixels come in fours.
    let vec4 = hw.is_multiple_of(4);
    let key = KernelKey::new("group_norm", if vec4 { "apply4" } else { "apply" })
        .with("W_F16", is_f16(g.dtype(gamma)))
        .with("SILU", silu as u32 as f64);
    let (sv, gv, bv) = (g.view(stats)?, g.view(gamma)?, g.view(beta)?);
    for win in &channel_chunks(g.gpu, groups, group_bytes)? {
        let (off, size) = (
            win.start as u64 * group_bytes,
            win.len() as u64 * group_bytes,
        );
        let n = win.len() * group_len;
        let params = Params {
            n: n as u32,
            c_base: (win.start * cpg) as u32,
            ..base
        };
        let views = vec![g.window(x, off, size)?, sv, gv, bv, g.window(y, off, size)?];
        let grid = if vec4 {
            plane_grid(g, (hw / 4) as u64, win.len() * cpg)?
        } else {
            g.grid((n as u64).div_ceil(WORKGROUP))?
        };
        g.dispatch(
            key.clone(),
            bytemuck::bytes_of(&params),
            views,
            grid,
            (if silu { 8 } else { 4 }) * n as u64,
        );
    }
    Ok(y)
}

/// `apply4`'s grid: y the channel, x (folded into z past the limit) its `vec4s`.
fn plane_grid(g: &Graph, vec4s: u64, channels: usize) -> Result<[u32; 3]> {
    let max = g.gpu.limits.max_compute_workgroups_per_dimension;
    if channels > max as usize {
        return Err(Error::TooLarge {
            what: "group_norm channels in one dispatch".into(),
            needed: channels as u64,
            limit: max as u64,
        });
    }
    let groups = vec4s.div_ceil(WORKGROUP);
    let z = groups.div_ceil(max as u64);
    Ok([groups.div_ceil(z) as u32, channels as u32, z as u32])
}

/// (channels, pixels) of an f32 [c, h, w] tensor that splits into `groups` groups.
fn group_shape(g: &Graph, x: Tensor, groups: usize) -> Result<(usize, usize)> {
    let &[c, h, w] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "group_norm input must be [c, h, w], got {:?}",
            g.shape(x)
        )));
    };
    if groups == 0 || c % groups != 0 || h * w == 0 || g.dtype(x) != DType::F32 {
        return Err(Error::Shape(format!(
            "group_norm: {c} channels of {h}×{w} do not split into {groups} groups"
        )));
    }
    Ok((c, h * w))
}

fn params(c: usize, hw: usize, groups: usize, eps: f32) -> Result<Params> {
    let cpg = c / groups;
    Ok(Params {
        group_len: u32_of(cpg * hw, "group_norm group size")?,
        slices: 0,
        groups: 0,
        group_base: 0,
        n: 0,
        hw: u32_of(hw, "group_norm plane")?,
        cpg: cpg as u32,
        c_base: 0,
        eps,
        _pad: [0; 3],
    })
}

/// CPU reference in f64: `x` [c, h, w], `gamma`/`beta` \[c\].
pub fn reference(
    x: &[f32],
    shape: [usize; 3],
    gamma: &[f32],
    beta: &[f32],
    groups: usize,
    eps: f32,
    silu: bool,
) -> Vec<f32> {
    let [c, h, w] = shape;
    let group_len = c / groups * h * w;
    let mut y = Vec::with_capacity(x.len());
    for (gi, group) in x.chunks(group_len).enumerate() {
        let mean = group.iter().map(|&v| v as f64).sum::<f64>() / group_len as f64;
        let var = group
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / group_len as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (i, &v) in group.iter().enumerate() {
            let ch = gi * (c / groups) + i / (h * w);
            let n = (v as f64 - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
            y.push((if silu { n / (1.0 + (-n).exp()) } else { n }) as f32);
        }
    }
    y
}
