//! The executor: liveness planning reuses buffers, aliases share storage, weights load
//! from safetensors in every float type, and errors are errors, not panics.

mod common;

use common::{assert_close, gpu};
use oscar_wgpu::gpu::{list_adapters, Gpu, GpuOptions, KernelKey};
use oscar_wgpu::graph::{DType, Graph, GUARD_BYTES};
use oscar_wgpu::ops::elementwise::{add, unary, Unary};
use oscar_wgpu::ops::kernel_set;
use oscar_wgpu::rng::Rng;
use oscar_wgpu::weights::{ModelFile, Precision, Weights};
use oscar_wgpu::Error;

/// A graph that guards its stores counts the bytes a kernel stores past a tensor's end
/// (here the unary kernel told of 1000 elements where y holds 900); none where nothing
/// strays, and none unguarded, where lavapipe drops them at the binding's end.
#[test]
fn guarded_stores_count_bytes_past_a_tensor() {
    let strays = |written: u32, guarded: bool| -> u64 {
        let mut g = Graph::new(gpu());
        if guarded {
            g.guard_stores();
        }
        let x = g.input_f32(&[1000], &Rng::new(1).vec(1000, 1.0)).unwrap();
        let y = g.intermediate(&[900], DType::F32);
        // The elementwise Params: n, b_len, inner, base, alpha, beta, cols, padding.
        let params = [written, 1, 1, 0, 0, 0, 0, 0];
        let views = vec![g.view(x).unwrap(), g.view(y).unwrap()];
        let key = KernelKey::new("elementwise", "unary").with("OP", 0.0);
        g.dispatch(key, bytemuck::cast_slice(&params), views, [4, 1, 1], 0);
        let (_, report) = g.run(&[y]).unwrap();
        assert!(!guarded || report.intermediate_bytes == 3600 + GUARD_BYTES);
        report.stray_bytes
    };
    assert_eq!(strays(900, true), 0);
    let past = strays(1000, true);
    assert!(past > 300 && past <= 400, "{past} bytes past y");
    assert_eq!(strays(1000, false), 0);
}

#[test]
fn a_chain_reuses_buffers() {
    let n = 1 << 16;
    let x = Rng::new(1).vec(n, 1.0);
    let mut g = Graph::new(gpu());
    let mut t = g.input_f32(&[n], &x).unwrap();
    for _ in 0..20 {
        t = unary(&mut g, t, Unary::Affine(1.0, 0.5)).unwrap();
    }
    let plan = g.plan(&[t]);
    // Twenty intermediates, but at most two are ever alive at once.
    assert_eq!(plan.unplanned_bytes, 20 * 4 * n as u64);
    assert!(
        plan.peak_bytes <= 2 * 4 * n as u64,
        "peak {} bytes",
        plan.peak_bytes
    );
    let (out, report) = g.run(&[t]).unwrap();
    assert_eq!(report.intermediate_bytes, plan.peak_bytes);
    let want: Vec<f32> = x.iter().map(|v| v + 10.0).collect();
    assert_close(&out[0].f32(), &want, 1e-6, "chain");
}

#[test]
fn a_skip_connection_stays_alive() {
    // y = f(f(f(x))) + x1: x1 must not be overwritten while the chain runs.
    let n = 4099;
    let x = Rng::new(2).vec(n, 1.0);
    let mut g = Graph::new(gpu());
    let input = g.input_f32(&[n], &x).unwrap();
    let x1 = unary(&mut g, input, Unary::Affine(2.0, 0.0)).unwrap();
    let mut t = x1;
    for _ in 0..3 {
        t = unary(&mut g, t, Unary::Affine(1.0, 1.0)).unwrap();
    }
    let y = add(&mut g, t, x1).unwrap();
    let (out, _) = g.run(&[y]).unwrap();
    let want: Vec<f32> = x.iter().map(|v| 4.0 * v + 3.0).collect();
    assert_close(&out[0].f32(), &want, 1e-6, "skip");
}

#[test]
fn an_output_read_through_an_alias_stays_alive() {
    // `shown` is a reshape of x1 and an output: x1's storage must outlive the chain
    // after it, though no dispatch reads x1 again.
    let n = 64 * 64;
    let x = Rng::new(3).vec(n, 1.0);
    let mut g = Graph::new(gpu());
    let input = g.input_f32(&[n], &x).unwrap();
    let x1 = unary(&mut g, input, Unary::Affine(2.0, 0.0)).unwrap();
    let shown = g.reshape(x1, &[64, 64]).unwrap();
    let mut t = input;
    for _ in 0..4 {
        t = unary(&mut g, t, Unary::Affine(1.0, 1.0)).unwrap();
    }
    let (out, _) = g.run(&[shown, t]).unwrap();
    let twice: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    assert!(
        out[0].f32() == twice,
        "x1, read through its reshape, was overwritten"
    );
    assert_close(
        &out[1].f32(),
        &x.iter().map(|v| v + 4.0).collect::<Vec<_>>(),
        1e-6,
        "chain",
    );
}

#[test]
fn reshape_and_slice_alias_storage() {
    let x: Vec<f32> = (0..8 * 64).map(|i| i as f32).collect();
    let mut g = Graph::new(gpu());
    let input = g.input_f32(&[8, 64], &x).unwrap();
    let doubled = unary(&mut g, input, Unary::Affine(2.0, 0.0)).unwrap();
    let rows = g.slice_rows(doubled, 4, 4).unwrap();
    let flat = g.reshape(rows, &[256]).unwrap();
    let plus = unary(&mut g, flat, Unary::Affine(1.0, 1.0)).unwrap();
    let (out, _) = g.run(&[plus, rows]).unwrap();
    let want: Vec<f32> = (256..512).map(|i| 2.0 * i as f32 + 1.0).collect();
    assert_eq!(out[0].f32(), want);
    assert_eq!(out[1].shape, vec![4, 64]);
    let narrow = g.reshape(doubled, &[512, 1]).unwrap();
    assert!(
        g.slice_rows(narrow, 1, 1).is_err(),
        "a slice at byte 4 is misaligned"
    );
    assert!(
        g.reshape(doubled, &[3, 3]).is_err(),
        "a reshape must keep the element count"
    );
}

#[test]
fn weights_load_from_f32_f16_and_bf16_files() {
    let values: Vec<f32> = vec![0.5, -1.25, 3.0, 0.0, 7.5];
    let f16: Vec<u8> = values
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = values
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let f32b: Vec<u8> = bytemuck::cast_slice(&values).to_vec();
    let views = [
        (
            "unet.a",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![5], &f32b).unwrap(),
        ),
        (
            "unet.b",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![5], &f16).unwrap(),
        ),
        (
            "unet.c",
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![5], &bf16).unwrap(),
        ),
    ];
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("weights.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    for precision in [Precision::F32, Precision::F16] {
        let file = ModelFile::open(&path).unwrap();
        let weights = Weights::upload(gpu(), file, precision, |_| true).unwrap();
        for name in ["unet.a", "unet.b", "unet.c"] {
            let mut g = Graph::new(gpu());
            let w = weights.tensor(&mut g, name).unwrap();
            let (out, _) = g.run(&[w]).unwrap();
            let got: Vec<f32> = match precision {
                Precision::F32 => out[0].f32(),
                Precision::F16 => out[0]
                    .bytes
                    .chunks_exact(2)
                    .take(5)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            };
            assert_eq!(got, values, "{name} stored as {precision:?}");
        }
    }
    assert!(ModelFile::open(&std::env::temp_dir().join("does-not-exist.safetensors")).is_err());
    std::fs::write(&path, b"not a safetensors file").unwrap();
    assert!(ModelFile::open(&path).is_err());
}

/// A weight that is not a finite number, or that f16 cannot hold where the weights are
/// kept in f16, is refused by name and place when a graph first asks for it: a NaN
/// weight decoded to a black picture without a word.
#[test]
fn weights_that_are_not_finite_numbers_are_refused() {
    let n = 10_000;
    // The first bad value in a later block of the scan, a second one after it.
    let with = |bad: &[(usize, f32)]| {
        let mut values = vec![0.25f32; n];
        for &(i, v) in bad {
            values[i] = v;
        }
        values
    };
    let f32s = |v: Vec<f32>| bytemuck::cast_slice::<f32, u8>(&v).to_vec();
    let f16s = |v: Vec<f32>| -> Vec<u8> {
        v.iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect()
    };
    let bf16s = |v: Vec<f32>| -> Vec<u8> {
        v.iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect()
    };
    use safetensors::Dtype::{BF16, F16, F32};
    let tensors = [
        (
            "unet.f32",
            F32,
            f32s(with(&[(5000, f32::INFINITY), (6000, f32::NAN)])),
        ),
        ("unet.f16", F16, f16s(with(&[(4097, f32::INFINITY)]))),
        ("unet.bf16", BF16, bf16s(with(&[(0, f32::NEG_INFINITY)]))),
        ("unet.nan16", F16, f16s(with(&[(9999, f32::NAN)]))),
        (
            "unet.extremes",
            F32,
            f32s(with(&[(1, f32::MAX), (2, -1e-40), (3, -0.0)])),
        ),
        (
            "unet.f16_extremes",
            F16,
            f16s(with(&[(1, 65504.0), (2, -65504.0)])),
        ),
        ("unet.bf16_extremes", BF16, bf16s(with(&[(1, 3.0e38)]))),
        (
            "unet.over_f16",
            F32,
            f32s(with(&[(7, 65504.0), (8, -65520.0)])),
        ),
    ];
    let views = tensors.iter().map(|(name, dtype, bytes)| {
        let view = safetensors::tensor::TensorView::new(*dtype, vec![n], bytes).unwrap();
        (*name, view)
    });
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-finite.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let refused = "not a finite number: the file is damaged or was converted wrongly";
    let f16_range = "beyond the ±65504 of f16: load it without --f16";
    for (precision, name, want) in [
        (
            Precision::F32,
            "unet.f32",
            Some("holds inf at index 5000, ".to_string() + refused),
        ),
        (
            Precision::F16,
            "unet.f32",
            Some("holds inf at index 5000, ".to_string() + refused),
        ),
        (
            Precision::F32,
            "unet.f16",
            Some("holds inf at index 4097, ".to_string() + refused),
        ),
        (
            Precision::F16,
            "unet.f16",
            Some("holds inf at index 4097, ".to_string() + refused),
        ),
        (
            Precision::F32,
            "unet.bf16",
            Some("holds -inf at index 0, ".to_string() + refused),
        ),
        (
            Precision::F32,
            "unet.nan16",
            Some("holds NaN at index 9999, ".to_string() + refused),
        ),
        (Precision::F32, "unet.extremes", None),
        (
            Precision::F16,
            "unet.extremes",
            Some(format!("holds {}, {f16_range}", f32::MAX)),
        ),
        (Precision::F32, "unet.f16_extremes", None),
        (Precision::F16, "unet.f16_extremes", None),
        (Precision::F32, "unet.bf16_extremes", None),
        (
            Precision::F16,
            "unet.bf16_extremes",
            Some(f16_range.to_string()),
        ),
        (Precision::F32, "unet.over_f16", None),
        (
            Precision::F16,
            "unet.over_f16",
            Some(format!("holds -65520, {f16_range}")),
        ),
    ] {
        let file = ModelFile::open(&path).unwrap();
        let weights = Weights::upload(gpu(), file, precision, |_| true).unwrap();
        let mut g = Graph::new(gpu());
        match (weights.tensor(&mut g, name), want) {
            (Ok(_), None) => {}
            (Err(e), Some(want)) => {
                let text = e.to_string();
                let named = format!("weight '{name}' ");
                assert!(
                    text.contains(&named) && text.contains(&want),
                    "{name}: {text}"
                );
            }
            (got, want) => panic!("{name} as {precision:?}: {:?}, want {want:?}", got.err()),
        }
    }
}

/// A graph cut into segments computes what it computes whole: what crosses a cut is
/// read back and uploaded again, placeholders take their data from the uploads, and a
/// placeholder nobody filled is an error rather than garbage.
#[test]
fn segments_compute_the_whole_graph() {
    let x = Rng::new(5).vec(1000, 1.0);
    let build = |g: &mut Graph, input| {
        let a = unary(g, input, Unary::Affine(2.0, 1.0)).unwrap();
        let b = unary(g, a, Unary::Relu).unwrap();
        let c = unary(g, b, Unary::Affine(0.5, -1.0)).unwrap();
        add(g, a, c).unwrap()
    };
    let mut whole = Graph::new(gpu());
    let input = whole.input_f32(&[1000], &x).unwrap();
    let out = build(&mut whole, input);
    let want = whole.run(&[out]).unwrap().0[0].f32();

    let mut g = Graph::new(gpu());
    let input = g.placeholder(&[1000], oscar_wgpu::graph::DType::F32);
    let out = build(&mut g, input);
    assert!(
        g.run(&[out]).is_err(),
        "an unfilled placeholder is an error"
    );
    let life = g.lifetimes();
    let (first, second) = (0..2, 2..g.dispatch_count());
    assert!(life.entering(&g, &first).is_empty());
    let crossing = life.leaving(&g, &first);
    assert_eq!(
        crossing,
        life.entering(&g, &second),
        "what leaves the first segment enters the second"
    );
    assert_eq!(crossing.len(), 2, "a and b cross the cut");
    assert_eq!(
        g.segment_bytes(first.clone(), &[input], &crossing),
        Some(3 * 4000)
    );
    let head = g.segment(first, &[input]);
    let head = head.prepare(&crossing, false).unwrap();
    assert!(
        head.run(Vec::new()).is_err(),
        "a run must fill the placeholders it reads"
    );
    assert!(
        head.run(vec![(input, vec![0; 12])]).is_err(),
        "an upload fills its placeholder exactly"
    );
    let tail = g.segment(second, &crossing);
    let tail = tail.prepare(&[out], false).unwrap();
    // Twice through the same prepared segments: buffers are reused, results are not.
    for _ in 0..2 {
        let (mid, _) = head
            .run(vec![(input, bytemuck::cast_slice(&x).to_vec())])
            .unwrap();
        let got = tail
            .run(
                crossing
                    .iter()
                    .zip(mid)
                    .map(|(&t, h)| (t, h.bytes))
                    .collect(),
            )
            .unwrap()
            .0[0]
            .f32();
        assert_close(&got, &want, 0.0, "segmented graph");
    }
}

/// Pipelines compile on several threads at once; a kernel that does not exist, or an
/// entry point its shader lacks, is an error from whichever thread met it, and the
/// device stays usable. (A device of its own: a validation error is collected per
/// device, and must not surface in another test's run.)
#[test]
fn a_bad_kernel_fails_the_parallel_compile_cleanly() {
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    let keys = [
        KernelKey::new("elementwise", "unary").with("OP", 0.0),
        KernelKey::new("no_such_shader", "main"),
        KernelKey::new("elementwise", "no_such_entry"),
        KernelKey::new("elementwise", "unary").with("OP", 4.0),
    ];
    let err = gpu.compile(&keys.iter().collect::<Vec<_>>()).unwrap_err();
    assert!(matches!(err, Error::Gpu(_)), "{err:?}");
    let x = Rng::new(4).vec(1000, 1.0);
    let mut g = Graph::new(&gpu);
    let t = g.input_f32(&[1000], &x).unwrap();
    let y = unary(&mut g, t, Unary::Affine(2.0, 1.0)).unwrap();
    let (out, _) = g.run(&[y]).unwrap();
    let want: Vec<f32> = x.iter().map(|v| 2.0 * v + 1.0).collect();
    assert_close(&out[0].f32(), &want, 1e-6, "affine after a failed compile");
}

/// lavapipe runs the 8-lane kernels, so they are what CI tests. Should its Mesa lack
/// something they need (8-lane subgroups, 64-bit integers), every op test would quietly
/// test the portable kernels instead: that is a failure here, not a silent pass.
#[test]
fn lavapipe_takes_the_eight_lane_kernels() {
    let gpu = gpu();
    if gpu.info.name.contains("llvmpipe") && gpu.info.backend == wgpu::Backend::Vulkan {
        assert_eq!(kernel_set(gpu), "subgroup8", "{:?}", gpu.info);
    }
}

/// Timestamps are what the routing checks (`assert_only_kernel`, `ran == [...]`) look
/// through: the device takes them wherever its adapter offers them, and a profiled run
/// then names each kernel it dispatched.
#[test]
fn profiled_runs_name_their_kernels_where_the_adapter_has_timestamps() {
    let gpu = gpu();
    let offered = list_adapters(&GpuOptions::default())
        .unwrap()
        .into_iter()
        .find(|a| a.name == gpu.info.name)
        .expect("the test device among the adapters")
        .timestamps;
    assert_eq!(gpu.has(wgpu::Features::TIMESTAMP_QUERY), offered);
    let mut g = Graph::new(gpu);
    let x = g.input_f32(&[1000], &[1.0; 1000]).unwrap();
    let y = unary(&mut g, x, Unary::Affine(2.0, 0.0)).unwrap();
    let (_, report) = g.run_profiled(&[y]).unwrap();
    let ran: Vec<&String> = report.kernels.keys().collect();
    if offered {
        assert_eq!(ran, ["elementwise.unary"]);
    } else {
        assert!(ran.is_empty(), "{ran:?} without timestamps");
    }
}

#[test]
fn a_slab_is_a_range_of_the_first_dimension() {
    let mut g = Graph::new(gpu());
    // 6 channels of 4 × 16 floats (256 bytes each: storage-offset aligned).
    let x = g.input_f32(&[6, 4, 16], &vec![0.0; 6 * 64]).unwrap();
    let v = g.slab(x, &(2..5)).unwrap();
    assert_eq!((v.tensor, v.offset, v.size), (x, 2 * 256, 3 * 256));
    assert!(matches!(g.slab(x, &(4..7)), Err(Error::Shape(_))));
    let empty = g.intermediate(&[0, 4], oscar_wgpu::graph::DType::F32);
    assert!(matches!(g.slab(empty, &(0..0)), Err(Error::Shape(_))));
}

/// A device lost mid-run (here destroyed, as a driver reset leaves it) fails the run with
/// an error that says so: no panic, no hang.
#[test]
fn a_lost_device_is_an_error() {
    let gpu = oscar_wgpu::gpu::Gpu::new(&oscar_wgpu::gpu::GpuOptions::default()).unwrap();
    let mut g = Graph::new(&gpu);
    let x = g.input_f32(&[1024], &[1.0; 1024]).unwrap();
    let y = unary(&mut g, x, Unary::Affine(2.0, 0.0)).unwrap();
    gpu.device.destroy();
    let err = g.run(&[y]).unwrap_err();
    assert!(matches!(err, Error::DeviceLost(_)), "{err}");
}
