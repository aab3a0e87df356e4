//! Cosine-similarity vector quantisation (vector-quantize-pytorch's cosine codebook):
//! the index of the codebook row with the largest (z/‖z‖)·e, and the row lookup the
//! decoder starts from. Each token scans the codebook in order with a strict `>`, so
//! ties go to the lowest index and the result is deterministic.

use bytemuck::{Pod, Zeroable};

use super::{is_f16, u32_of, LOOP_BUDGET};
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    d: u32,
    k: u32,
    /// argmax: the codebook rows `j0..j1` this dispatch scans.
    j0: u32,
    j1: u32,
    _pad: [u32; 3],
}

const WORKGROUP: u64 = 64;

/// F.normalize's floor on the norm.
pub const NORM_EPS: f32 = 1e-12;

fn rows(g: &Graph, t: Tensor, what: &str) -> Result<(usize, usize)> {
    match *g.shape(t) {
        [n, d] if n > 0 && d > 0 => Ok((n, d)),
        _ => Err(Error::Shape(format!(
            "{what} must be a non-empty [rows, d], got {:?}",
            g.shape(t)
        ))),
    }
}

/// `z` [n, d] f32, `codebook` [k, d] f32|f16 → \[n\] u32: argmax_j (z/‖z‖)·e_j with
/// e_j as stored, accumulated in f32. NaN scores never win; an all-zero z gets 0, a z
/// none of whose scores is a number (a NaN in it, or an infinity) gets k.
pub fn argmax_cosine(g: &mut Graph, z: Tensor, codebook: Tensor) -> Result<Tensor> {
    let ((n, d), (k, kd)) = (rows(g, z, "vq input")?, rows(g, codebook, "codebook")?);
    if d != kd || g.dtype(z) != DType::F32 || g.dtype(codebook) == DType::U32 {
        return Err(Error::Shape(format!(
            "vq: input {:?} and codebook {:?} disagree",
            g.shape(z),
            g.shape(codebook)
        )));
    }
    let params = Params {
        n: u32_of(n, "tokens")?,
        d: u32_of(d, "code size")?,
        k: u32_of(k, "codebook size")?,
        j0: 0,
        j1: 0,
        _pad: [0; 3],
    };
    let normalized = g.intermediate(&[n, d], DType::F32);
    let indices = g.intermediate(&[n], DType::U32);
    let views = vec![g.view(z)?, g.view(normalized)?];
    let grid = g.grid((n as u64).div_ceil(WORKGROUP))?;
    g.dispatch(
        KernelKey::new("vq", "normalize"),
        bytemuck::bytes_of(&params),
        views,
        grid,
        3 * (n * d) as u64,
    );
    // The running best score travels between codebook windows. Windows keep each
    // invocation's loop trips (rows × (d + 1)) under llvmpipe's silent 65535 cap.
    let best_scores = g.intermediate(&[n], DType::F32);
    let key = KernelKey::new("vq", "argmax").with("W_F16", is_f16(g.dtype(codebook)));
    let rows_per_window = (LOOP_BUDGET / (d + 1)).max(1);
    for start in (0..k).step_by(rows_per_window) {
        let end = (start + rows_per_window).min(k);
        let params = Params {
            j0: start as u32,
            j1: end as u32,
            ..params
        };
        let views = vec![
            g.view(normalized)?,
            g.view(codebook)?,
            g.view(indices)?,
            g.view(best_scores)?,
        ];
        g.dispatch(
            key.clone(),
            bytemuck::bytes_of(&params),
            views,
            grid,
            2 * (n * (end - start) * d) as u64,
        );
    }
    Ok(indices)
}

/// `table` [k, d] f32|f16, `indices` \[n\] u32 → [n, d] f32. An index ≥ k reads row
/// k − 1 (clamped, never out of bounds); the decoder validates indices beforehand.
pub fn gather_rows(g: &mut Graph, table: Tensor, indices: Tensor) -> Result<Tensor> {
    let (k, d) = rows(g, table, "table")?;
    let &[n] = g.shape(indices) else {
        return Err(Error::Shape(format!(
            "indices must be [n], got {:?}",
            g.shape(indices)
        )));
    };
    if g.dtype(indices) != DType::U32 || g.dtype(table) == DType::U32 || n == 0 {
        return Err(Error::Shape(
            "gather_rows needs a float table and non-empty u32 indices".into(),
        ));
    }
    let y = g.intermediate(&[n, d], DType::F32);
    let params = Params {
        n: u32_of(n * d, "gathered elements")?,
        d: d as u32,
        k: u32_of(k, "table rows")?,
        j0: 0,
        j1: 0,
        _pad: [0; 3],
    };
    let views = vec![g.view(table)?, g.view(indices)?, g.view(y)?];
    let grid = g.grid(((n * d) as u64).div_ceil(WORKGROUP))?;
    g.dispatch(
        KernelKey::new("vq", "gather").with("W_F16", is_f16(g.dtype(table))),
        bytemuck::bytes_of(&params),
        views,
        grid,
        0,
    );
    Ok(y)
}

/// CPU reference scores in f64: `scores[t][j]` = (z_t/‖z_t‖)·e_j for `z` [n, d], `codebook` [k, d].
pub fn scores_reference(z: &[f32], codebook: &[f32], d: usize) -> Vec<Vec<f64>> {
    z.chunks(d)
        .map(|zt| {
            let norm = zt
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(NORM_EPS as f64);
            codebook
                .chunks(d)
                .map(|e| {
                    zt.iter()
                        .zip(e)
                        .map(|(&a, &b)| a as f64 / norm * b as f64)
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// CPU reference of [`argmax_cosine`]: the first index of the largest score, or the
/// number of scores where none is a number.
pub fn argmax_reference(scores: &[Vec<f64>]) -> Vec<u32> {
    scores
        .iter()
        .map(|s| {
            s.iter()
                .enumerate()
                .fold((s.len(), f64::NEG_INFINITY), |(bi, bv), (j, &v)| {
                    if v > bv {
                        (j, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0 as u32
        })
        .collect()
}

/// CPU reference of [`gather_rows`], clamping like the GPU.
pub fn gather_reference(table: &[f32], d: usize, indices: &[u32]) -> Vec<f32> {
    let k = table.len() / d;
    indices
        .iter()
        .flat_map(|&i| table[(i as usize).min(k - 1) * d..][..d].iter().copied())
        .collect()
}
