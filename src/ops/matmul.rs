//! Matrix products: `linear` (x · wᵀ + b with PyTorch's Linear layout, f32 or packed f16
//! weights) and `matmul` (batched product of two activations, whose right operand is
//! transposed to the same [m, k] layout first, except on the broadcast kernel, which
//! reads it as it is). Adapters with 8-lane subgroups (lavapipe) get the broadcast kernel
//! of `matmul_subgroup.wgsl`, others the portable register-tiled ones (64 × 64 or, for
//! large products, 128 × 128 tiles: see `portable_tile`; 16 × 256 for very few rows:
//! see `narrow_tile`; K split across workgroups where the tiles are few: see
//! `split_k`); on the former a Linear layer of few tokens runs transposed (w · xᵀ,
//! stored as yᵀ), see `few_tokens`, and a batched matmul of small k on a tile whose lanes
//! split the columns, see `column_tile`. Rows past the binding limit are split into
//! windows.

use std::ops::Range;

use bytemuck::{Pod, Zeroable};

use super::conv2d::Activation;
use super::{is_f16, split_k, subgroups_of_8, transpose, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelKey};
use crate::graph::{DType, Graph, Layout, Tensor, View, ROW_BLOCK};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    k: u32,
    m: u32,
    batches: u32,
    x_batch: u32,
    w_batch: u32,
    y_batch: u32,
    /// 0: none, 1: one per column, 2: one per row (broadcast kernel only).
    bias_kind: u32,
    /// Elements of x, w and y before batch 0: windows start at the aligned offset at or
    /// below their first row.
    x_offset: u32,
    w_offset: u32,
    y_offset: u32,
    /// k per split of a split-K `tiled` or `narrow` (portable kernels only), else k.
    k_split: u32,
}

/// `x` [n, k] f32, `weight` [m, k] f32 or f16, `bias` \[m\] of the weight's dtype → [n, m].
pub fn linear(g: &mut Graph, x: Tensor, weight: Tensor, bias: Option<Tensor>) -> Result<Tensor> {
    let (&[n, _], &[m, _]) = (g.shape(x), g.shape(weight)) else {
        return Err(Error::Shape(format!(
            "linear needs x [n, k] and weight [m, k], got {:?} and {:?}",
            g.shape(x),
            g.shape(weight)
        )));
    };
    let y = g.intermediate(&[n, m], DType::F32);
    linear_into(g, x, weight, bias, y)?;
    Ok(y)
}

/// [`linear`] into the existing `y` [n, m] f32: an op that builds its result from row
/// blocks (the blocked attention) writes each block in place.
pub(crate) fn linear_into(
    g: &mut Graph,
    x: Tensor,
    weight: Tensor,
    bias: Option<Tensor>,
    y: Tensor,
) -> Result<()> {
    let [n, k, m, wk] = linear_dims(g, "linear", x, weight)?;
    let y_ok = g.shape(y) == [n, m] && g.dtype(y) == DType::F32;
    check_weights(g, x, weight, bias, wk == k && n * k * m > 0 && y_ok)?;
    if runs_transposed(g.gpu, n, k, m, g.bytes(weight)) {
        return weights_as_rows(g, weight, x, bias, y, false, true);
    }
    product(g, linear_operands(x, weight, bias, y, [n, k, m]))
}

/// A Linear layer's product: `x` [n, k] · `weight` [m, k]ᵀ + `bias` into `y` [n, m].
fn linear_operands(
    x: Tensor,
    weight: Tensor,
    bias: Option<Tensor>,
    y: Tensor,
    [n, k, m]: [usize; 3],
) -> Operands {
    Operands {
        x,
        w: weight,
        bias,
        y,
        batches: 1,
        rows: n,
        k,
        m,
        w_batched: false,
        w_kmajor: false,
        bias_per_row: false,
        y_transposed: false,
    }
}

/// Whether a Linear layer of `n` tokens, `k` inputs and `m` outputs, with a weight of
/// `weight_bytes`, runs transposed (see [`few_tokens`]).
fn runs_transposed(gpu: &Gpu, n: usize, k: usize, m: usize, weight_bytes: u64) -> bool {
    let largest = weight_bytes.max(4 * (n * k.max(m)) as u64);
    few_tokens(n, m) && transposed_kernel(gpu, k) && largest <= gpu.max_binding()
}

/// The layout to upload a Linear layer's `weight` [m, k] in for `n` tokens: blocks of
/// rows where it runs transposed, over so few columns that the kernel streams it.
pub fn linear_weight_layout(gpu: &Gpu, n: usize, shape: &[usize], dtype: DType) -> Layout {
    match *shape {
        [m, k] if runs_transposed(gpu, n, k, m, dtype.bytes(m * k)) => blocked_if_fits(m),
        _ => Layout::Plain,
    }
}

/// [`Layout::RowBlocked`] for a weight of `rows` rows that fill whole blocks (a product
/// that runs a weight as its rows reads the blocked layout on lavapipe 1.3 to 1.7 times
/// as fast where it has few columns: the UNet's 8×8 and 4×4 levels' 3×3 convolutions
/// 42–43 → 54–56 % and 25–26 → 41–43 % of the FMA probe, its 8×8 level's feed-forward
/// Linear 43–45 → 58–61 %, BENCHMARKS.md; over many columns, a 1×1 convolution of
/// 128 × 128 pixels, it read slower, 52–54 → 47–48 %).
pub(crate) fn blocked_if_fits(rows: usize) -> Layout {
    if rows.is_multiple_of(ROW_BLOCK) {
        Layout::RowBlocked
    } else {
        Layout::Plain
    }
}

/// Whether a Linear layer of `n` tokens and `m` outputs runs transposed, as w · xᵀ:
/// its tokens then fill the broadcast kernel's columns and its weight rows a full-height
/// tile, where `n` rows alone would take a short one. The UNet's 8×8 level (64 tokens):
/// [64, 1280] × [10240, 1280]ᵀ 33 → 28 ms, [64, 5120] × [1280, 5120]ᵀ 16 → 13.7 ms,
/// with f16 weights 30–42 → 25–38 ms (alternating runs of both builds, see BENCHMARKS.md).
/// The scalar stores cost little beside k FMAs per output, and take any `n`: the 77
/// tokens of the text context too. (`m` a multiple of 4 keeps y whole vec4s.)
fn few_tokens(n: usize, m: usize) -> bool {
    (16..128).contains(&n) && m >= 128 && m.is_multiple_of(4)
}

/// A Linear layer over the pixels of an image: `x` [k, n] (channels × pixels) → [n, m],
/// xᵀ · wᵀ + b, the tokens of a transformer's `proj_in`. On the broadcast kernel x is
/// read as it lies (its [k, m] operand) and the result stored transposed, with the
/// weights as rows; elsewhere x is transposed first.
pub fn linear_from_channels(
    g: &mut Graph,
    x: Tensor,
    weight: Tensor,
    bias: Option<Tensor>,
) -> Result<Tensor> {
    let (&[k, n], &[m, wk]) = (g.shape(x), g.shape(weight)) else {
        return Err(Error::Shape(format!(
            "linear_from_channels needs x [k, n] and weight [m, k], got {:?} and {:?}",
            g.shape(x),
            g.shape(weight)
        )));
    };
    check_weights(g, x, weight, bias, wk == k && n * k * m > 0)?;
    let largest = g.bytes(x).max(g.bytes(weight)).max(4 * (n * m) as u64);
    if !broadcast_kernel(g.gpu, k, n) || largest > g.gpu.max_binding() {
        let tokens = transpose::transpose(g, x)?;
        return linear(g, tokens, weight, bias);
    }
    let y = g.intermediate(&[n, m], DType::F32);
    weights_as_rows(g, weight, x, bias, y, true, true)?;
    Ok(y)
}

/// A Linear layer whose result becomes an image: `x` [n, k] (tokens) → [m, n]
/// (channels × pixels), (x · wᵀ + b)ᵀ, a transformer's `proj_out`. On the broadcast
/// kernel that is w · xᵀ with the weights as rows; elsewhere the Linear's result is
/// transposed.
pub fn linear_to_channels(
    g: &mut Graph,
    x: Tensor,
    weight: Tensor,
    bias: Option<Tensor>,
) -> Result<Tensor> {
    // Shapes are checked by the _into form.
    let rows = |t: Tensor| g.shape(t).first().copied().unwrap_or(0);
    let y = g.intermediate(&[rows(weight), rows(x)], DType::F32);
    linear_to_channels_into(g, x, weight, bias, y)?;
    Ok(y)
}

/// [`linear_to_channels`] into `y` [m, n] (a view of an image [m, h, w]).
pub fn linear_to_channels_into(
    g: &mut Graph,
    x: Tensor,
    weight: Tensor,
    bias: Option<Tensor>,
    y: Tensor,
) -> Result<()> {
    let [n, k, m, wk] = linear_dims(g, "linear_to_channels", x, weight)?;
    check_weights(
        g,
        x,
        weight,
        bias,
        wk == k && n * k * m > 0 && g.shape(y) == [m, n],
    )?;
    let largest = g.bytes(x).max(g.bytes(weight)).max(4 * (n * m) as u64);
    if !broadcast_kernel(g.gpu, k, n) || largest > g.gpu.max_binding() {
        let tokens = linear(g, x, weight, bias)?;
        return transpose::transpose_into(g, tokens, y);
    }
    weights_as_rows(g, weight, x, bias, y, false, false)
}

/// `[n, k, m, wk]` of a Linear's `x` [n, k] and `weight` [m, wk], or which one of
/// `op`'s operands is not a matrix.
fn linear_dims(g: &Graph, op: &str, x: Tensor, weight: Tensor) -> Result<[usize; 4]> {
    match (g.shape(x), g.shape(weight)) {
        (&[n, k], &[m, wk]) => Ok([n, k, m, wk]),
        (xs, ws) => Err(Error::Shape(format!(
            "{op} needs x [n, k] and weight [m, k], got {xs:?} and {ws:?}"
        ))),
    }
}

/// Non-empty shapes that agree (`shapes_ok`), f32 activations, f32 or f16 weights, a
/// bias of \[m\] in the weight's dtype.
fn check_weights(
    g: &Graph,
    x: Tensor,
    weight: Tensor,
    bias: Option<Tensor>,
    shapes_ok: bool,
) -> Result<()> {
    let m = g.shape(weight)[0];
    let bias_ok = bias.is_none_or(|b| g.shape(b) == [m] && g.dtype(b) == g.dtype(weight));
    if !shapes_ok || g.dtype(x) != DType::F32 || g.dtype(weight) == DType::U32 || !bias_ok {
        return Err(Error::Shape(format!(
            "linear: x {:?} {:?}, weight {:?} {:?}, bias {:?} disagree",
            g.shape(x),
            g.dtype(x),
            g.shape(weight),
            g.dtype(weight),
            bias.map(|b| g.shape(b).to_vec())
        )));
    }
    Ok(())
}

/// Batched `a` [batch, n, k] · `b` [batch, k, m] → [batch, n, m], all f32.
pub fn matmul(g: &mut Graph, a: Tensor, b: Tensor) -> Result<Tensor> {
    let (&[batches, n, k], &[bb, bk, m]) = (g.shape(a), g.shape(b)) else {
        return Err(Error::Shape(format!(
            "matmul needs [batch, n, k] and [batch, k, m], got {:?} and {:?}",
            g.shape(a),
            g.shape(b)
        )));
    };
    if bb != batches
        || bk != k
        || batches * n * k * m == 0
        || g.dtype(a) != DType::F32
        || g.dtype(b) != DType::F32
    {
        return Err(Error::Shape(format!(
            "matmul: {:?} and {:?} disagree",
            g.shape(a),
            g.shape(b)
        )));
    }
    let w_kmajor = broadcast_kernel(g.gpu, k, m);
    let w = if w_kmajor {
        b
    } else {
        transpose::transpose_batched(g, b)?
    };
    let y = g.intermediate(&[batches, n, m], DType::F32);
    product(
        g,
        Operands {
            x: a,
            w,
            bias: None,
            y,
            batches,
            rows: n,
            k,
            m,
            w_batched: true,
            w_kmajor,
            bias_per_row: false,
            y_transposed: false,
        },
    )?;
    Ok(y)
}

/// Whether the subgroup-broadcast kernel runs a product with this `k` and `m` whose
/// operands and result take at most `largest` bytes each: [`matmul_row_bias_into`] runs
/// only there, and [`linear`] runs there at its best.
pub(crate) fn broadcast_supported(gpu: &Gpu, k: usize, m: usize, largest: u64) -> bool {
    broadcast_kernel(gpu, k, m) && largest <= gpu.max_binding()
}

/// `a` [n, k] · `b` [k, m] + `bias` [n], one per row, into `y` (n·m elements, such as
/// the [n, h, w] picture of m pixels): a 1×1 convolution (or one over im2col patches),
/// with `a` its weights (f32 or packed f16, the bias alike) and `b` its pixels (f32) as
/// they lie. Only where [`broadcast_supported`] says so.
pub(crate) fn matmul_row_bias_into(
    g: &mut Graph,
    a: Tensor,
    b: Tensor,
    bias: Tensor,
    y: Tensor,
) -> Result<()> {
    let (&[n, k], &[bk, m]) = (g.shape(a), g.shape(b)) else {
        return Err(Error::Shape(format!(
            "matmul_row_bias needs [n, k] and [k, m], got {:?} and {:?}",
            g.shape(a),
            g.shape(b)
        )));
    };
    let dtypes_ok =
        g.dtype(b) == DType::F32 && g.dtype(a) != DType::U32 && g.dtype(bias) == g.dtype(a);
    let largest = g.bytes(a).max(g.bytes(b)).max(4 * (n * m) as u64);
    if bk != k
        || g.shape(bias) != [n]
        || !dtypes_ok
        || n * k * m == 0
        || g.len(y) != n * m
        || !broadcast_supported(g.gpu, k, m, largest)
    {
        return Err(Error::Shape(format!(
            "matmul_row_bias: {:?} · {:?} + {:?} is not supported here",
            g.shape(a),
            g.shape(b),
            g.shape(bias)
        )));
    }
    let y = g.reshape(y, &[n, m])?;
    weights_as_rows(g, a, b, Some(bias), y, true, false)
}

/// `weight` [m, k] as the broadcast kernel's rows, with a bias per row, times `other`:
/// tokens [n, k], or with `kmajor` an image's channels × pixels [k, n], as they lie. y is
/// [m, n], or with `y_transposed` [n, m].
fn weights_as_rows(
    g: &mut Graph,
    weight: Tensor,
    other: Tensor,
    bias: Option<Tensor>,
    y: Tensor,
    kmajor: bool,
    y_transposed: bool,
) -> Result<()> {
    let (&[m, k], &[a, b]) = (g.shape(weight), g.shape(other)) else {
        return Err(Error::Shape("weights as rows need two matrices".into()));
    };
    product(
        g,
        Operands {
            x: weight,
            w: other,
            bias,
            y,
            batches: 1,
            rows: m,
            k,
            m: if kmajor { b } else { a },
            w_batched: false,
            w_kmajor: kmajor,
            bias_per_row: true,
            y_transposed,
        },
    )
}

struct Operands {
    x: Tensor,
    w: Tensor,
    bias: Option<Tensor>,
    y: Tensor,
    batches: usize,
    rows: usize,
    k: usize,
    m: usize,
    /// One matrix per batch (matmul) rather than one shared weight (linear).
    w_batched: bool,
    /// `w` is [k, m] rather than [m, k] (broadcast kernel only).
    w_kmajor: bool,
    /// The bias is one per row of `x` rather than one per column.
    bias_per_row: bool,
    /// y is [m, rows] rather than [rows, m] (broadcast kernel only).
    y_transposed: bool,
}

/// The broadcast kernel's tile for a product of `rows` × `m` (entry `r{R}c{C}` of
/// shaders/matmul_subgroup.wgsl, R rows × C columns per lane, 8 lanes): its entry, rows
/// and columns per workgroup. 64 columns feed every loaded x value to twice the FMAs of
/// 32 (34 → 37 % of the FMA probe at [4096, 320] × [320, 320]ᵀ, before the biases were
/// hoisted out of the stores: see BENCHMARKS.md); short inputs (64 tokens
/// at the UNet's 8×8 level, 16 at 4×4, the one row of every resnet's time-embedding
/// projection, a small picture's patches) take shorter tiles and narrow ones (16 pixels at its 4×4 level, as im2col
/// products) narrower, where a large tile would mostly idle.
fn broadcast_tile(rows: usize, m: usize) -> (&'static str, u64, u64) {
    match (rows, m) {
        (_, ..=16) => ("r16c16", 128, 16),
        (..=8, _) => ("r1c64", 8, 64),
        (..=16, _) => ("r2c64", 16, 64),
        (..=32, _) => ("r4c64", 32, 64),
        (..=127, _) => ("r8c64", 64, 64),
        _ => ("r16c64", 128, 64),
    }
}

/// The batched matmul's tile whose lanes split the columns (entry `cols_r64c32` of
/// shaders/matmul_columns_subgroup.wgsl: 64 rows shared by the 8 lanes, 32 columns
/// each, in pairs of quads read and written 32 bytes at a time): its entry, rows and
/// columns per workgroup.
const COLUMN_TILE: (&str, u64, u64) = ("cols_r64c32", 64, 256);

/// Whether a product takes [`COLUMN_TILE`] rather than [`broadcast_tile`]'s: a batched
/// matmul read as it lies ([k, m] right operand, no bias) with k at most 256, whose tile
/// fills. A row tile's vec4 store writes one column quad of 8 rows, which lavapipe takes
/// at about 2.4 ns a float, the column tile's adjacent quads of one row at about 1;
/// with a stored float costing about 40 FMAs there, that matters at small k. In
/// alternating runs (BENCHMARKS.md) 8 × [1024, 64] · [64, 1024] went from 29–35 to 42–46 %
/// of the FMA probe while the machine was fast, from 26–34 to 29–36 % while it was slow;
/// reading and writing pairs of quads took its median from 38.7 to 40.75 %.
/// The 1×1 convolutions' products of small k gained too (256 → 128 over 256 × 256
/// pixels: 40–47 → 49–52 %) but stay on the row tiles: the column tile's 512
/// accumulators per lane take lavapipe tens of seconds to compile on a cold cache,
/// far more than such a convolution saves in a picture (about 20 ms a run at 256²).
/// m must be a multiple of 8: the tile reads the weights' rows and writes y's 8 columns
/// at a time.
fn column_tile(o: &Operands) -> bool {
    o.w_batched
        && o.w_kmajor
        && o.bias.is_none()
        && o.k <= 256
        && o.rows >= 64
        && o.m >= 256
        && o.m.is_multiple_of(8)
}

/// Tiles of 128 × 128 from which the portable kernel takes them (`tiled128`, 8 × 8
/// outputs per invocation) rather than 64 × 64 ones (`tiled`, 4 × 4): the larger tile
/// needs half the workgroup-memory reads per FMA, but a quarter as many workgroups, and
/// a GPU of 100-odd compute units holds two or three of its workgroups at a time on
/// each, so a smaller grid would leave units idle (the UNet's 320 channels at 64 × 64,
/// 96 such tiles, stay on `tiled`; the VAE's 512 at 128 × 128, 512 tiles, take it).
const WIDE_FROM_TILES: u64 = split_k::FILL_WORKGROUPS;
/// k per staging step of `tiled` and of `narrow`, of which a split-K run is a multiple.
const TILED_STEP: usize = 16;
const NARROW_STEP: usize = 8;

/// The portable kernel's entry and tile side for `batches` products of `rows` × `m`:
/// `tiled128` for at least [`WIDE_FROM_TILES`] tiles, unless its tiles' padding would
/// add more than a quarter to the work of 64 × 64 ones (32 channels would take 4 times
/// their FMAs; SD's channel counts, multiples of 128 or of 320, at most a fifth).
pub(crate) fn portable_tile(batches: usize, rows: usize, m: usize) -> (&'static str, u64) {
    let (rows, m) = (rows as u64, m as u64);
    let padded = |side: u64| rows.div_ceil(side) * side * m.div_ceil(side) * side;
    let wide_tiles = batches as u64 * rows.div_ceil(128) * m.div_ceil(128);
    if wide_tiles >= WIDE_FROM_TILES && 4 * padded(128) <= 5 * padded(64) {
        ("tiled128", 128)
    } else {
        ("tiled", 64)
    }
}

/// Whether the portable kernel takes `narrow` (16 × 256 tiles) for a product of `rows`
/// × `m`: where 64 × 64 tiles would do at least twice its padded work (16 tokens or
/// pixels at the UNet's 4×4 level, one-row time-embedding projections). Not for more
/// rows: per FMA it loads twice what a 64 × 64 tile does.
pub(crate) fn narrow_tile(rows: usize, m: usize) -> bool {
    let (rows, m) = (rows as u64, m as u64);
    let padded = |r: u64, c: u64| rows.div_ceil(r) * r * m.div_ceil(c) * c;
    2 * padded(16, 256) <= padded(64, 64)
}

/// Whether the subgroup-broadcast kernel applies: it assumes subgroups of exactly 8
/// lanes, reads x and the weight rows 8 k at a time and writes y in vec4s.
fn broadcast_kernel(gpu: &Gpu, k: usize, m: usize) -> bool {
    transposed_kernel(gpu, k) && m.is_multiple_of(4)
}

/// Whether the broadcast kernel applies to a product stored transposed, whose stores are
/// scalars: any m.
fn transposed_kernel(gpu: &Gpu, k: usize) -> bool {
    subgroups_of_8(gpu) && k.is_multiple_of(8)
}

fn product(g: &mut Graph, o: Operands) -> Result<()> {
    let (wdt, xdt) = (g.dtype(o.w), g.dtype(o.x));
    // Scalar stores (Y_T) take any m, unless [k, m] weights are read in vec4s of columns.
    let broadcast = if o.y_transposed && !o.w_kmajor {
        transposed_kernel(g.gpu, o.k)
    } else {
        broadcast_kernel(g.gpu, o.k, o.m)
    };
    let special = o.w_kmajor || o.bias_per_row || o.y_transposed || xdt != DType::F32;
    if special && (!broadcast || wdt != DType::F32) {
        return Err(Error::Shape(
            "[k, m] weights, per-row biases, transposed results and f16 left operands need \
             the broadcast kernel and an f32 right operand"
                .into(),
        ));
    }
    let columns = broadcast && column_tile(&o);
    let blocked = g.layout(o.x) == Layout::RowBlocked;
    let limit = g.gpu.max_binding();
    let whole = [o.x, o.w, o.y].iter().all(|&t| g.bytes(t) <= limit);
    let row_tiles = broadcast && !columns && whole && o.batches == 1;
    if g.layout(o.w) != Layout::Plain || blocked && !row_tiles {
        return Err(Error::Shape(
            "weights in blocks of rows are read only as the rows of a row tile of the \
             broadcast kernel, in one binding"
                .into(),
        ));
    }
    let (key, rows_per_group, cols_per_group) = if columns {
        let (entry, rows, cols) = COLUMN_TILE;
        (KernelKey::new("matmul_columns_subgroup", entry), rows, cols)
    } else if broadcast {
        let (entry, rows, cols) = broadcast_tile(o.rows, o.m);
        (KernelKey::new("matmul_subgroup", entry), rows, cols)
    } else if narrow_tile(o.rows, o.m) {
        (KernelKey::new("matmul", "narrow"), 16, 256)
    } else {
        let (entry, side) = portable_tile(o.batches, o.rows, o.m);
        (KernelKey::new("matmul", entry), side, side)
    };
    let mut key = key.with("W_F16", is_f16(wdt));
    if o.w_kmajor && !columns {
        key = key.with("W_KMAJOR", 1.0);
    }
    if o.y_transposed {
        key = key.with("Y_T", 1.0);
    }
    if xdt == DType::F16 {
        key = key.with("X_F16", 1.0);
    }
    if blocked {
        key = key.with("X_BLOCKED", 1.0);
    }
    let (k, m) = (o.k, o.m);
    let wlen = m * k;
    let flops_per_row = 2 * (k * m) as u64;
    let mut params = Params {
        rows: u32_of(o.rows, "matmul rows")?,
        k: u32_of(k, "matmul k")?,
        m: u32_of(m, "matmul m")?,
        batches: u32_of(o.batches, "matmul batches")?,
        x_batch: u32_of(o.rows * k, "matmul batch")?,
        w_batch: if o.w_batched {
            u32_of(wlen, "matmul batch")?
        } else {
            0
        },
        y_batch: u32_of(o.rows * m, "matmul batch")?,
        bias_kind: match (o.bias, o.bias_per_row) {
            (None, _) => 0,
            (Some(_), false) => 1,
            (Some(_), true) => 2,
        },
        x_offset: 0,
        w_offset: 0,
        y_offset: 0,
        k_split: u32_of(k, "matmul k")?,
    };
    // The broadcast kernel binds y twice: as vec2<u64> for its stores of four columns
    // and as f32 for the scalar stores of a transposed result. The column tile has no bias.
    let bindings = |x: View, w: View, bias: View, y: View| {
        if columns {
            return vec![x, w, y];
        }
        let mut views = vec![x, w, bias, y];
        if broadcast {
            views.push(y);
        }
        views
    };
    // The bias binding is read only when bias_kind is set; the weight stands in otherwise.
    let bias_of = |g: &Graph, w| match o.bias {
        Some(b) => g.view(b),
        None => Ok(w),
    };
    if whole {
        let tiles = o.batches as u64
            * (o.rows as u64).div_ceil(rows_per_group)
            * (m as u64).div_ceil(cols_per_group);
        // Split-K (src/ops/split_k.rs) where the portable kernel's tiles alone would
        // leave a GPU's units idle: the slices take the sums, the bias waits for their sum.
        let (splits, k_split) = match key.entry {
            "tiled" => split_k::plan(tiles, k, TILED_STEP),
            "narrow" => split_k::plan(tiles, k, NARROW_STEP),
            _ => (1, k),
        };
        let slices = (splits > 1).then(|| g.intermediate(&[splits, g.len(o.y)], DType::F32));
        if slices.is_some() {
            params.k_split = k_split as u32;
            params.bias_kind = 0;
        }
        let wv = g.view(o.w)?;
        let yv = g.view(slices.unwrap_or(o.y))?;
        let views = bindings(g.view(o.x)?, wv, bias_of(g, wv)?, yv);
        let grid = g.grid(tiles * splits as u64)?;
        g.dispatch(
            key,
            bytemuck::bytes_of(&params),
            views,
            grid,
            o.batches as u64 * o.rows as u64 * flops_per_row,
        );
        if let Some(slices) = slices {
            split_k::sum_into(g, slices, o.bias.map(|b| (b, 1)), Activation::None, o.y)?;
        }
        return Ok(());
    }
    // Too large for one binding: one batch and one run of rows per dispatch, each
    // operand's window starting where its batch or run does (or aligned just below).
    let wbytes = g.dtype(o.w).bytes(wlen);
    if o.bias_per_row {
        return Err(Error::TooLarge {
            what: "a product with per-row biases".into(),
            needed: g.bytes(o.x).max(g.bytes(o.w)).max(g.bytes(o.y)),
            limit,
        });
    }
    let runs = row_runs(g, o.rows, 4 * k.max(m) as u64)?;
    for b in 0..o.batches {
        let (wv, w_head) = if o.w_batched {
            g.window_from(o.w, b as u64 * wbytes, wbytes)?
        } else {
            (g.view(o.w)?, 0)
        };
        params.w_offset = (w_head / 4) as u32;
        for run in &runs {
            let first = (b * o.rows + run.start) as u64;
            let (xv, x_head) =
                g.window_from(o.x, 4 * first * k as u64, 4 * (run.len() * k) as u64)?;
            let (yv, y_head) =
                g.window_from(o.y, 4 * first * m as u64, 4 * (run.len() * m) as u64)?;
            params.x_offset = (x_head / 4) as u32;
            params.y_offset = (y_head / 4) as u32;
            params.rows = run.len() as u32;
            params.batches = 1;
            let groups =
                (run.len() as u64).div_ceil(rows_per_group) * (m as u64).div_ceil(cols_per_group);
            let grid = g.grid(groups)?;
            let views = bindings(xv, wv, bias_of(g, wv)?, yv);
            g.dispatch(
                key.clone(),
                bytemuck::bytes_of(&params),
                views,
                grid,
                run.len() as u64 * flops_per_row,
            );
        }
    }
    Ok(())
}

/// Runs of `rows` rows of at most `row_bytes` each whose [`Graph::window_from`]
/// windows fit one binding.
fn row_runs(g: &Graph, rows: usize, row_bytes: u64) -> Result<Vec<Range<usize>>> {
    let per_run = (g.window_from_room() / row_bytes.max(1)) as usize;
    if per_run == 0 {
        return Err(Error::TooLarge {
            what: "one matrix row".into(),
            needed: row_bytes,
            limit: g.window_from_room(),
        });
    }
    Ok((0..rows)
        .step_by(per_run)
        .map(|s| s..(s + per_run).min(rows))
        .collect())
}

/// CPU reference of [`linear`]: `x` [n, k], `w` [m, k], `bias` \[m\].
pub fn linear_reference(
    x: &[f32],
    n: usize,
    k: usize,
    w: &[f32],
    m: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = vec![0.0; n * m];
    for r in 0..n {
        for c in 0..m {
            let dot: f64 = (0..k)
                .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                .sum();
            y[r * m + c] = (dot + bias.map_or(0.0, |b| b[c] as f64)) as f32;
        }
    }
    y
}

/// CPU reference of [`matmul`]: `a` [batch, n, k] · `b` [batch, k, m].
pub fn matmul_reference(
    a: &[f32],
    b: &[f32],
    batches: usize,
    n: usize,
    k: usize,
    m: usize,
) -> Vec<f32> {
    let mut y = vec![0.0; batches * n * m];
    for bi in 0..batches {
        for r in 0..n {
            for c in 0..m {
                let dot: f64 = (0..k)
                    .map(|i| a[(bi * n + r) * k + i] as f64 * b[(bi * k + i) * m + c] as f64)
                    .sum();
                y[(bi * n + r) * m + c] = dot as f32;
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuOptions;
    use crate::rng::Rng;

    /// A product's operands as host data, and the result its CPU reference gives.
    struct Case {
        x: (Vec<usize>, Vec<f32>),
        w: (Vec<usize>, Vec<f32>),
        bias: Option<Vec<f32>>,
        want: Vec<f32>,
        /// The kernel (`shader.entry`) this case is for.
        kernel: &'static str,
    }

    /// `batches` × [rows, k] · [k, m] as the column tile reads it: [k, m] operands.
    fn batched_kmajor(batches: usize, rows: usize, k: usize, m: usize, rng: &mut Rng) -> Case {
        let (a, b) = (
            rng.vec(batches * rows * k, 1.0),
            rng.vec(batches * k * m, 1.0),
        );
        Case {
            want: matmul_reference(&a, &b, batches, rows, k, m),
            x: (vec![batches, rows, k], a),
            w: (vec![batches, k, m], b),
            bias: None,
            kernel: "matmul_columns_subgroup.cols_r64c32",
        }
    }

    /// A Linear layer of `n` tokens: x [n, k] · w [m, k]ᵀ + b.
    fn linear_case(n: usize, k: usize, m: usize, kernel: &'static str, rng: &mut Rng) -> Case {
        let (x, w, b) = (rng.vec(n * k, 1.0), rng.vec(m * k, 1.0), rng.vec(m, 1.0));
        Case {
            want: linear_reference(&x, n, k, &w, m, Some(&b)),
            x: (vec![n, k], x),
            w: (vec![m, k], w),
            bias: Some(b),
            kernel,
        }
    }

    /// Runs `case` as `operands` builds it, with guarded stores (see
    /// [`Graph::guard_stores`]): a store past the result's end shows, where lavapipe
    /// would drop it at the binding's end, or a later batch's stores cover it inside
    /// one tensor (it runs workgroups in order).
    fn check_guarded(
        gpu: &Gpu,
        case: Case,
        operands: impl Fn(Tensor, Tensor, Option<Tensor>, Tensor) -> Operands,
    ) {
        let mut g = Graph::new(gpu);
        g.guard_stores();
        let x = g.input_f32(&case.x.0, &case.x.1).unwrap();
        let w = g.input_f32(&case.w.0, &case.w.1).unwrap();
        let bias = case
            .bias
            .as_ref()
            .map(|b| g.input_f32(&[b.len()], b).unwrap());
        let y = g.intermediate(&[case.want.len()], DType::F32);
        product(&mut g, operands(x, w, bias, y)).unwrap();
        let (out, report) = g.run_profiled(&[y]).unwrap();
        let out = out[0].f32();
        let kernels: Vec<&String> = report.kernels.keys().collect();
        assert_eq!(kernels, [case.kernel]);
        let err = out
            .iter()
            .zip(&case.want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "{}: result off by {err}", case.kernel);
        assert_eq!(
            report.stray_bytes, 0,
            "{} stored past its result",
            case.kernel
        );
    }

    /// Every tile's stores stop at the result's last row and column, where rows and
    /// columns are no multiple of the tile's.
    #[test]
    fn stores_stay_inside_the_result() {
        let mut rng = Rng::new(7);
        let gpu = Gpu::new(&GpuOptions::default()).unwrap();
        assert!(
            subgroups_of_8(&gpu),
            "these kernels need 8-lane subgroups (lavapipe has them)"
        );
        // Two batches of 70 rows, 264 columns: the column tile's 64 × 256 leaves rows
        // 70..128 and columns 264..512 of the last tile outside.
        let case = batched_kmajor(2, 70, 64, 264, &mut rng);
        check_guarded(&gpu, case, |x, w, _, y| Operands {
            x,
            w,
            bias: None,
            y,
            batches: 2,
            rows: 70,
            k: 64,
            m: 264,
            w_batched: true,
            w_kmajor: true,
            bias_per_row: false,
            y_transposed: false,
        });
        // A Linear of 77 tokens stored transposed (w · xᵀ, the text context's keys):
        // the last column quad holds one token, and the scalar stores of the other three
        // would land past the result.
        let case = linear_case(77, 64, 136, "matmul_subgroup.r16c64", &mut rng);
        check_guarded(&gpu, case, |x, w, bias, y| Operands {
            x: w,
            w: x,
            bias,
            y,
            batches: 1,
            rows: 136,
            k: 64,
            m: 77,
            w_batched: false,
            w_kmajor: false,
            bias_per_row: true,
            y_transposed: true,
        });
        let case = linear_case(70, 64, 132, "matmul_subgroup.r8c64", &mut rng);
        check_guarded(&gpu, case, |x, w, bias, y| {
            linear_operands(x, w, bias, y, [70, 64, 132])
        });
    }

    /// The portable kernels' tiles, likewise.
    #[test]
    fn portable_stores_stay_inside_the_result() {
        let mut rng = Rng::new(8);
        let gpu = Gpu::new(&GpuOptions {
            portable_kernels: true,
            ..GpuOptions::default()
        })
        .unwrap();
        for (n, k, m, kernel) in [
            (70, 24, 132, "matmul.tiled"),
            (10, 24, 300, "matmul.narrow"),
            (2000, 8, 2100, "matmul.tiled128"),
        ] {
            let case = linear_case(n, k, m, kernel, &mut rng);
            check_guarded(&gpu, case, |x, w, bias, y| {
                linear_operands(x, w, bias, y, [n, k, m])
            });
        }
    }
}
