//! LayerNorm over the channels of a token sequence [n, c] (the transformer blocks'
//! norms), statistics in f32 with PyTorch's biased variance. Rows past the binding
//! limit are processed in windows.

use bytemuck::{Pod, Zeroable};

use super::{channel_chunks, is_f16};
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    eps: f32,
    _pad: u32,
}

const WORKGROUP: u64 = 64;

/// `x` [n, c] f32, `gamma` and `beta` \[c\] (f32 or f16, alike) → [n, c].
pub fn layer_norm(
    g: &mut Graph,
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    eps: f32,
) -> Result<Tensor> {
    let &[n, c] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "layer_norm input must be [n, c], got {:?}",
            g.shape(x)
        )));
    };
    let pdt = g.dtype(gamma);
    if n * c == 0
        || g.shape(gamma) != [c]
        || g.shape(beta) != [c]
        || g.dtype(beta) != pdt
        || pdt == DType::U32
        || g.dtype(x) != DType::F32
    {
        return Err(Error::Shape(format!(
            "layer_norm: x {:?}, gamma {:?}, beta {:?} disagree",
            g.shape(x),
            g.shape(gamma),
            g.shape(beta)
        )));
    }
    let y = g.intermediate(&[n, c], DType::F32);
    let key = KernelKey::new("layer_norm", "main").with("W_F16", is_f16(pdt));
    let row_bytes = 4 * c as u64;
    let (gv, bv) = (g.view(gamma)?, g.view(beta)?);
    for run in channel_chunks(g.gpu, n, row_bytes)? {
        let params = Params {
            rows: run.len() as u32,
            c: c as u32,
            eps,
            _pad: 0,
        };
        let views = vec![g.slab(x, &run)?, gv, bv, g.slab(y, &run)?];
        let grid = g.grid((run.len() as u64).div_ceil(WORKGROUP))?;
        g.dispatch(
            key.clone(),
            bytemuck::bytes_of(&params),
            views,
            grid,
            8 * (run.len() * c) as u64,
        );
    }
    Ok(y)
}

/// CPU reference: `x` [n, c].
pub fn reference(x: &[f32], n: usize, c: usize, gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let mut y = Vec::with_capacity(n * c);
    for row in x.chunks(c).take(n) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        y.extend(
            row.iter()
                .zip(gamma.iter().zip(beta))
                .map(|(&v, (&ga, &be))| ((v as f64 - mean) * inv * ga as f64 + be as f64) as f32),
        );
    }
    y
}
