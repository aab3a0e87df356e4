//! Sinusoidal timestep embedding, exactly diffusers' `get_timestep_embedding` with
//! max_period 10000 and scale 1. The frequencies are computed on the host in f32 the
//! way torch does; the GPU forms t·freq in f32 and takes sin/cos with its own range
//! reduction, because WGSL's sin/cos are only specified to 2⁻¹¹ on [−π, π] and
//! t·freq reaches 1000 rad.
//!
//! The f32 argument t·freq is itself rounded (by up to 3e-5 rad at t = 1000); torch
//! rounds it the same way, so the embedding matches torch, not the exact real value.
//! torch's vectorised exp is not correctly rounded, so an occasional frequency can
//! differ from ours by one ulp (measured: 3 of 160 at dim 320, shift 0), which moves
//! that component by up to ~6e-5 at t = 1000.

use bytemuck::{Pod, Zeroable};

use super::u32_of;
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    t: f32,
    half: u32,
    dim: u32,
    flip: u32,
}

/// exp(−ln(10000)·i / (half − freq_shift)) for i < dim / 2, each step rounded to f32
/// as in torch (the exp taken in f64, then rounded).
pub fn frequencies(dim: usize, freq_shift: f32) -> Result<Vec<f32>> {
    let half = dim / 2;
    let denom = half as f32 - freq_shift;
    if dim == 0 || (half > 0 && denom == 0.0) {
        return Err(Error::Shape(format!(
            "timestep embedding of size {dim} with freq_shift {freq_shift} is undefined"
        )));
    }
    let log_period = -(10000f64.ln() as f32);
    Ok((0..half)
        .map(|i| (((i as f32 * log_period) / denom) as f64).exp() as f32)
        .collect())
}

/// The \[dim\] embedding of timestep `t`: [sin, cos] of t·freq, or [cos, sin] when
/// `flip_sin_to_cos`, zero-padded when `dim` is odd.
pub fn timestep_embedding(
    g: &mut Graph,
    t: f32,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
) -> Result<Tensor> {
    let freqs = frequencies(dim, freq_shift)?;
    let f = g.input_f32(&[freqs.len()], &freqs)?;
    let y = g.intermediate(&[dim], DType::F32);
    let params = Params {
        t,
        half: freqs.len() as u32,
        dim: u32_of(dim, "embedding size")?,
        flip: flip_sin_to_cos as u32,
    };
    let views = vec![g.view(f)?, g.view(y)?];
    let grid = g.grid((dim as u64).div_ceil(64))?;
    g.dispatch(
        KernelKey::new("timestep", "embed"),
        bytemuck::bytes_of(&params),
        views,
        grid,
        20 * dim as u64,
    );
    Ok(y)
}

/// CPU reference: sin/cos in f64 of the same f32 arguments t·freq.
pub fn reference(t: f32, dim: usize, flip_sin_to_cos: bool, freq_shift: f32) -> Vec<f32> {
    let freqs = frequencies(dim, freq_shift).expect("valid reference embedding");
    let args: Vec<f64> = freqs.iter().map(|&f| (t * f) as f64).collect();
    let sin = args.iter().map(|a| a.sin() as f32);
    let cos = args.iter().map(|a| a.cos() as f32);
    let mut y: Vec<f32> = if flip_sin_to_cos {
        cos.chain(sin).collect()
    } else {
        sin.chain(cos).collect()
    };
    y.resize(dim, 0.0);
    y
}
