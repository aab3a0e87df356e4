//! 2-D convolution (any kernel, stride, asymmetric padding) with an optional fused
//! activation. Tensors past the storage-binding limit are split into channel windows:
//! output windows are independent, input windows accumulate into the output.

use bytemuck::{Pod, Zeroable};

use super::{
    channel_chunks, channel_chunks_within, im2col, is_f16, matmul, split_k, subgroups_of_8,
    transpose, u32_of,
};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelKey};
use crate::graph::{DType, Graph, Layout, Tensor};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    #[default]
    None,
    Relu,
    Silu,
}

impl Activation {
    /// The `ACT` override of shaders/activation.wgsl.
    pub(crate) fn code(self) -> f64 {
        match self {
            Activation::None => 0.0,
            Activation::Relu => 1.0,
            Activation::Silu => 2.0,
        }
    }

    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            Activation::Relu => v.max(0.0),
            Activation::Silu => v / (1.0 + (-v).exp()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: usize,
    /// Top, bottom, left, right.
    pub pad: [usize; 4],
    pub act: Activation,
}

impl Conv2d {
    /// Stride 1, `pad` on every side: the "same" convolution of an odd kernel.
    pub fn same(pad: usize) -> Self {
        Conv2d {
            stride: 1,
            pad: [pad; 4],
            act: Activation::None,
        }
    }

    pub fn strided(stride: usize, pad: [usize; 4]) -> Self {
        Conv2d {
            stride,
            pad,
            act: Activation::None,
        }
    }

    pub fn with(self, act: Activation) -> Self {
        Conv2d { act, ..self }
    }

    pub fn out_size(&self, h: usize, w: usize, kh: usize, kw: usize) -> Result<(usize, usize)> {
        let [t, b, l, r] = self.pad;
        let (ph, pw) = (h + t + b, w + l + r);
        if self.stride == 0 || ph < kh || pw < kw {
            return Err(Error::Shape(format!(
                "conv {kh}×{kw} does not fit a {h}×{w} input with padding {:?}",
                self.pad
            )));
        }
        Ok(((ph - kh) / self.stride + 1, (pw - kw) / self.stride + 1))
    }
}

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
    pad_t: u32,
    pad_l: u32,
    w_cin: u32,
    oc_base: u32,
    ic_base: u32,
    activate: u32,
    k_split: u32,
}

/// Output channels × output rows one invocation computes (see shaders/conv2d.wgsl).
const OC_TILE: u64 = 8;
/// Output channels per workgroup of the broadcast kernels: `main3` and `main3s2` take
/// 32 (every loaded input feeds twice the FMAs of 16: 45 → 50 % of the FMA probe at
/// 3×3 320→320 @ 64×64, 28 → 34 % at stride 2), `main` and `main1` 16.
const VEC3_OC_TILE: u64 = 32;
const SUBGROUP_OC_TILE: u64 = 16;
const ROW_TILE: u64 = 4;
const WORKGROUP: u64 = 64;
/// Output channels from which adapters without 8-lane subgroups take `tiled`: under
/// half a tile its workgroups would mostly idle, and `main` does better (a VAE's 3
/// output channels).
const TILED_FROM: usize = 32;
/// Output pixels up to which convolutions run as im2col products where the broadcast
/// matmul kernel applies (see `conv2d`).
const SMALL_PICTURE: usize = 64;
const SUBGROUP_LANES: u64 = 8;
/// K per staging step of `tiled`, of which a split-K run is a multiple.
const TILED_STEP: usize = 16;

/// `x` [cin, h, w], `weight` [cout, cin, kh, kw], `bias` \[cout\] → [cout, oh, ow].
pub fn conv2d(
    g: &mut Graph,
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    cfg: Conv2d,
) -> Result<Tensor> {
    let &[cin, h, w] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "conv2d input must be [c, h, w], got {:?}",
            g.shape(x)
        )));
    };
    let &[cout, wcin, kh, kw] = g.shape(weight) else {
        return Err(Error::Shape(format!(
            "conv2d weight must be [cout, cin, kh, kw], got {:?}",
            g.shape(weight)
        )));
    };
    if wcin != cin || g.shape(bias) != [cout] || g.dtype(bias) != g.dtype(weight) {
        return Err(Error::Shape(format!(
            "conv2d: input {:?}, weight {:?}, bias {:?} disagree",
            g.shape(x),
            g.shape(weight),
            g.shape(bias)
        )));
    }
    let (oh, ow) = cfg.out_size(h, w, kh, kw)?;
    let (k_len, pixels) = (cin * kh * kw, oh * ow);
    let one_by_one = (kh, kw, cfg.stride, cfg.pad) == (1, 1, 1, [0; 4]);
    let route = product_route(g.gpu, [cin, h, w], g.shape(weight), g.dtype(weight), cfg)?;
    if g.layout(weight) != Layout::Plain && route != Some(Product::Rows) {
        return Err(Error::Shape(format!(
            "conv2d: a {:?} weight in blocks of rows needs the product over few pixels \
             (see conv2d::weight_layout)",
            g.shape(weight)
        )));
    }
    if let Some(product) = route {
        let patches = if one_by_one {
            g.reshape(x, &[cin, pixels])?
        } else {
            im2col::im2col(g, x, (kh, kw), cfg)?
        };
        let w2 = g.reshape(weight, &[cout, k_len])?;
        // The picture's own shape, not a view of a matrix: tiles in lock-step exchange
        // halos only of pictures, which they tell from the tensor's shape (model::waiting).
        let y = g.intermediate(&[cout, oh, ow], DType::F32);
        let y2 = g.reshape(y, &[cout, pixels])?;
        if product == Product::Narrow {
            let rows = transpose::transpose(g, patches)?;
            let by_pixel = matmul::linear(g, rows, w2, Some(bias))?;
            transpose::transpose_into(g, by_pixel, y2)?;
        } else {
            matmul::matmul_row_bias_into(g, w2, patches, bias, y2)?;
        }
        return Ok(y);
    }
    let sub8 = subgroups_of_8(g.gpu);
    let y = g.intermediate(&[cout, oh, ow], DType::F32);
    let in_chunks = channel_chunks_within(g.gpu, cin, 4 * (h * w) as u64, 1 + kh * (1 + kw))?;
    // The vector kernels of shaders/conv2d_subgroup.wgsl, where their vec4 loads line
    // up: input channels in groups of 4 (f32 weights) or 8 (f16), and for `main3`
    // (3×3 "same", 4 columns × 4 rows × 32 channels per lane) rows a multiple of 4
    // columns, for `main3s2` (its stride-2 sibling, left padding 0 or 1) input rows a
    // multiple of 8 and output rows half as long, for `main1` (1×1, 16 pixels × 16
    // channels) pixels a multiple of 4.
    let group = if g.dtype(weight) == DType::F16 { 8 } else { 4 };
    let vector = sub8
        && cin % group == 0
        && in_chunks
            .iter()
            .all(|c| c.start % group == 0 && c.len() % group == 0);
    // The 3×3 ones even for a few output channels (lanes past the last read its weights
    // and store nothing): the VAE's 128 → 3 output convolution at 256² took 200 ms on
    // `main`, which reads every operand per multiply-add.
    let three =
        vector && (kh, kw, cfg.stride, cfg.pad[2], cfg.pad[3]) == (3, 3, 1, 1, 1) && w % 4 == 0;
    let three_s2 =
        vector && (kh, kw, cfg.stride) == (3, 3, 2) && cfg.pad[2] <= 1 && w % 8 == 0 && 2 * ow == w;
    // Otherwise the broadcast kernels need 8 channels to fill their broadcasts.
    let one = vector
        && cout >= 8
        && (kh, kw, cfg.stride, cfg.pad) == (1, 1, 1, [0; 4])
        && (h * w) % 4 == 0;
    let subgroup = three || three_s2 || (sub8 && cout >= 8);
    let shader = if subgroup {
        "conv2d_subgroup"
    } else {
        "conv2d"
    };
    let tiled = !sub8 && cout >= TILED_FROM;
    let (tiled_entry, tile) = matmul::portable_tile(1, cout, oh * ow);
    let entry = if three {
        "main3"
    } else if three_s2 {
        "main3s2"
    } else if one {
        "main1"
    } else if tiled {
        tiled_entry
    } else {
        "main"
    };
    let mut key = KernelKey::new(shader, entry)
        .with("W_F16", is_f16(g.dtype(weight)))
        .with("ACT", cfg.act.code());
    let oc_tile = if three || three_s2 {
        VEC3_OC_TILE
    } else {
        SUBGROUP_OC_TILE
    };
    if three_s2 {
        key = key.with("PAD_L1", cfg.pad[2] as f64);
    } else if tiled {
        key = key.with("KH", kh as f64).with("KW", kw as f64);
    } else if subgroup && !three && !one {
        key = key.with("STRIDE1", (cfg.stride == 1) as u32 as f64);
    }
    // Output tiles of one channel group: 4 rows × 4 columns (`main3`, `main3s2`), 16 pixels
    // (`main1`) or 4 rows × 1 column.
    let tiles = if three {
        (oh as u64).div_ceil(ROW_TILE) * (w / 4) as u64
    } else if three_s2 {
        (oh as u64).div_ceil(ROW_TILE) * (ow / 4) as u64
    } else if one {
        ((oh * ow) as u64).div_ceil(16)
    } else {
        (oh as u64).div_ceil(ROW_TILE) * ow as u64
    };
    // The subgroup kernels' tiles per workgroup: one subgroup's 8 where a picture has
    // fewer tiles than 64 lanes would cover.
    let lanes = if tiles < 4 * WORKGROUP {
        SUBGROUP_LANES
    } else {
        WORKGROUP
    };
    if subgroup {
        key = key.with("LANES", lanes as f64);
    }
    let out_chunks = channel_chunks(g.gpu, cout, 4 * (oh * ow) as u64)?;
    // Split-K (src/ops/split_k.rs) where `tiled`'s tiles alone would leave a GPU's
    // units idle: one window each way, so that a split's K is the convolution's.
    let (splits, k_split) = if entry == "tiled" && in_chunks.len() == 1 && out_chunks.len() == 1 {
        let tiles = (cout as u64).div_ceil(tile) * ((oh * ow) as u64).div_ceil(tile);
        split_k::plan(tiles, k_len, TILED_STEP)
    } else {
        (1, k_len)
    };
    let slices = (splits > 1).then(|| g.intermediate(&[splits, cout, oh, ow], DType::F32));
    if slices.is_some() {
        key = key.with("SPLIT_K", 1.0);
    }
    let (wv, bv) = (g.view(weight)?, g.view(bias)?);
    for oc in &out_chunks {
        for (i, ic) in in_chunks.iter().enumerate() {
            let params = Params {
                cin: u32_of(ic.len(), "conv2d channels")?,
                h: u32_of(h, "height")?,
                w: u32_of(w, "width")?,
                cout: u32_of(oc.len(), "conv2d channels")?,
                oh: oh as u32,
                ow: ow as u32,
                kh: kh as u32,
                kw: kw as u32,
                stride: cfg.stride as u32,
                pad_t: cfg.pad[0] as u32,
                pad_l: cfg.pad[2] as u32,
                w_cin: cin as u32,
                oc_base: oc.start as u32,
                ic_base: ic.start as u32,
                activate: (i + 1 == in_chunks.len()) as u32,
                k_split: if splits > 1 {
                    k_split as u32
                } else {
                    u32_of(ic.len() * kh * kw, "conv2d K")?
                },
            };
            let xv = g.slab(x, ic)?;
            let yv = match slices {
                Some(slices) => g.view(slices)?,
                None => g.slab(y, oc)?,
            };
            let groups = if subgroup {
                (oc.len() as u64).div_ceil(oc_tile) * tiles.div_ceil(lanes)
            } else if tiled {
                (oc.len() as u64).div_ceil(tile) * ((oh * ow) as u64).div_ceil(tile) * splits as u64
            } else {
                ((oc.len() as u64).div_ceil(OC_TILE) * tiles).div_ceil(WORKGROUP)
            };
            let grid = g.grid(groups)?;
            let flops = 2 * (oc.len() * ic.len() * kh * kw * oh * ow) as u64;
            // Input windows after the first add to what the earlier ones left in y.
            let key = if i > 0 {
                key.clone().with("ACCUMULATE", 1.0)
            } else {
                key.clone()
            };
            g.dispatch(
                key,
                bytemuck::bytes_of(&params),
                vec![xv, wv, bv, yv],
                grid,
                flops,
            );
        }
    }
    if let Some(slices) = slices {
        split_k::sum_into(g, slices, Some((bias, oh * ow)), cfg.act, y)?;
    }
    Ok(y)
}

/// How a convolution runs as a product over its patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Product {
    /// Weight [cout, cin·kh·kw] as the broadcast kernel's rows, times the patches.
    Rows,
    /// patchesᵀ · weightᵀ on the portable kernel's `narrow` tiles, transposed back.
    Narrow,
}

/// Whether [`conv2d`] of `x` [cin, h, w] by a `weight` of this shape and dtype runs as a
/// product, and which. Two cases run as the product weight [cout, cin·kh·kw] · patches
/// [cin·kh·kw, pixels] plus one bias per row, on the broadcast matmul kernel (which reads
/// f32 or packed f16 weights as its rows): a 1×1 convolution, whose patches are x as it
/// lies (faster than `main1`, which keeps fused activations), and a picture too small
/// for the vector kernels' tiles (4 × 4 pixels per lane, 8 lanes per workgroup: the
/// UNet's 8×8 and 4×4 levels keep 2 or 1 of 8 lanes busy), whose patches im2col gathers.
/// On the portable kernels, a picture of so few pixels that `tiled`'s 64-pixel tiles
/// would do at least twice the work (the UNet's 4×4 level) runs as the Linear layer
/// patchesᵀ · weightᵀ + bias on `narrow`'s 16-row tiles.
fn product_route(
    gpu: &Gpu,
    [cin, h, w]: [usize; 3],
    wshape: &[usize],
    wdtype: DType,
    cfg: Conv2d,
) -> Result<Option<Product>> {
    let &[cout, _, kh, kw] = wshape else {
        return Err(Error::Shape(format!("conv2d weight {wshape:?} is not 4-D")));
    };
    let (oh, ow) = cfg.out_size(h, w, kh, kw)?;
    let (k_len, pixels) = (cin * kh * kw, oh * ow);
    let one_by_one = (kh, kw, cfg.stride, cfg.pad) == (1, 1, 1, [0; 4]);
    let largest =
        (4 * (cin * h * w).max(cout.max(k_len) * pixels) as u64).max(wdtype.bytes(cout * k_len));
    let narrow = !subgroups_of_8(gpu)
        && cout >= TILED_FROM
        && matmul::narrow_tile(pixels, cout)
        && largest <= gpu.max_binding();
    Ok(if cfg.act != Activation::None {
        None
    } else if narrow {
        Some(Product::Narrow)
    } else if (one_by_one || pixels <= SMALL_PICTURE)
        && matmul::broadcast_supported(gpu, k_len, pixels, largest)
    {
        Some(Product::Rows)
    } else {
        None
    })
}

/// The layout to upload a convolution's `weight` (of this shape and dtype) in, for an
/// input of `x_shape`: blocks of rows where it runs as the rows of a product over a
/// picture of at most `SMALL_PICTURE` (64) pixels, whose few columns leave the kernel
/// streaming its weight (see [`matmul::linear_weight_layout`]); else plain.
pub fn weight_layout(
    gpu: &Gpu,
    x_shape: &[usize],
    wshape: &[usize],
    wdtype: DType,
    cfg: Conv2d,
) -> Layout {
    let (&[cin, h, w], &[cout, _, kh, kw]) = (x_shape, wshape) else {
        return Layout::Plain;
    };
    let few_pixels = cfg
        .out_size(h, w, kh, kw)
        .is_ok_and(|(oh, ow)| oh * ow <= SMALL_PICTURE);
    match product_route(gpu, [cin, h, w], wshape, wdtype, cfg) {
        Ok(Some(Product::Rows)) if few_pixels => matmul::blocked_if_fits(cout),
        _ => Layout::Plain,
    }
}

/// CPU reference: `x` [cin, h, w], `weight` [cout, cin, kh, kw].
pub fn reference(
    x: &[f32],
    shape: [usize; 3],
    weight: &[f32],
    wshape: [usize; 4],
    bias: &[f32],
    cfg: Conv2d,
) -> Vec<f32> {
    let [cin, h, w] = shape;
    let [cout, _, kh, kw] = wshape;
    let (oh, ow) = cfg.out_size(h, w, kh, kw).expect("valid reference shape");
    let mut y = vec![0.0; cout * oh * ow];
    for oc in 0..cout {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias[oc] as f64;
                for ic in 0..cin {
                    for ky in 0..kh {
                        let iy = (oy * cfg.stride + ky) as isize - cfg.pad[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * cfg.stride + kx) as isize - cfg.pad[2] as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let xv = x[(ic * h + iy as usize) * w + ix as usize] as f64;
                            acc += xv * weight[((oc * cin + ic) * kh + ky) * kw + kx] as f64;
                        }
                    }
                }
                y[(oc * oh + oy) * ow + ox] = cfg.act.apply(acc as f32);
            }
        }
    }
    y
}
