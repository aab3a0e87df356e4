//! Shared by the integration tests: one device per test binary, seeded data, and
//! comparison relative to the tensor's scale.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::OnceLock;

use oscar_wgpu::gpu::{Gpu, GpuOptions};
use oscar_wgpu::graph::{Graph, RunReport};
use oscar_wgpu::ops::matmul;
use oscar_wgpu::rng::Rng;

/// The test device: lavapipe in CI. Having no adapter fails the test, it never skips.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new(&GpuOptions::default())
            .expect("tests need a wgpu adapter (lavapipe: apt-get install mesa-vulkan-drivers)")
    })
}

/// The test device with subgroups left off: every op on its portable kernel, the one
/// GPUs without 8-lane subgroups run.
pub fn portable_gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = Gpu::new(&GpuOptions {
            portable_kernels: true,
            ..GpuOptions::default()
        })
        .expect("tests need a wgpu adapter");
        assert!(
            !gpu.has(wgpu::Features::SUBGROUP),
            "--portable-kernels must leave subgroups off"
        );
        gpu
    })
}

/// Largest absolute difference, relative to the reference's largest magnitude.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let err = got.iter().zip(want).fold(0f32, |m, (a, b)| {
        if a.is_nan() || b.is_nan() {
            f32::INFINITY
        } else {
            m.max((a - b).abs())
        }
    });
    err / scale
}

#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    let e = rel_err(got, want);
    assert!(
        e <= tol,
        "{what}: max error {e:.3e} × scale exceeds {tol:.1e}"
    );
}

/// Asserts that a profiled run ran `kernel` (`shader.entry`) alone, where the adapter has
/// timestamps to say which kernels ran.
pub fn assert_only_kernel(report: &RunReport, kernel: &str, what: &str) {
    if gpu().has(wgpu::Features::TIMESTAMP_QUERY) {
        assert_eq!(
            report.kernels.keys().collect::<Vec<_>>(),
            [kernel],
            "{what}"
        );
    }
}

/// Checks a batched `matmul` of seeded data on `gpu` against the CPU reference; returns
/// the kernels that ran, where the adapter has timestamp queries to say.
pub fn check_matmul_on(
    gpu: &Gpu,
    batches: usize,
    n: usize,
    k: usize,
    m: usize,
    seed: u64,
) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let a = rng.vec(batches * n * k, 1.0);
    let b = rng.vec(batches * k * m, 1.0);
    let mut g = Graph::new(gpu);
    let at = g.input_f32(&[batches, n, k], &a).unwrap();
    let bt = g.input_f32(&[batches, k, m], &b).unwrap();
    let y = matmul::matmul(&mut g, at, bt).unwrap();
    let (out, report) = g.run_profiled(&[y]).unwrap();
    drop(g);
    let want = matmul::matmul_reference(&a, &b, batches, n, k, m);
    assert_close(
        &out[0].f32(),
        &want,
        1e-5,
        &format!("matmul {batches} × [{n}, {k}] · [{k}, {m}]"),
    );
    report.kernels.into_keys().collect()
}
