//! Nearest-neighbour 2× upsampling (diffusers' Upsample2D before its conv). Input row r
//! of the flattened [c·h, w] tensor becomes output rows 2r and 2r + 1, so tensors past
//! the binding limit are split into windows of whole input rows.

use bytemuck::{Pod, Zeroable};

use super::u32_of;
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    w: u32,
    _pad: [u32; 2],
}

const WORKGROUP: u64 = 256;

/// `x` [c, h, w] → [c, 2h, 2w], each pixel repeated 2×2.
pub fn upsample_nearest2x(g: &mut Graph, x: Tensor) -> Result<Tensor> {
    let &[c, h, w] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "upsample input must be [c, h, w], got {:?}",
            g.shape(x)
        )));
    };
    if g.dtype(x) != DType::F32 || c * h * w == 0 {
        return Err(Error::Shape(format!(
            "upsample input must be non-empty f32, got {:?}",
            g.shape(x)
        )));
    }
    let y = g.intermediate(&[c, 2 * h, 2 * w], DType::F32);
    let row = 4 * w as u64;
    for rows in row_windows(g, c * h, row)? {
        let n = rows.len() * 4 * w;
        let params = Params {
            n: u32_of(n, "upsample window")?,
            w: w as u32,
            _pad: [0; 2],
        };
        let xv = g.window(x, rows.start as u64 * row, rows.len() as u64 * row)?;
        let yv = g.window(y, 4 * rows.start as u64 * row, 4 * rows.len() as u64 * row)?;
        // Rows in whole vec4s: one invocation per input vec4 (16 outputs).
        let (entry, per_invocation) = if w % 4 == 0 {
            ("nearest2x4", 16)
        } else {
            ("nearest2x", 1)
        };
        let grid = g.grid((n as u64).div_ceil(per_invocation * WORKGROUP))?;
        g.dispatch(
            KernelKey::new("resize", entry),
            bytemuck::bytes_of(&params),
            vec![xv, yv],
            grid,
            0,
        );
    }
    Ok(y)
}

/// Runs of input rows whose 4× larger output fits one binding, starting where both
/// the input and the output offsets are aligned (the input's is the stricter).
fn row_windows(g: &Graph, rows: usize, row_bytes: u64) -> Result<Vec<std::ops::Range<usize>>> {
    let align = g.gpu.limits.min_storage_buffer_offset_alignment as u64;
    let step = align / super::gcd(row_bytes, align);
    let per = (g.gpu.max_binding() / (4 * row_bytes)) / step * step;
    if per == 0 {
        return Err(Error::TooLarge {
            what: "an upsampled row".into(),
            needed: 4 * row_bytes * step,
            limit: g.gpu.max_binding(),
        });
    }
    Ok((0..rows)
        .step_by(per as usize)
        .map(|s| s..(s + per as usize).min(rows))
        .collect())
}

/// CPU reference: `x` [c, h, w].
pub fn reference(x: &[f32], shape: [usize; 3]) -> Vec<f32> {
    let [c, h, w] = shape;
    let mut y = Vec::with_capacity(4 * x.len());
    for r in 0..c * h {
        let row = &x[r * w..(r + 1) * w];
        for _ in 0..2 {
            y.extend(row.iter().flat_map(|&v| [v, v]));
        }
    }
    y
}
