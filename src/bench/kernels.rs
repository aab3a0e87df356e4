//! The op kernels at Stable Diffusion 2.1 shapes: convolutions (UNet and VAE), Linear
//! layers, a batched matmul and attention, each timed as a whole graph run.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::{median_run_ms, probe};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::graph::{DType, Graph, Tensor};
use crate::ops::{attention, conv2d, matmul};
use crate::rng::Rng;

#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelResult {
    pub name: String,
    pub shape: String,
    pub ms: f64,
    pub gflops: f64,
    /// Of the probed FMA peak.
    pub peak_fraction: f64,
}

/// Timed runs per kernel at most (after a warm-up).
const RUNS: usize = 5;

/// The probes (FMA peak in GFLOP/s, copy bandwidth in GB/s) and every kernel whose name
/// contains `only` (all when empty); `quick` leaves out the VAE's full-resolution
/// convolution. The FMA probe runs before and after the kernels and the better reading
/// counts: a peak is what the device can do, and a busy moment only ever lowers it.
pub fn run_kernel_bench(
    gpu: &Gpu,
    quick: bool,
    only: &str,
) -> Result<(f64, f64, Vec<KernelResult>)> {
    let first_peak = probe::fma_peak(gpu)?;
    let bw = probe::bandwidth(gpu)?;
    let mut rng = Rng::new(7);
    let mut results = Vec::new();
    let mut record = |name: &str, shape: String, g: Graph| -> Result<()> {
        let (ms, flops) = median_run_ms(gpu, &g, RUNS)?;
        let gflops = flops as f64 / ms / 1e6;
        results.push(KernelResult {
            name: name.into(),
            shape,
            ms,
            gflops,
            peak_fraction: 0.0,
        });
        Ok(())
    };

    let wanted = |name: &str| name.contains(only);
    // (input channels, output channels, kernel size, picture side): the UNet's first and
    // deepest levels at 512² (and at 256², its 8×8 and 4×4 levels), a VAE 1×1 shortcut.
    let mut convs = vec![
        (320, 320, 3, 64),
        (640, 640, 3, 32),
        (1280, 1280, 3, 8),
        (1280, 1280, 3, 4),
        (512, 256, 1, 128),
    ];
    if !quick {
        convs.push((512, 512, 3, 256));
    }
    for (cin, cout, k, hw) in convs.into_iter().filter(|_| wanted("conv2d")) {
        let mut g = Graph::new(gpu);
        let x = input(&mut g, &mut rng, &[cin, hw, hw])?;
        let w = input(&mut g, &mut rng, &[cout, cin, k, k])?;
        let b = input(&mut g, &mut rng, &[cout])?;
        conv2d::conv2d(&mut g, x, w, b, conv2d::Conv2d::same(k / 2))?;
        record(
            &format!("conv2d {k}×{k}"),
            format!("{cin}→{cout} @ {hw}×{hw}"),
            g,
        )?;
    }
    if wanted("conv2d") {
        // The VAE encoder's first downsampler on a 256×256 image.
        let (c, hw) = (128, 256);
        let mut g = Graph::new(gpu);
        let x = input(&mut g, &mut rng, &[c, hw, hw])?;
        let w = input(&mut g, &mut rng, &[c, c, 3, 3])?;
        let b = input(&mut g, &mut rng, &[c])?;
        conv2d::conv2d(&mut g, x, w, b, conv2d::Conv2d::strided(2, [0, 1, 0, 1]))?;
        record("conv2d 3×3/2", format!("{c}→{c} @ {hw}×{hw}"), g)?;
    }

    let linears = [
        (4096, 320, 320, false),
        (4096, 320, 320, true),
        (1024, 1280, 1280, false),
        (4096, 320, 2560, true),
        (64, 1280, 10240, false),
    ];
    for (n, k, m, f16) in linears.into_iter().filter(|_| wanted("linear")) {
        let mut g = Graph::new(gpu);
        let x = input(&mut g, &mut rng, &[n, k])?;
        let (w, b) = if f16 {
            (
                half_weight(&mut g, &mut rng, &[m, k]),
                half_weight(&mut g, &mut rng, &[m]),
            )
        } else {
            (
                input(&mut g, &mut rng, &[m, k])?,
                input(&mut g, &mut rng, &[m])?,
            )
        };
        matmul::linear(&mut g, x, w, Some(b))?;
        let dtype = if f16 { "f16" } else { "f32" };
        record("linear", format!("[{n}, {k}] × [{m}, {k}]ᵀ {dtype}"), g)?;
    }

    if wanted("matmul") {
        let (batches, n, k, m) = (8, 1024, 64, 1024);
        let mut g = Graph::new(gpu);
        let a = input(&mut g, &mut rng, &[batches, n, k])?;
        let b = input(&mut g, &mut rng, &[batches, k, m])?;
        matmul::matmul(&mut g, a, b)?;
        record("matmul", format!("{batches} × [{n}, {k}] · [{k}, {m}]"), g)?;
    }

    let attentions = [
        (4096, 4096, 5, 64),
        (4096, 77, 5, 64),
        (1024, 1024, 1, 512),
        (4096, 4096, 1, 512),
    ];
    for (nq, nk, heads, d) in attentions.into_iter().filter(|_| wanted("attention")) {
        let mut g = Graph::new(gpu);
        let q = input(&mut g, &mut rng, &[nq, heads * d])?;
        let k = input(&mut g, &mut rng, &[nk, heads * d])?;
        let v = input(&mut g, &mut rng, &[nk, heads * d])?;
        attention::attention(&mut g, q, k, v, heads)?;
        record(
            "attention",
            format!("{nq} q × {nk} k, {heads} heads × {d}"),
            g,
        )?;
    }
    let peak = first_peak.max(probe::fma_peak(gpu)?);
    for r in &mut results {
        r.peak_fraction = r.gflops / peak;
    }
    Ok((peak, bw, results))
}

fn input(g: &mut Graph, rng: &mut Rng, shape: &[usize]) -> Result<Tensor> {
    let data = rng.vec(shape.iter().product(), 1.0);
    g.input_f32(shape, &data)
}

/// A resident f16 weight, as the model loader makes them.
fn half_weight(g: &mut Graph, rng: &mut Rng, shape: &[usize]) -> Tensor {
    let len: usize = shape.iter().product();
    let halves: Vec<u16> = (0..len.next_multiple_of(2))
        .map(|_| half::f16::from_f32(rng.symmetric(0.1)).to_bits())
        .collect();
    let buffer = g
        .gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("bench weight"),
            contents: bytemuck::cast_slice(&halves),
            usage: wgpu::BufferUsages::STORAGE,
        });
    g.resident(shape, DType::F16, Arc::new(buffer))
}
