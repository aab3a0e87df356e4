//! Elementwise ops: unary activations and scaling, binary ops with broadcasting
//! (same shape, per channel, scalar), and GEGLU. Tensors past the binding limit are
//! processed in aligned windows.

use bytemuck::{Pod, Zeroable};

use super::u32_of;
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Silu,
    Relu,
    /// Exact (erf) GELU, as PyTorch's default.
    Gelu,
    Sigmoid,
    /// `alpha · x + beta`.
    Affine(f32, f32),
}

impl Unary {
    fn code(self) -> (f64, f32, f32) {
        match self {
            Unary::Silu => (0.0, 0.0, 0.0),
            Unary::Relu => (1.0, 0.0, 0.0),
            Unary::Gelu => (2.0, 0.0, 0.0),
            Unary::Sigmoid => (3.0, 0.0, 0.0),
            Unary::Affine(a, b) => (4.0, a, b),
        }
    }

    pub fn apply(self, v: f32) -> f32 {
        let v64 = v as f64;
        (match self {
            Unary::Silu => v64 / (1.0 + (-v64).exp()),
            Unary::Relu => v64.max(0.0),
            Unary::Gelu => gelu(v64),
            Unary::Sigmoid => 1.0 / (1.0 + (-v64).exp()),
            Unary::Affine(a, b) => a as f64 * v64 + b as f64,
        }) as f32
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Binary {
    /// `alpha · a + beta · b`.
    Axpby(f32, f32),
    Mul,
    /// `a · sigmoid(b)`: compressai's attention-block gate.
    Gate,
}

impl Binary {
    pub const ADD: Binary = Binary::Axpby(1.0, 1.0);

    fn code(self) -> (f64, f32, f32) {
        match self {
            Binary::Axpby(a, b) => (0.0, a, b),
            Binary::Mul => (1.0, 0.0, 0.0),
            Binary::Gate => (2.0, 0.0, 0.0),
        }
    }

    pub fn apply(self, u: f32, v: f32) -> f32 {
        let (u, v) = (u as f64, v as f64);
        (match self {
            Binary::Axpby(a, b) => a as f64 * u + b as f64 * v,
            Binary::Mul => u * v,
            Binary::Gate => u / (1.0 + (-v).exp()),
        }) as f32
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    b_len: u32,
    inner: u32,
    base: u32,
    alpha: f32,
    beta: f32,
    cols: u32,
    _pad: u32,
}

const WORKGROUP: u64 = 256;

/// Aligned element windows of a `len`-element f32 tensor, each within one binding.
fn windows(g: &Graph, len: usize) -> Result<Vec<std::ops::Range<usize>>> {
    super::channel_chunks(g.gpu, len, 4)
}

pub fn unary(g: &mut Graph, x: Tensor, op: Unary) -> Result<Tensor> {
    let len = g.len(x);
    let shape = g.shape(x).to_vec();
    let y = g.intermediate(&shape, DType::F32);
    let (code, alpha, beta) = op.code();
    let key = KernelKey::new("elementwise", "unary").with("OP", code);
    for w in windows(g, len)? {
        let params = Params {
            n: w.len() as u32,
            b_len: 1,
            inner: 1,
            base: w.start as u32,
            alpha,
            beta,
            cols: 0,
            _pad: 0,
        };
        let (off, size) = (4 * w.start as u64, 4 * w.len() as u64);
        let views = vec![g.window(x, off, size)?, g.window(y, off, size)?];
        let grid = g.grid((w.len() as u64).div_ceil(WORKGROUP))?;
        g.dispatch(
            key.clone(),
            bytemuck::bytes_of(&params),
            views,
            grid,
            w.len() as u64,
        );
    }
    Ok(y)
}

/// `a ∘ b` where `b` has as many elements as `a` or as a leading prefix of `a`'s
/// shape (`[c]` against `[c, h, w]` broadcasts per channel; `[1]` is a scalar).
pub fn binary(g: &mut Graph, a: Tensor, b: Tensor, op: Binary) -> Result<Tensor> {
    let (len, b_len) = (g.len(a), g.len(b));
    if b_len == 0 || len % b_len != 0 {
        return Err(Error::Shape(format!(
            "cannot broadcast {:?} against {:?}",
            g.shape(b),
            g.shape(a)
        )));
    }
    let inner = len / b_len;
    let shape = g.shape(a).to_vec();
    let y = g.intermediate(&shape, DType::F32);
    let (code, alpha, beta) = op.code();
    // Same-shape operands in fours take `binary4` (every window is then a multiple of 4
    // elements: they start at aligned offsets).
    let same4 = b_len == len && len % 4 == 0;
    let (entry, per_invocation) = if same4 { ("binary4", 4) } else { ("binary", 1) };
    let key = KernelKey::new("elementwise", entry).with("OP", code);
    let bv_whole = if b_len == len { None } else { Some(g.view(b)?) };
    for w in windows(g, len)? {
        let (off, size) = (4 * w.start as u64, 4 * w.len() as u64);
        // A same-shape operand is windowed like `a`; a broadcast one is bound whole.
        let (bv, base, b_len_param) = match bv_whole {
            Some(v) => (v, w.start, b_len),
            None => (g.window(b, off, size)?, 0, w.len()),
        };
        let params = Params {
            n: w.len() as u32,
            b_len: u32_of(b_len_param, "operand length")?,
            inner: if bv_whole.is_some() { inner as u32 } else { 1 },
            base: base as u32,
            alpha,
            beta,
            cols: 0,
            _pad: 0,
        };
        let views = vec![g.window(a, off, size)?, bv, g.window(y, off, size)?];
        let grid = g.grid((w.len() as u64).div_ceil(per_invocation * WORKGROUP))?;
        g.dispatch(
            key.clone(),
            bytemuck::bytes_of(&params),
            views,
            grid,
            w.len() as u64,
        );
    }
    Ok(y)
}

pub fn add(g: &mut Graph, a: Tensor, b: Tensor) -> Result<Tensor> {
    binary(g, a, b, Binary::ADD)
}

/// `x` [rows, 2·cols] → [rows, cols]: first half · GELU(second half), diffusers' GEGLU.
pub fn geglu(g: &mut Graph, x: Tensor) -> Result<Tensor> {
    let &[rows, two_cols] = g.shape(x) else {
        return Err(Error::Shape(format!(
            "geglu input must be [rows, 2·cols], got {:?}",
            g.shape(x)
        )));
    };
    if two_cols % 2 != 0 {
        return Err(Error::Shape(format!(
            "geglu needs an even width, got {two_cols}"
        )));
    }
    let cols = two_cols / 2;
    let y = g.intermediate(&[rows, cols], DType::F32);
    let (entry, per_invocation) = if cols % 4 == 0 {
        ("geglu4", 4)
    } else {
        ("geglu", 1)
    };
    // Row windows: the FF projection of a 128×128 latent is [16384, 2560], past one binding.
    let row = 4 * cols as u64;
    for w in super::row_windows(g.gpu, rows, &[2 * row, row], 0)? {
        let n = u32_of(w.len() * cols, "geglu elements")?;
        let params = Params {
            n,
            b_len: 1,
            inner: 1,
            base: 0,
            alpha: 0.0,
            beta: 0.0,
            cols: cols as u32,
            _pad: 0,
        };
        let xv = g.window(x, 2 * row * w.start as u64, 2 * row * w.len() as u64)?;
        let yv = g.window(y, row * w.start as u64, row * w.len() as u64)?;
        let grid = g.grid((n as u64).div_ceil(per_invocation * WORKGROUP))?;
        g.dispatch(
            KernelKey::new("elementwise", entry),
            bytemuck::bytes_of(&params),
            vec![xv, yv],
            grid,
            10 * n as u64,
        );
    }
    Ok(y)
}

/// erf in f64 for the CPU references: its Maclaurin series converges well for |x| ≤ 4,
/// and past 4 erf is ±1 to within 2e-8.
pub fn erf(x: f64) -> f64 {
    if x.abs() > 4.0 {
        return x.signum();
    }
    let (mut term, mut sum, x2) = (x, x, x * x);
    for n in 1..200 {
        term *= -x2 / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

pub fn gelu(v: f64) -> f64 {
    0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2))
}

/// CPU reference of [`geglu`].
pub fn geglu_reference(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let h = x[r * 2 * cols + c] as f64;
            y.push((h * gelu(x[r * 2 * cols + cols + c] as f64)) as f32);
        }
    }
    y
}
