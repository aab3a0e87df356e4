//! Softmax along the rows of a matrix, with a scale inside the exponent (attention's
//! 1/√d): the scores of the blocked attention. Max and sum in f32. Rows past the
//! binding limit are processed in windows.

use bytemuck::{Pod, Zeroable};

use super::{channel_chunks, u32_of};
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    scale: f32,
    _pad: u32,
}

/// `x` [rows, n] f32 → softmax(scale · x) along each row, [rows, n]; `scale` > 0.
pub fn softmax(g: &mut Graph, x: Tensor, scale: f32) -> Result<Tensor> {
    let &[rows, n] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "softmax input must be [rows, n], got {:?}",
            g.shape(x)
        )));
    };
    if rows * n == 0 || g.dtype(x) != DType::F32 || !(scale > 0.0 && scale.is_finite()) {
        return Err(Error::Shape(format!(
            "softmax: x {:?} must be non-empty f32 and the scale ({scale}) positive",
            g.shape(x)
        )));
    }
    let y = g.intermediate(&[rows, n], DType::F32);
    let key = KernelKey::new("softmax", "main");
    let row_bytes = 4 * n as u64;
    for run in channel_chunks(g.gpu, rows, row_bytes)? {
        let params = Params {
            rows: run.len() as u32,
            n: u32_of(n, "softmax row")?,
            scale,
            _pad: 0,
        };
        let views = vec![g.slab(x, &run)?, g.slab(y, &run)?];
        let grid = g.grid(run.len() as u64)?;
        // max, subtract and scale, exp, sum, divide
        g.dispatch(
            key.clone(),
            bytemuck::bytes_of(&params),
            views,
            grid,
            5 * (run.len() * n) as u64,
        );
    }
    Ok(y)
}

/// CPU reference: `x` [rows, n].
pub fn reference(x: &[f32], n: usize, scale: f32) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(n) {
        let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
        let e: Vec<f64> = row
            .iter()
            .map(|&v| ((v as f64 - max) * scale as f64).exp())
            .collect();
        let sum: f64 = e.iter().sum();
        y.extend(e.iter().map(|v| (v / sum) as f32));
    }
    y
}
