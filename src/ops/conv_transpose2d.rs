//! Transposed 2-D convolution (PyTorch ConvTranspose2d, batch 1, symmetric padding),
//! as a gather: each output pixel sums the inputs that scatter onto it, so no atomics.
//! Tensors past the binding limit are split into channel windows as in conv2d.

use bytemuck::{Pod, Zeroable};

use super::{channel_chunks, channel_chunks_within, is_f16, u32_of};
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    w_cout: u32,
    oc_base: u32,
    ic_base: u32,
    accumulate: u32,
    x_tiles: u32,
    _pad: u32,
}

const OC_TILE: usize = 8;
const PX_TILE: usize = 4;
const WORKGROUP: u64 = 64;

/// Output side length: (n − 1)·stride − 2·padding + k + output_padding.
pub fn out_size(
    n: usize,
    k: usize,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<usize> {
    let full = (n.max(1) - 1) * stride + k + output_padding;
    if n == 0 || k == 0 || stride == 0 || output_padding >= stride || full <= 2 * padding {
        return Err(Error::Shape(format!(
            "conv_transpose2d: size {n}, kernel {k}, stride {stride}, padding {padding}, output_padding {output_padding} give no output"
        )));
    }
    Ok(full - 2 * padding)
}

/// `x` [cin, h, w], `weight` [cin, cout, kh, kw], `bias` \[cout\] → [cout, oh, ow].
pub fn conv_transpose2d(
    g: &mut Graph,
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    let &[cin, h, w] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "conv_transpose2d input must be [c, h, w], got {:?}",
            g.shape(x)
        )));
    };
    let &[wcin, cout, kh, kw] = g.shape(weight) else {
        return Err(Error::Shape(format!(
            "conv_transpose2d weight must be [cin, cout, kh, kw], got {:?}",
            g.shape(weight)
        )));
    };
    if wcin != cin
        || g.shape(bias) != [cout]
        || g.dtype(bias) != g.dtype(weight)
        || g.dtype(x) != DType::F32
    {
        return Err(Error::Shape(format!(
            "conv_transpose2d: input {:?}, weight {:?}, bias {:?} disagree",
            g.shape(x),
            g.shape(weight),
            g.shape(bias)
        )));
    }
    let oh = out_size(h, kh, stride, padding, output_padding)?;
    let ow = out_size(w, kw, stride, padding, output_padding)?;
    let y = g.intermediate(&[cout, oh, ow], DType::F32);
    // Output columns are tiled by phase (ox mod stride): the PX_TILE pixels of a tile
    // are stride apart, so they share their taps and read adjacent input pixels.
    let x_tiles = ow.div_ceil(stride).div_ceil(PX_TILE);
    let key = KernelKey::new("conv_transpose2d", "main").with("W_F16", is_f16(g.dtype(weight)));
    // Loop trips per input channel: taps of one phase × the tile's inner loops.
    let taps =
        kh.div_ceil(stride) * (1 + kw.div_ceil(stride) * (2 + PX_TILE + OC_TILE * (1 + PX_TILE)));
    let in_chunks = channel_chunks_within(g.gpu, cin, 4 * (h * w) as u64, taps + 1)?;
    let out_chunks = channel_chunks(g.gpu, cout, 4 * (oh * ow) as u64)?;
    let (wv, bv) = (g.view(weight)?, g.view(bias)?);
    for oc in &out_chunks {
        for (i, ic) in in_chunks.iter().enumerate() {
            let params = Params {
                cin: u32_of(ic.len(), "conv_transpose2d channels")?,
                h: u32_of(h, "height")?,
                w: u32_of(w, "width")?,
                cout: u32_of(oc.len(), "conv_transpose2d channels")?,
                oh: u32_of(oh, "height")?,
                ow: u32_of(ow, "width")?,
                kh: kh as u32,
                kw: kw as u32,
                stride: stride as u32,
                pad: padding as u32,
                w_cout: cout as u32,
                oc_base: oc.start as u32,
                ic_base: ic.start as u32,
                accumulate: (i > 0) as u32,
                x_tiles: x_tiles as u32,
                _pad: 0,
            };
            let xv = g.slab(x, ic)?;
            let yv = g.slab(y, oc)?;
            let invocations = (oc.len().div_ceil(OC_TILE) * oh * stride * x_tiles) as u64;
            let grid = g.grid(invocations.div_ceil(WORKGROUP))?;
            let flops = 2 * (oc.len() * ic.len() * kh * kw * h * w) as u64;
            g.dispatch(
                key.clone(),
                bytemuck::bytes_of(&params),
                vec![xv, wv, bv, yv],
                grid,
                flops,
            );
        }
    }
    Ok(y)
}

/// CPU reference as a scatter (the definition): `x` [cin, h, w], `weight` [cin, cout, kh, kw].
/// `geometry` is (stride, padding, output_padding).
pub fn reference(
    x: &[f32],
    shape: [usize; 3],
    weight: &[f32],
    wshape: [usize; 4],
    bias: &[f32],
    geometry: (usize, usize, usize),
) -> Vec<f32> {
    let (stride, padding, output_padding) = geometry;
    let [cin, h, w] = shape;
    let [_, cout, kh, kw] = wshape;
    let oh = out_size(h, kh, stride, padding, output_padding).expect("valid reference shape");
    let ow = out_size(w, kw, stride, padding, output_padding).expect("valid reference shape");
    let mut acc: Vec<f64> = (0..cout * oh * ow)
        .map(|i| bias[i / (oh * ow)] as f64)
        .collect();
    for ic in 0..cin {
        for iy in 0..h {
            for ix in 0..w {
                let xv = x[(ic * h + iy) * w + ix] as f64;
                for oc in 0..cout {
                    for ky in 0..kh {
                        let oy = (iy * stride + ky) as isize - padding as isize;
                        if oy < 0 || oy >= oh as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ox = (ix * stride + kx) as isize - padding as isize;
                            if ox < 0 || ox >= ow as isize {
                                continue;
                            }
                            acc[(oc * oh + oy as usize) * ow + ox as usize] +=
                                xv * weight[((ic * cout + oc) * kh + ky) * kw + kx] as f64;
                        }
                    }
                }
            }
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}
