//! Weights uploaded in blocks of rows (`Layout::RowBlocked`): the permutation itself,
//! the products that read it against their CPU references, the paths that cannot read
//! it refusing it, and one weight following the layout each graph asks for; and the
//! uploads themselves: staging copies handed to the GPU as they add up, generated
//! weights made only when uploaded; and a convolution weight of the wrong shape refused.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{assert_close, gpu, guarded_graph, run_checked};
use oscar_wgpu::graph::{DType, Graph, Layout, BLOCK_K, ROW_BLOCK};
use oscar_wgpu::ops::conv2d::{self, Conv2d};
use oscar_wgpu::ops::{elementwise, matmul};
use oscar_wgpu::rng::Rng;
use oscar_wgpu::weights::{block_rows, Generator, Precision, Weights, STAGING_FLUSH};

/// 8-lane subgroups: the broadcast kernel, the only reader of blocked rows, runs.
fn broadcast_adapter() -> bool {
    gpu().info.subgroup_max_size == 8
}

/// A model file's convolution weight that is not [out, in, k, k] is an error naming it
/// (its kernel size was once read as `shape[2]`, a panic for a 1-D tensor).
#[test]
fn a_convolution_weight_of_the_wrong_shape_is_an_error() {
    let shapes = [
        ("conv", vec![8, 4, 3, 3]),
        ("flat", vec![8]),
        ("wide", vec![8, 4, 1, 3]),
    ];
    let weights = Weights::shapes_only(
        gpu(),
        shapes
            .into_iter()
            .map(|(name, shape)| (format!("{name}.weight"), shape))
            .collect(),
        Precision::F32,
    );
    assert_eq!(weights.conv_kernel("conv.weight").unwrap(), 3);
    for name in ["flat.weight", "wide.weight", "missing.weight"] {
        let message = weights.conv_kernel(name).unwrap_err().to_string();
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn block_rows_puts_each_step_of_a_block_together() {
    let (rows, k) = (2 * ROW_BLOCK, 3 * BLOCK_K);
    let values: Vec<f32> = (0..rows * k).map(|i| i as f32).collect();
    let blocked = block_rows(bytemuck::cast_slice(&values), &[rows, k], DType::F32).unwrap();
    let blocked: &[f32] = bytemuck::cast_slice(&blocked);
    for r in [0, 1, ROW_BLOCK - 1, ROW_BLOCK, rows - 1] {
        for kk in [0, 1, BLOCK_K - 1, BLOCK_K, k - 1] {
            let (block, j, step) = (r / ROW_BLOCK, r % ROW_BLOCK, kk / BLOCK_K);
            let at = ((block * (k / BLOCK_K) + step) * ROW_BLOCK + j) * BLOCK_K + kk % BLOCK_K;
            assert_eq!(blocked[at], values[r * k + kk], "row {r}, k {kk}");
        }
    }
    let mut sorted = blocked.to_vec();
    sorted.sort_by(f32::total_cmp);
    assert_eq!(sorted, values, "a permutation");
    // f16 rows move in chunks of 8 halves, 16 bytes.
    let halves = oscar_wgpu::weights::pack_f16(&values);
    let blocked = block_rows(&halves, &[rows, k], DType::F16).unwrap();
    assert_eq!(
        &blocked[16..32],
        &halves[k * 2..k * 2 + 16],
        "row 1's first 8 halves"
    );
    // Rows that do not fill whole blocks, or rows not a multiple of 8 long, stay plain.
    assert!(block_rows(&[0; 4 * 100 * 8], &[100, 8], DType::F32).is_none());
    assert!(block_rows(&[0; 4 * 128 * 12], &[128, 12], DType::F32).is_none());
}

/// A convolution of `x` [cin, side, side] by a weight uploaded in the layout
/// `conv2d::weight_layout` picks, against the reference.
fn check_conv(cin: usize, cout: usize, side: usize, precision: Precision, seed: u64) -> Layout {
    let mut rng = Rng::new(seed);
    let x = rng.vec(cin * side * side, 1.0);
    let mut w = rng.vec(cout * cin * 9, 0.5);
    let mut b = rng.vec(cout, 0.5);
    if precision == Precision::F16 {
        for v in w.iter_mut().chain(b.iter_mut()) {
            *v = half::f16::from_f32(*v).to_f32();
        }
    }
    let wshape = vec![cout, cin, 3, 3];
    let weights = Weights::from_host(
        gpu(),
        vec![
            ("w".into(), wshape.clone(), w.clone()),
            ("b".into(), vec![cout], b.clone()),
        ],
        precision,
    )
    .unwrap();
    let cfg = Conv2d::same(1);
    let dtype = weights.dtype("w").unwrap();
    let layout = conv2d::weight_layout(gpu(), &[cin, side, side], &wshape, dtype, cfg);
    let mut g = guarded_graph(gpu());
    let xt = g.input_f32(&[cin, side, side], &x).unwrap();
    let wt = weights.tensor_in(&mut g, "w", layout).unwrap();
    let bt = weights.tensor(&mut g, "b").unwrap();
    let y = conv2d::conv2d(&mut g, xt, wt, bt, cfg).unwrap();
    let (out, _) = run_checked(&g, &[y]);
    let want = conv2d::reference(&x, [cin, side, side], &w, [cout, cin, 3, 3], &b, cfg);
    let what = format!("conv {cin}→{cout} @ {side}×{side} {precision:?} {layout:?}");
    assert_close(&out[0].f32(), &want, 1e-5, &what);
    layout
}

#[test]
fn small_pictures_read_their_weights_in_blocks_of_rows() {
    // The UNet's 4×4 and 8×8 levels in miniature: 16 and 64 pixels, whole blocks of rows,
    // f32 and packed f16; 3 blocks, and k (16 · 9) not a multiple of any tile.
    for (cout, side, precision, seed) in [
        (ROW_BLOCK, 4, Precision::F32, 1),
        (3 * ROW_BLOCK, 8, Precision::F32, 2),
        (2 * ROW_BLOCK, 4, Precision::F16, 3),
        (ROW_BLOCK, 2, Precision::F16, 4),
    ] {
        let layout = check_conv(16, cout, side, precision, seed);
        if broadcast_adapter() {
            assert_eq!(
                layout,
                Layout::RowBlocked,
                "{cout} channels @ {side}×{side}"
            );
        }
    }
    // Rows that do not fill a block, and a picture past the product's size, stay plain.
    assert_eq!(
        check_conv(16, ROW_BLOCK + 8, 4, Precision::F32, 5),
        Layout::Plain
    );
    assert_eq!(
        check_conv(16, ROW_BLOCK, 12, Precision::F32, 6),
        Layout::Plain
    );
}

#[test]
fn few_token_linear_layers_read_their_weights_in_blocks_of_rows() {
    for (n, k, m, precision, seed) in [
        (16, 72, 2 * ROW_BLOCK, Precision::F32, 7),
        (77, 40, ROW_BLOCK, Precision::F16, 8),
        (100, 64, 3 * ROW_BLOCK, Precision::F32, 9),
    ] {
        let mut rng = Rng::new(seed);
        let x = rng.vec(n * k, 1.0);
        let mut w = rng.vec(m * k, 0.5);
        let mut b = rng.vec(m, 0.5);
        if precision == Precision::F16 {
            for v in w.iter_mut().chain(b.iter_mut()) {
                *v = half::f16::from_f32(*v).to_f32();
            }
        }
        let weights = Weights::from_host(
            gpu(),
            vec![
                ("w".into(), vec![m, k], w.clone()),
                ("b".into(), vec![m], b.clone()),
            ],
            precision,
        )
        .unwrap();
        let dtype = weights.dtype("w").unwrap();
        let layout = matmul::linear_weight_layout(gpu(), n, &[m, k], dtype);
        if broadcast_adapter() {
            assert_eq!(layout, Layout::RowBlocked, "[{n}, {k}] × [{m}, {k}]ᵀ");
        }
        let mut g = guarded_graph(gpu());
        let xt = g.input_f32(&[n, k], &x).unwrap();
        let wt = weights.tensor_in(&mut g, "w", layout).unwrap();
        let bt = weights.tensor(&mut g, "b").unwrap();
        let y = matmul::linear(&mut g, xt, wt, Some(bt)).unwrap();
        let (out, _) = run_checked(&g, &[y]);
        let want = matmul::linear_reference(&x, n, k, &w, m, Some(&b));
        let what = format!("linear [{n}, {k}] × [{m}, {k}]ᵀ {precision:?} {layout:?}");
        assert_close(&out[0].f32(), &want, 1e-5, &what);
    }
    // Many tokens run on tiles whose lanes own the weight's rows: plain.
    let plain = matmul::linear_weight_layout(gpu(), 4096, &[ROW_BLOCK, 64], DType::F32);
    assert_eq!(plain, Layout::Plain);
}

#[test]
fn paths_that_cannot_read_blocked_rows_refuse_them() {
    let (cin, cout) = (8, ROW_BLOCK);
    let mut rng = Rng::new(10);
    let weights = Weights::from_host(
        gpu(),
        vec![
            (
                "conv".into(),
                vec![cout, cin, 3, 3],
                rng.vec(cout * cin * 9, 0.5),
            ),
            ("b".into(), vec![cout], rng.vec(cout, 0.5)),
            ("linear".into(), vec![cout, 64], rng.vec(cout * 64, 0.5)),
        ],
        Precision::F32,
    )
    .unwrap();
    let mut g = guarded_graph(gpu());
    // 16 × 16 pixels run on the convolution kernels, which read plain weights only.
    let x = g
        .input_f32(&[cin, 16, 16], &rng.vec(cin * 256, 1.0))
        .unwrap();
    let w = weights
        .tensor_in(&mut g, "conv", Layout::RowBlocked)
        .unwrap();
    let b = weights.tensor(&mut g, "b").unwrap();
    assert!(conv2d::conv2d(&mut g, x, w, b, Conv2d::same(1)).is_err());
    // 4096 tokens run the weight as the kernel's columns.
    let tokens = g.input_f32(&[4096, 64], &rng.vec(4096 * 64, 1.0)).unwrap();
    let w = weights
        .tensor_in(&mut g, "linear", Layout::RowBlocked)
        .unwrap();
    assert!(matmul::linear(&mut g, tokens, w, None).is_err());
    assert!(
        g.slice_rows(w, 0, 8).is_err(),
        "a block's rows do not lie together"
    );
}

#[test]
fn a_weight_follows_the_layout_each_graph_asks_for() {
    let (cin, cout) = (8, ROW_BLOCK);
    let mut rng = Rng::new(11);
    let w = rng.vec(cout * cin * 9, 0.5);
    let b = rng.vec(cout, 0.5);
    let weights = Weights::from_host(
        gpu(),
        vec![
            ("w".into(), vec![cout, cin, 3, 3], w.clone()),
            ("b".into(), vec![cout], b.clone()),
        ],
        Precision::F32,
    )
    .unwrap();
    // A small picture, a large one, the small one again: uploaded blocked, plain, blocked.
    for side in [4, 16, 4] {
        let x = rng.vec(cin * side * side, 1.0);
        let cfg = Conv2d::same(1);
        let shape = [cin, side, side];
        let layout = conv2d::weight_layout(gpu(), &shape, &[cout, cin, 3, 3], DType::F32, cfg);
        let mut g = guarded_graph(gpu());
        let xt = g.input_f32(&shape, &x).unwrap();
        let wt = weights.tensor_in(&mut g, "w", layout).unwrap();
        let bt = weights.tensor(&mut g, "b").unwrap();
        let y = conv2d::conv2d(&mut g, xt, wt, bt, cfg).unwrap();
        let (out, _) = run_checked(&g, &[y]);
        let want = conv2d::reference(&x, shape, &w, [cout, cin, 3, 3], &b, cfg);
        assert_close(
            &out[0].f32(),
            &want,
            1e-5,
            &format!("{side}×{side} {layout:?}"),
        );
    }
}

/// A graph uploads its weights while it is built, before it runs; every
/// `STAGING_FLUSH` bytes their staging copies go to the GPU, so that they never all wait
/// in host memory at once, and the weights read back whole afterwards.
#[test]
fn weight_uploads_hand_over_their_staging_copies_as_they_add_up() {
    let len = (STAGING_FLUSH / 2 / 4 * 4 / 5) as usize; // 0.4 × the flush size each
    let bytes = 4 * len as u64;
    let weights = Weights::from_host(
        gpu(),
        (1..=3)
            .map(|i| (format!("w{i}"), vec![len], vec![i as f32; len]))
            .collect(),
        Precision::F32,
    )
    .unwrap();
    let mut g = guarded_graph(gpu());
    let w1 = weights.tensor(&mut g, "w1").unwrap();
    assert_eq!(weights.unflushed_bytes(), bytes);
    let w2 = weights.tensor(&mut g, "w2").unwrap();
    assert_eq!(weights.unflushed_bytes(), 2 * bytes);
    let w3 = weights.tensor(&mut g, "w3").unwrap();
    assert_eq!(
        weights.unflushed_bytes(),
        0,
        "past the flush size: handed over"
    );
    let sum = elementwise::add(&mut g, w1, w2).unwrap();
    let sum = elementwise::add(&mut g, sum, w3).unwrap();
    let (out, _) = run_checked(&g, &[sum]);
    assert!(out[0].f32().iter().all(|&v| v == 6.0));
}

/// A generated weight is made when a graph first asks for it, not at load; a generator
/// that makes the wrong number of values is an error, not a short buffer.
#[test]
fn generated_weights_are_made_when_uploaded() {
    let made = Arc::new(AtomicUsize::new(0));
    let counter = made.clone();
    let values: Vec<f32> = (0..40).map(|i| i as f32 - 20.0).collect();
    let expected = values.clone();
    let good: Generator = Box::new(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        values.clone()
    });
    let short: Generator = Box::new(|| vec![0.0; 2]);
    let weights = Weights::generated(
        gpu(),
        vec![
            ("w".into(), vec![5, 8], good),
            ("short".into(), vec![3], short),
        ],
        Precision::F32,
    )
    .unwrap();
    assert_eq!(made.load(Ordering::Relaxed), 0, "nothing made at load");
    let mut g = guarded_graph(gpu());
    let w = weights.tensor(&mut g, "w").unwrap();
    let twice = elementwise::add(&mut g, w, w).unwrap();
    let (out, _) = run_checked(&g, &[twice]);
    let want: Vec<f32> = expected.iter().map(|v| 2.0 * v).collect();
    assert_eq!(out[0].f32(), want);
    assert_eq!(made.load(Ordering::Relaxed), 1);
    let err = weights
        .tensor(&mut Graph::new(gpu()), "short")
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 values made for [3]"), "{err}");
}
