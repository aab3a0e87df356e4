//! The patches of a convolution's input as a matrix, [cin·kh·kw, oh·ow] (im2col): with
//! them a convolution is one matrix product, which keeps every lane busy on pictures
//! too small for a direct kernel's tiles (the UNet's 8×8 and 4×4 levels).

use bytemuck::{Pod, Zeroable};

use super::conv2d::Conv2d;
use super::u32_of;
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    cin: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_t: u32,
    pad_l: u32,
    _pad: [u32; 2],
}

const WORKGROUP: u64 = 256;

/// `x` [cin, h, w] → [cin·kh·kw, oh·ow] for a `kh`×`kw` convolution `cfg` (its activation
/// is not applied here). Both must fit one storage binding.
pub fn im2col(g: &mut Graph, x: Tensor, (kh, kw): (usize, usize), cfg: Conv2d) -> Result<Tensor> {
    let &[cin, h, w] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "im2col input must be [c, h, w], got {:?}",
            g.shape(x)
        )));
    };
    if g.dtype(x) != DType::F32 || cin * h * w * kh * kw == 0 {
        return Err(Error::Shape(format!(
            "im2col needs a non-empty f32 input and kernel, got {:?} and {kh}×{kw}",
            g.shape(x)
        )));
    }
    let (oh, ow) = cfg.out_size(h, w, kh, kw)?;
    let (k_len, pixels) = (cin * kh * kw, oh * ow);
    let y = g.intermediate(&[k_len, pixels], DType::F32);
    if g.bytes(x).max(g.bytes(y)) > g.gpu.max_binding() {
        return Err(Error::TooLarge {
            what: "im2col patches".into(),
            needed: g.bytes(x).max(g.bytes(y)),
            limit: g.gpu.max_binding(),
        });
    }
    let params = Params {
        cin: cin as u32,
        h: h as u32,
        w: w as u32,
        oh: oh as u32,
        ow: ow as u32,
        kh: kh as u32,
        kw: kw as u32,
        stride: cfg.stride as u32,
        pad_t: cfg.pad[0] as u32,
        pad_l: cfg.pad[2] as u32,
        _pad: [0; 2],
    };
    // One invocation per input channel and output pixel (see the shader).
    u32_of(cin * kh * kw * oh * ow, "im2col elements")?;
    let n = u32_of(cin * oh * ow, "im2col invocations")?;
    let grid = g.grid((n as u64).div_ceil(WORKGROUP))?;
    let views = vec![g.view(x)?, g.view(y)?];
    g.dispatch(
        KernelKey::new("im2col", "main"),
        bytemuck::bytes_of(&params),
        views,
        grid,
        0,
    );
    Ok(y)
}

/// CPU reference of [`im2col`]: `x` [cin, h, w].
pub fn reference(
    x: &[f32],
    [cin, h, w]: [usize; 3],
    (kh, kw): (usize, usize),
    cfg: Conv2d,
) -> Vec<f32> {
    let (oh, ow) = cfg.out_size(h, w, kh, kw).expect("a valid convolution");
    let mut y = Vec::with_capacity(cin * kh * kw * oh * ow);
    for ic in 0..cin {
        for ky in 0..kh {
            for kx in 0..kw {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let iy = (oy * cfg.stride + ky) as isize - cfg.pad[0] as isize;
                        let ix = (ox * cfg.stride + kx) as isize - cfg.pad[2] as isize;
                        let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                        y.push(if inside {
                            x[(ic * h + iy as usize) * w + ix as usize]
                        } else {
                            0.0
                        });
                    }
                }
            }
        }
    }
    y
}
