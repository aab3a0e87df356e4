//! Channel concatenation (UNet skip connections). Each operand is copied into its part
//! of the output. The second part starts at an arbitrary element, so copies bind
//! windows from the aligned offset below where they start and carry the remainder as
//! an element offset; large operands are copied in several windows.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    src_off: u32,
    dst_off: u32,
    _pad: u32,
}

const WORKGROUP: u64 = 256;

/// `a` [ca, h, w], `b` [cb, h, w] → [ca + cb, h, w].
pub fn concat_channels(g: &mut Graph, a: Tensor, b: Tensor) -> Result<Tensor> {
    let (&[ca, h, w], &[cb, hb, wb]) = (g.shape(a), g.shape(b)) else {
        return Err(Error::Shape(format!(
            "concat operands must be [c, h, w], got {:?} and {:?}",
            g.shape(a),
            g.shape(b)
        )));
    };
    if (h, w) != (hb, wb)
        || (ca + cb) * h * w == 0
        || g.dtype(a) != DType::F32
        || g.dtype(b) != DType::F32
    {
        return Err(Error::Shape(format!(
            "concat of {:?} and {:?}: sizes or types differ, or empty",
            g.shape(a),
            g.shape(b)
        )));
    }
    let y = g.intermediate(&[ca + cb, h, w], DType::F32);
    copy(g, a, y, 0)?;
    copy(g, b, y, ca * h * w)?;
    Ok(y)
}

/// Copies all of `src` into `dst` from element `dst_start` on.
fn copy(g: &mut Graph, src: Tensor, dst: Tensor, dst_start: usize) -> Result<()> {
    let chunk = (g.window_from_room() as usize / 4).max(1);
    let len = g.len(src);
    let mut done = 0;
    while done < len {
        let n = chunk.min(len - done);
        let bytes = 4 * n as u64;
        let (sv, src_head) = g.window_from(src, 4 * done as u64, bytes)?;
        let (dv, dst_head) = g.window_from(dst, 4 * (dst_start + done) as u64, bytes)?;
        let params = Params {
            n: n as u32,
            src_off: (src_head / 4) as u32,
            dst_off: (dst_head / 4) as u32,
            _pad: 0,
        };
        let grid = g.grid((n as u64).div_ceil(WORKGROUP))?;
        g.dispatch(
            KernelKey::new("concat", "copy"),
            bytemuck::bytes_of(&params),
            vec![sv, dv],
            grid,
            0,
        );
        done += n;
    }
    Ok(())
}

/// CPU reference: channel concatenation of two [c, h, w] tensors is plain appending.
pub fn reference(a: &[f32], b: &[f32]) -> Vec<f32> {
    [a, b].concat()
}
