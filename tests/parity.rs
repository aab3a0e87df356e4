//! Exact parity with the PyTorch reference (tests/fixtures, copied from
//! shared/reference/oscar-tiny) at every level: the model file converted from the
//! reference's diffusers folder and OSCAR checkpoint, run on the GPU, must reproduce
//! every intermediate tensor the real code produced on the photo.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::{assert_close, gpu};
use oscar_wgpu::gpu::{Gpu, GpuOptions};
use oscar_wgpu::image_io::{psnr, read_rgb, to_planar, to_rgb8, Padding, Planar};
use oscar_wgpu::model::{Oscar, RunOptions, Tokens};
use oscar_wgpu::weights::Precision;

/// f32 weights: max abs error ≤ 2e-4 × the tensor's max magnitude (the bound).
const TOL: f32 = 2e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn load() -> Reference {
        Reference {
            bytes: std::fs::read(fixture("reference.safetensors")).unwrap(),
        }
    }

    fn f32(&self, name: &str) -> Vec<f32> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("reference has no {name}"));
        bytemuck::pod_collect_to_vec(t.data())
    }

    fn indices(&self, level: usize) -> (Vec<u32>, (usize, usize)) {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(&format!("l{level}.indices")).unwrap();
        let v: Vec<i32> = bytemuck::pod_collect_to_vec(t.data());
        (
            v.into_iter().map(|i| i as u32).collect(),
            (t.shape()[0], t.shape()[1]),
        )
    }
}

fn model(precision: Precision) -> Oscar {
    model_on(&GpuOptions::default(), precision)
}

fn model_on(options: &GpuOptions, precision: Precision) -> Oscar {
    let gpu = Gpu::new(options).expect("a wgpu adapter");
    let file = if precision == Precision::F32 {
        "oscar-tiny.safetensors"
    } else {
        "oscar-tiny-f16.safetensors"
    };
    Oscar::load(gpu, &fixture(file), precision).unwrap()
}

fn f32_model() -> &'static Oscar {
    static M: OnceLock<Oscar> = OnceLock::new();
    M.get_or_init(|| model(Precision::F32))
}

fn photo() -> Planar {
    to_planar(
        &read_rgb(&fixture("astronaut_256.png")).unwrap(),
        64,
        Padding::Edge,
    )
}

/// Traced, and with guarded stores: no kernel may store past a tensor's end.
fn traced() -> RunOptions {
    RunOptions {
        trace: true,
        guard_stores: true,
        ..RunOptions::default()
    }
}

fn check_level(level: usize) {
    let _ = gpu();
    check_level_on(f32_model(), level);
}

fn check_level_on(oscar: &Oscar, level: usize) {
    let reference = Reference::load();
    let img = photo();
    let (tokens, trace) = oscar
        .encode(&img.data, img.height, img.width, level, traced())
        .unwrap();
    assert_eq!(
        trace.report.stray_bytes, 0,
        "level {level} encode: stores past a tensor's end"
    );
    assert_close(
        &trace.get("latents").unwrap().f32(),
        &reference.f32("latents"),
        TOL,
        "latents",
    );
    assert_close(
        &trace.get("backbone").unwrap().f32(),
        &reference.f32(&format!("l{level}.backbone")),
        TOL,
        "backbone",
    );
    let (want_indices, grid) = reference.indices(level);
    assert_eq!(tokens.grid, grid, "token grid");
    assert_eq!(
        tokens.indices, want_indices,
        "level {level}: indices must be exactly equal"
    );
    assert_close(
        &tokens.a_z,
        &reference.f32(&format!("l{level}.a_z")),
        TOL,
        "a_z",
    );

    let sent = Tokens {
        a_z: reference.f32(&format!("l{level}.a_z")),
        ..tokens
    };
    let (image, trace) = oscar.decode(&sent, traced()).unwrap();
    assert_eq!(
        trace.report.stray_bytes, 0,
        "level {level} decode: stores past a tensor's end"
    );
    for name in ["quantized", "z_hat", "z_t", "v", "x0"] {
        assert_close(
            &trace.get(name).unwrap().f32(),
            &reference.f32(&format!("l{level}.{name}")),
            TOL,
            &format!("level {level} {name}"),
        );
    }
    assert_close(
        &image,
        &reference.f32(&format!("l{level}.image")),
        TOL,
        &format!("level {level} image"),
    );
    let ours = to_rgb8(
        &Planar {
            width: img.width,
            height: img.height,
            data: image,
        },
        256,
        256,
    );
    let theirs = read_rgb(&fixture(&format!("ref_level{level}.png"))).unwrap();
    assert!(
        psnr(&ours, &theirs) >= 40.0,
        "level {level}: PSNR {:.1} dB against ref_level{level}.png",
        psnr(&ours, &theirs)
    );
}

#[test]
fn parity_level_0() {
    check_level(0);
}

#[test]
fn parity_level_1() {
    check_level(1);
}

#[test]
fn parity_level_2() {
    check_level(2);
}

#[test]
fn parity_level_3() {
    check_level(3);
}

#[test]
fn parity_level_4() {
    check_level(4);
}

#[test]
fn parity_level_5() {
    check_level(5);
}

#[test]
fn parity_level_6() {
    check_level(6);
}

#[test]
fn parity_level_7() {
    check_level(7);
}

/// The whole codec on the portable kernels, the ones GPUs without 8-lane subgroups run
/// (subgroups left off on lavapipe): the same numbers.
#[test]
fn parity_portable_kernels() {
    let oscar = model_on(
        &GpuOptions {
            portable_kernels: true,
            ..GpuOptions::default()
        },
        Precision::F32,
    );
    assert!(!oscar.gpu.has(wgpu::Features::SUBGROUP));
    check_level_on(&oscar, 5);
}

/// Packed f16 weights on the decode side stay within 40 dB of the f32 decode.
/// `--f16` packs only the decode side: what decides the tokens (VAE encoder, quant_conv,
/// hyper-encoders, codebooks) stays f32, so an f16 run encodes exactly what an f32 run
/// does, token for token and norm for norm.
#[test]
fn f16_weights_encode_exactly_as_f32() {
    let gpu = Gpu::new(&GpuOptions::default()).expect("a wgpu adapter");
    let f16 = Oscar::load(gpu, &fixture("oscar-tiny.safetensors"), Precision::F16).unwrap();
    let img = photo();
    for level in [0, 5] {
        let run = |oscar: &Oscar| {
            oscar
                .encode(
                    &img.data,
                    img.height,
                    img.width,
                    level,
                    RunOptions::default(),
                )
                .unwrap()
                .0
        };
        let (a, b) = (run(f32_model()), run(&f16));
        assert_eq!(a.indices, b.indices, "level {level}: indices");
        assert_eq!(a.a_z, b.a_z, "level {level}: A_z");
    }
}

#[test]
fn f16_weights_decode_within_40db() {
    let reference = Reference::load();
    let f16 = model(Precision::F16);
    for level in [0, 5] {
        let (indices, grid) = reference.indices(level);
        let tokens = Tokens {
            level,
            grid,
            indices,
            a_z: reference.f32(&format!("l{level}.a_z")),
        };
        let (a, _) = f32_model().decode(&tokens, RunOptions::default()).unwrap();
        let (b, _) = f16.decode(&tokens, RunOptions::default()).unwrap();
        let to8 = |d: Vec<f32>| {
            to_rgb8(
                &Planar {
                    width: 256,
                    height: 256,
                    data: d,
                },
                256,
                256,
            )
        };
        let p = psnr(&to8(a), &to8(b));
        assert!(p >= 40.0, "level {level}: f16 decode is {p:.1} dB from f32");
    }
}
