//! 2-D transpose, [a, b] → [b, a]: how token sequences [H·W, C] and images [C, H·W]
//! turn into each other. Tensors past the binding limit are cut into tiles whose x
//! rows and y rows each fit one binding.

use bytemuck::{Pod, Zeroable};

use super::u32_of;
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    a: u32,
    b: u32,
    a0: u32,
    b0: u32,
    batches: u32,
    batch_len: u32,
}

const WORKGROUP: u64 = 64;

/// `x` [a, b] → [b, a].
pub fn transpose(g: &mut Graph, x: Tensor) -> Result<Tensor> {
    let &[a, b] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "transpose input must be [a, b], got {:?}",
            g.shape(x)
        )));
    };
    // A tensor of its own shape, not a view of a 3-D one: tiles in lock-step tell
    // token lists from pictures by the shape of the tensor itself (model::waiting).
    let y = g.intermediate(&[b, a], DType::F32);
    transpose_into(g, x, y)?;
    Ok(y)
}

/// `x` [a, b] transposed into `y` [b, a] (or a tensor of that many elements, such as
/// the [c, h, w] picture whose [c, h·w] this is).
pub fn transpose_into(g: &mut Graph, x: Tensor, y: Tensor) -> Result<()> {
    let &[a, b] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "transpose input must be [a, b], got {:?}",
            g.shape(x)
        )));
    };
    let (x3, y3) = (g.reshape(x, &[1, a, b])?, g.reshape(y, &[1, b, a])?);
    transpose_batched_into(g, x3, y3)
}

/// `x` [batches, a, b] → [batches, b, a].
pub(crate) fn transpose_batched(g: &mut Graph, x: Tensor) -> Result<Tensor> {
    let &[batches, a, b] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "batched transpose input must be [n, a, b], got {:?}",
            g.shape(x)
        )));
    };
    let y = g.intermediate(&[batches, b, a], DType::F32);
    transpose_batched_into(g, x, y)?;
    Ok(y)
}

/// `x` [batches, a, b] transposed into `y` [batches, b, a].
fn transpose_batched_into(g: &mut Graph, x: Tensor, y: Tensor) -> Result<()> {
    let &[batches, a, b] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "batched transpose input must be [n, a, b], got {:?}",
            g.shape(x)
        )));
    };
    if g.dtype(x) != DType::F32 || batches * a * b == 0 || g.shape(y) != [batches, b, a] {
        return Err(Error::Shape(format!(
            "transpose needs a non-empty f32 tensor and room for its transpose, got {:?} \
             {:?} into {:?}",
            g.shape(x),
            g.dtype(x),
            g.shape(y)
        )));
    }
    let batch_len = u32_of(a * b, "transpose batch")?;
    let key = KernelKey::new("transpose", "main");
    if g.bytes(x) <= g.gpu.max_binding() {
        let params = Params {
            rows: a as u32,
            cols: b as u32,
            a: a as u32,
            b: b as u32,
            a0: 0,
            b0: 0,
            batches: batches as u32,
            batch_len,
        };
        let views = vec![g.view(x)?, g.view(y)?];
        let grid = g.grid((batches as u64 * a as u64 * b as u64).div_ceil(WORKGROUP))?;
        g.dispatch(key, bytemuck::bytes_of(&params), views, grid, 0);
        return Ok(());
    }
    // Tiles: x rows of `b` elements and y rows of `a` elements, each run fitting a binding.
    let row_runs = super::channel_chunks(g.gpu, a, 4 * b as u64)?;
    let col_runs = super::channel_chunks(g.gpu, b, 4 * a as u64)?;
    for bi in 0..batches {
        let base = 4 * (bi * a * b) as u64;
        for rr in &row_runs {
            for cr in &col_runs {
                let params = Params {
                    rows: rr.len() as u32,
                    cols: cr.len() as u32,
                    a: a as u32,
                    b: b as u32,
                    a0: rr.start as u32,
                    b0: cr.start as u32,
                    batches: 1,
                    batch_len: 0,
                };
                let xv = g.window(
                    x,
                    base + 4 * (rr.start * b) as u64,
                    4 * (rr.len() * b) as u64,
                )?;
                let yv = g.window(
                    y,
                    base + 4 * (cr.start * a) as u64,
                    4 * (cr.len() * a) as u64,
                )?;
                let grid = g.grid((rr.len() as u64 * cr.len() as u64).div_ceil(WORKGROUP))?;
                g.dispatch(
                    key.clone(),
                    bytemuck::bytes_of(&params),
                    vec![xv, yv],
                    grid,
                    0,
                );
            }
        }
    }
    Ok(())
}

/// CPU reference: `x` [a, b] → [b, a].
pub fn reference(x: &[f32], a: usize, b: usize) -> Vec<f32> {
    let mut y = vec![0.0; a * b];
    for i in 0..a {
        for j in 0..b {
            y[j * a + i] = x[i * b + j];
        }
    }
    y
}
