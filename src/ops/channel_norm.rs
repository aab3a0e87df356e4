//! Per-channel L2 norms and OSCAR's rescaling z_t\[c\] = z_hat\[c\] · A_z\[c\] / ‖z_hat\[c\]‖₂.
//! One workgroup reduces one channel plane (compensated per-thread sums, then a tree),
//! so the norm stays accurate to f32 rounding for planes of millions of pixels. Tensors
//! past the binding limit are split into channel windows.

use bytemuck::{Pod, Zeroable};

use super::{channel_chunks, u32_of};
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    hw: u32,
    channels: u32,
    c_base: u32,
    n: u32,
}

const WORKGROUP: u64 = 256;

fn dims(g: &Graph, x: Tensor) -> Result<(usize, usize)> {
    match *g.shape(x) {
        [c, h, w] if g.dtype(x) == DType::F32 && c * h * w > 0 => Ok((c, h * w)),
        _ => Err(Error::Shape(format!(
            "channel norms need a non-empty f32 [c, h, w] tensor, got {:?}",
            g.shape(x)
        ))),
    }
}

/// `x` [c, h, w] → \[c\]: the L2 norm of each channel over all its pixels.
pub fn channel_l2_norms(g: &mut Graph, x: Tensor) -> Result<Tensor> {
    let (c, hw) = dims(g, x)?;
    let norms = g.intermediate(&[c], DType::F32);
    let nv = g.view(norms)?;
    let plane = 4 * hw as u64;
    for win in channel_chunks(g.gpu, c, plane)? {
        let params = Params {
            hw: u32_of(hw, "channel plane")?,
            channels: win.len() as u32,
            c_base: win.start as u32,
            n: 0,
        };
        let xv = g.slab(x, &win)?;
        let grid = g.grid(win.len() as u64)?;
        g.dispatch(
            KernelKey::new("channel_norm", "norms"),
            bytemuck::bytes_of(&params),
            vec![xv, nv],
            grid,
            2 * (win.len() * hw) as u64,
        );
    }
    Ok(norms)
}

/// `x` [c, h, w], `target` \[c\] → x\[c\] · target\[c\] / ‖x\[c\]‖₂. A channel that is all
/// zeros gives NaN, as the PyTorch formula does.
pub fn rescale_channels(g: &mut Graph, x: Tensor, target: Tensor) -> Result<Tensor> {
    let (c, hw) = dims(g, x)?;
    if g.shape(target) != [c] || g.dtype(target) != DType::F32 {
        return Err(Error::Shape(format!(
            "rescale target must be f32 [{c}], got {:?}",
            g.shape(target)
        )));
    }
    let norms = channel_l2_norms(g, x)?;
    let shape = g.shape(x).to_vec();
    let y = g.intermediate(&shape, DType::F32);
    let (nv, tv) = (g.view(norms)?, g.view(target)?);
    let plane = 4 * hw as u64;
    for win in channel_chunks(g.gpu, c, plane)? {
        let n = win.len() * hw;
        let params = Params {
            hw: hw as u32,
            channels: win.len() as u32,
            c_base: win.start as u32,
            n: u32_of(n, "rescale window")?,
        };
        let views = vec![g.slab(x, &win)?, nv, tv, g.slab(y, &win)?];
        let grid = g.grid((n as u64).div_ceil(WORKGROUP))?;
        g.dispatch(
            KernelKey::new("channel_norm", "rescale"),
            bytemuck::bytes_of(&params),
            views,
            grid,
            2 * n as u64,
        );
    }
    Ok(y)
}

/// CPU reference of [`channel_l2_norms`], in f64: `x` [c, h·w].
pub fn norms_reference(x: &[f32], c: usize) -> Vec<f32> {
    x.chunks(x.len() / c)
        .map(|p| p.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32)
        .collect()
}

/// CPU reference of [`rescale_channels`], in f64: `x` [c, h·w].
pub fn rescale_reference(x: &[f32], c: usize, target: &[f32]) -> Vec<f32> {
    let plane = x.len() / c;
    x.chunks(plane)
        .zip(target)
        .flat_map(|(p, &t)| {
            let norm = p.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            p.iter().map(move |&v| (v as f64 * t as f64 / norm) as f32)
        })
        .collect()
}
