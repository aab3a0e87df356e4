//! Shared by the integration tests: one device per test binary, seeded data, and
//! comparison relative to the tensor's scale.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use oscar_wgpu::gpu::{Gpu, GpuOptions};
use oscar_wgpu::graph::{Graph, HostTensor, RunReport, Tensor};
use oscar_wgpu::model::{Oscar, RunOptions, Tokens};
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

/// A graph whose runs guard their stores (see [`Graph::guard_stores`]).
pub fn guarded_graph(gpu: &Gpu) -> Graph<'_> {
    let mut g = Graph::new(gpu);
    g.guard_stores();
    g
}

/// Runs `g` (profiled, where the adapter has timestamps) and reads back `outputs`;
/// fails where a kernel stored past a tensor's end (in a guarded graph).
pub fn run_checked(g: &Graph, outputs: &[Tensor]) -> (Vec<HostTensor>, RunReport) {
    let (out, report) = g.run_profiled(outputs).unwrap();
    assert_eq!(report.stray_bytes, 0, "a kernel stored past a tensor's end");
    (out, report)
}

/// Checks a batched `matmul` of seeded data on `gpu` against the CPU reference, with
/// guarded stores; returns
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
    let mut g = guarded_graph(gpu);
    let at = g.input_f32(&[batches, n, k], &a).unwrap();
    let bt = g.input_f32(&[batches, k, m], &b).unwrap();
    let y = matmul::matmul(&mut g, at, bt).unwrap();
    let (out, report) = g.run_profiled(&[y]).unwrap();
    drop(g);
    let want = matmul::matmul_reference(&a, &b, batches, n, k, m);
    let what = format!("matmul {batches} × [{n}, {k}] · [{k}, {m}]");
    assert_close(&out[0].f32(), &want, 1e-5, &what);
    assert_eq!(report.stray_bytes, 0, "{what}: stores past a tensor's end");
    report.kernels.into_keys().collect()
}

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Named tensors of a golden safetensors fixture (written by the tools/ scripts).
pub struct Goldens(Vec<u8>);

impl Goldens {
    pub fn load(name: &str) -> Goldens {
        Goldens(std::fs::read(fixture(name)).unwrap())
    }

    fn tensors(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.0).unwrap()
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    /// The data of `name`, which must be of `dtype`.
    fn data(&self, name: &str, dtype: safetensors::Dtype) -> Vec<u8> {
        let tensors = self.tensors();
        let t = tensors
            .tensor(name)
            .unwrap_or_else(|_| panic!("no golden {name}"));
        assert_eq!(t.dtype(), dtype, "golden {name}");
        t.data().to_vec()
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.data(name, safetensors::Dtype::F32))
    }

    /// Token indices, stored as int32.
    pub fn indices(&self, name: &str) -> Vec<u32> {
        let data = self.data(name, safetensors::Dtype::I32);
        bytemuck::pod_collect_to_vec::<u8, i32>(&data)
            .into_iter()
            .map(|i| u32::try_from(i).unwrap())
            .collect()
    }

    pub fn metadata(&self) -> HashMap<String, String> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(&self.0).unwrap();
        meta.metadata().clone().unwrap_or_default()
    }
}

/// Encodes `image` ([3, h, w]) at each level and decodes its tokens (with the golden
/// channel norms), traced and with guarded stores (no kernel may store past a tensor's
/// end), and compares each traced tensor with its golden within `tol`
/// (`l<level>.<name>`, or the name itself for the VAE encoder's, which no level
/// changes; the decoder's `image` is `vae_dec.final`); the indices must be equal, the
/// channel norms close. With `every_tap`, a traced tensor without a golden fails.
/// Returns how many were compared.
pub fn check_traced(
    oscar: &Oscar,
    goldens: &Goldens,
    image: &[f32],
    (h, w): (usize, usize),
    levels: &[usize],
    tol: f32,
    every_tap: bool,
) -> usize {
    let traced = RunOptions {
        trace: true,
        guard_stores: true,
        ..RunOptions::default()
    };
    let mut checked = 0;
    let mut compare = |level: usize, name: &str, got: &[f32]| {
        let golden = match name {
            "latents" => "vae_enc.latents".to_string(),
            "image" => format!("l{level}.vae_dec.final"),
            _ if name.starts_with("vae_enc") => name.to_string(),
            _ => format!("l{level}.{name}"),
        };
        if goldens.has(&golden) {
            assert_close(
                got,
                &goldens.f32(&golden),
                tol,
                &format!("level {level} {golden}"),
            );
            checked += 1;
        } else {
            assert!(!every_tap, "no golden for traced {golden}");
        }
    };
    for &level in levels {
        let (tokens, trace) = oscar.encode(image, h, w, level, traced).unwrap();
        let strays = trace.report.stray_bytes;
        assert_eq!(
            strays, 0,
            "level {level} encode: stores past a tensor's end"
        );
        // The indices and norms are the tokens, compared below.
        let taps = trace
            .tensors
            .iter()
            .filter(|(name, _)| name != "indices" && name != "a_z");
        for (name, got) in taps {
            compare(level, name, &got.f32());
        }
        let want = goldens.indices(&format!("l{level}.indices"));
        assert_eq!(tokens.indices, want, "level {level} indices");
        let a_z = goldens.f32(&format!("l{level}.a_z"));
        assert_close(&tokens.a_z, &a_z, tol, &format!("level {level} a_z"));
        let sent = Tokens { a_z, ..tokens };
        let (_, trace) = oscar.decode(&sent, traced).unwrap();
        let strays = trace.report.stray_bytes;
        assert_eq!(
            strays, 0,
            "level {level} decode: stores past a tensor's end"
        );
        for (name, got) in &trace.tensors {
            compare(level, name, &got.f32());
        }
    }
    checked
}
