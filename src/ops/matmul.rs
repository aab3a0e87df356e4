//! scratch
use bytemuck::{Pod, Zeroable};

use super::is_f16;
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    k: u32,
    m: u32,
    has_bias: u32,
}

pub fn linear_variant(g: &mut Graph, x: Tensor, weight: Tensor, bias: Option<Tensor>, entry: &'static str, rows_per_wg: u64, cols_per_wg: u64) -> Result<Tensor> {
    let &[n, k] = g.shape(x) else { return Err(Error::Shape("x".into())) };
    let &[m, _] = g.shape(weight) else { return Err(Error::Shape("w".into())) };
    let y = g.intermediate(&[n, m], DType::F32);
    let key = KernelKey::new("matmul", entry).with("W_F16", is_f16(g.dtype(weight)));
    let params = Params { n: n as u32, k: k as u32, m: m as u32, has_bias: bias.is_some() as u32 };
    let bv = match bias { Some(b) => g.view(b)?, None => g.view(weight)? };
    let views = vec![g.view(x)?, g.view(weight)?, bv, g.view(y)?];
    let groups = (n as u64).div_ceil(rows_per_wg) * (m as u64).div_ceil(cols_per_wg);
    let grid = g.grid(groups)?;
    g.dispatch(key, bytemuck::bytes_of(&params), views, grid, 2 * (n * m * k) as u64);
    Ok(y)
}

pub fn reference_linear(x: &[f32], n: usize, k: usize, w: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0f32; n * m];
    for r in 0..n {
        for c in 0..m {
            let mut acc = bias.map_or(0.0, |b| b[c] as f64);
            for i in 0..k {
                acc += x[r * k + i] as f64 * w[c * k + i] as f64;
            }
            y[r * m + c] = acc as f32;
        }
    }
    y
}
