//! Tensors past one storage binding (lavapipe: 128 MiB) through the engine, against
//! the CPU references, and dispatch grids past 65 535 workgroups. The tests share a
//! lock so that only one holds its ~1–2 GiB of host and lavapipe memory at a time.

mod common;

use std::sync::Mutex;

use common::{assert_close, check_matmul_on, gpu, guarded_graph, portable_gpu, run_checked};
use oscar_wgpu::gpu::{Gpu, GpuOptions};
use oscar_wgpu::graph::fold_grid;
use oscar_wgpu::ops::conv2d::{self, Conv2d};
use oscar_wgpu::ops::elementwise::{self, Unary};
use oscar_wgpu::ops::{concat, conv_transpose2d, group_norm, resize};
use oscar_wgpu::rng::Rng;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1 << 20;

/// The tensors here are past lavapipe's 128 MiB bindings, so their ops must split them. On
/// adapters with larger bindings the test still checks the result, and says so.
fn note_if_within_binding(bytes: usize, what: &str) {
    let limit = gpu().max_binding() as usize;
    if bytes <= limit {
        eprintln!(
            "note: {what} ({} MiB) fits this adapter's {} MiB bindings: no windows exercised",
            bytes / MIB,
            limit / MIB
        );
    }
}

#[test]
fn fold_grid_splits_past_the_limit() {
    let max = 65_535u32;
    assert_eq!(fold_grid(0, max).unwrap(), [1, 1, 1]);
    assert_eq!(fold_grid(1, max).unwrap(), [1, 1, 1]);
    assert_eq!(fold_grid(65_535, max).unwrap(), [65_535, 1, 1]);
    assert_eq!(fold_grid(65_536, max).unwrap(), [65_535, 2, 1]);
    assert_eq!(
        fold_grid(65_535 * 65_535, max).unwrap(),
        [65_535, 65_535, 1]
    );
    assert_eq!(
        fold_grid(65_535 * 65_535 + 1, max).unwrap(),
        [65_535, 65_535, 2]
    );
    assert!(fold_grid(65_535u64.pow(3) + 1, max).is_err());
    let mut rng = Rng::new(1);
    for _ in 0..1000 {
        let groups = rng.below(1 << 40) + 1;
        let [x, y, z] = fold_grid(groups, max).unwrap();
        let total = x as u64 * y as u64 * z as u64;
        assert!(x <= max && y <= max && z <= max, "{groups}: {x}×{y}×{z}");
        // Enough workgroups, and at most one partial row of spare ones.
        assert!(
            total >= groups && total - groups < x as u64 * y as u64,
            "{groups}: {x}×{y}×{z}"
        );
    }
    // A small limit exercises the z fold with small numbers.
    assert_eq!(fold_grid(250, 10).unwrap(), [10, 10, 3]);
    assert_eq!(fold_grid(1000, 10).unwrap(), [10, 10, 10]);
    assert!(fold_grid(1001, 10).is_err());
}

#[test]
fn unary_on_a_folded_grid() {
    let _guard = lock();
    // 65 537 workgroups of 256: past the per-dimension limit, folded into y.
    let n = 65_536 * 256 + 17;
    let x = Rng::new(2).vec(n, 4.0);
    let mut g = guarded_graph(gpu());
    let xt = g.input_f32(&[n], &x).unwrap();
    let y = elementwise::unary(&mut g, xt, Unary::Affine(0.5, 3.0)).unwrap();
    assert!(
        g.grid(n.div_ceil(256) as u64).unwrap()[1] > 1,
        "the grid must be folded"
    );
    let (out, _) = run_checked(&g, &[y]);
    let want: Vec<f32> = x
        .iter()
        .map(|&v| Unary::Affine(0.5, 3.0).apply(v))
        .collect();
    assert_close(&out[0].f32(), &want, 1e-7, "affine over a folded grid");
}

#[test]
fn binary_add_past_binding() {
    let _guard = lock();
    let n = 136 * MIB / 4 + 3;
    note_if_within_binding(4 * n, "add operand");
    let mut rng = Rng::new(3);
    let a = rng.vec(n, 1.0);
    let b = rng.vec(n, 1.0);
    let mut g = guarded_graph(gpu());
    let (at, bt) = (
        g.input_f32(&[n], &a).unwrap(),
        g.input_f32(&[n], &b).unwrap(),
    );
    let y = elementwise::add(&mut g, at, bt).unwrap();
    let (out, _) = run_checked(&g, &[y]);
    let want: Vec<f32> = a.iter().zip(&b).map(|(&u, &v)| u + v).collect();
    assert_close(&out[0].f32(), &want, 1e-7, "add past the binding limit");
}

/// A per-channel operand broadcast over 136 MiB: each window of `a` must index the whole
/// operand from its own start.
#[test]
fn broadcast_add_past_binding() {
    let _guard = lock();
    let (c, hw) = (136, 512 * 512);
    note_if_within_binding(4 * c * hw, "add operand");
    let mut rng = Rng::new(42);
    let a = rng.vec(c * hw, 1.0);
    let b = rng.vec(c, 1.0);
    let mut g = guarded_graph(gpu());
    let (at, bt) = (
        g.input_f32(&[c, 512, 512], &a).unwrap(),
        g.input_f32(&[c], &b).unwrap(),
    );
    let y = elementwise::add(&mut g, at, bt).unwrap();
    let (out, _) = run_checked(&g, &[y]);
    let want: Vec<f32> = a.iter().enumerate().map(|(i, &u)| u + b[i / hw]).collect();
    assert_close(
        &out[0].f32(),
        &want,
        1e-7,
        "broadcast add past the binding limit",
    );
}

/// One group of 4096 × 4100 (64 MiB): 65 600 workgroups apply the statistics, a grid
/// folded past 65 535.
#[test]
fn group_norm_on_a_folded_grid() {
    let _guard = lock();
    let (c, h, w) = (1, 4096, 4100);
    let mut rng = Rng::new(43);
    let x = rng.vec(c * h * w, 2.0);
    let (gamma, beta) = (vec![1.5], vec![-0.25]);
    check_group_norm(
        &x,
        [c, h, w],
        (&gamma, &beta),
        1,
        false,
        "group_norm on a folded grid",
    );
}

#[test]
fn group_norm_silu_past_binding() {
    let _guard = lock();
    // 136 channels of 512×512 = 136 MiB in 8 groups of 17 MiB: two windows of whole groups.
    let (c, h, w, groups) = (136, 512, 512, 8);
    note_if_within_binding(4 * c * h * w, "group_norm input");
    let mut rng = Rng::new(4);
    let x: Vec<f32> = rng.vec(c * h * w, 1.0).iter().map(|v| v + 3.0).collect();
    let gamma: Vec<f32> = rng.vec(c, 0.5).iter().map(|v| v + 1.0).collect();
    let beta = rng.vec(c, 0.5);
    check_group_norm(
        &x,
        [c, h, w],
        (&gamma, &beta),
        groups,
        true,
        "group_norm + SiLU past the binding limit",
    );
}

/// `group_norm` (eps 1e-6) of `x` [c, h, w] on the test device against its CPU reference.
fn check_group_norm(
    x: &[f32],
    [c, h, w]: [usize; 3],
    (gamma, beta): (&[f32], &[f32]),
    groups: usize,
    silu: bool,
    what: &str,
) {
    let mut g = guarded_graph(gpu());
    let xt = g.input_f32(&[c, h, w], x).unwrap();
    let gt = g.input_f32(&[c], gamma).unwrap();
    let bt = g.input_f32(&[c], beta).unwrap();
    let y = group_norm::group_norm(&mut g, xt, gt, bt, groups, 1e-6, silu).unwrap();
    let (out, _) = run_checked(&g, &[y]);
    drop(g);
    let want = group_norm::reference(x, [c, h, w], gamma, beta, groups, 1e-6, silu);
    assert_close(&out[0].f32(), &want, 1e-5, what);
}

#[test]
fn upsample_to_256_mib() {
    let _guard = lock();
    let (c, h, w) = (256, 256, 256);
    note_if_within_binding(4 * 4 * c * h * w, "upsample output");
    let x = Rng::new(5).vec(c * h * w, 1.0);
    let mut g = guarded_graph(gpu());
    let xt = g.input_f32(&[c, h, w], &x).unwrap();
    let y = resize::upsample_nearest2x(&mut g, xt).unwrap();
    let (out, _) = run_checked(&g, &[y]);
    drop(g);
    assert!(
        out[0].f32() == resize::reference(&x, [c, h, w]),
        "upsample to 256 MiB differs"
    );
}

#[test]
fn concat_past_binding_at_an_unaligned_offset() {
    let _guard = lock();
    // One row of 9 000 001 pixels: b starts 36 000 004 bytes in (not aligned) and
    // itself spans two windows.
    let (ca, cb, w) = (1, 4, 9_000_001);
    note_if_within_binding(4 * cb * w, "concat operand");
    let mut rng = Rng::new(6);
    let a = rng.vec(ca * w, 1.0);
    let b = rng.vec(cb * w, 1.0);
    let mut g = guarded_graph(gpu());
    let at = g.input_f32(&[ca, 1, w], &a).unwrap();
    let bt = g.input_f32(&[cb, 1, w], &b).unwrap();
    let y = concat::concat_channels(&mut g, at, bt).unwrap();
    let (out, _) = run_checked(&g, &[y]);
    drop(g);
    assert!(
        out[0].f32() == concat::reference(&a, &b),
        "concat past the binding limit differs"
    );
}

/// 130 channels of 512×512 (3×3, the general kernel), 132 (3×3 and 1×1, the vector
/// kernels on lavapipe): inputs of 130 and 132 MiB in two accumulating input-channel
/// windows.
#[test]
fn conv2d_input_past_binding() {
    let _guard = lock();
    conv2d_past_binding(gpu(), 130, 3, 8);
    conv2d_past_binding(gpu(), 132, 3, 8);
    conv2d_past_binding(gpu(), 132, 1, 8);
}

/// 132 output channels of 512×512 (132 MiB), written in two output-channel windows, on
/// both kernel sets.
#[test]
fn conv2d_output_past_binding() {
    let _guard = lock();
    conv2d_past_binding(gpu(), 4, 3, 132);
    conv2d_past_binding(portable_gpu(), 4, 3, 132);
}

/// The same on the portable kernels, with 128 output channels: `tiled128` (2 048 tiles
/// of 128 channels × 128 pixels) adding the second input window to what the first left.
#[test]
fn conv2d_input_past_binding_portable() {
    let _guard = lock();
    let ran = conv2d_past_binding(portable_gpu(), 132, 1, 128);
    assert!(ran.is_empty() || ran == ["conv2d.tiled128"], "{ran:?}");
}

/// Returns the kernels that ran, where the adapter has timestamp queries to say.
fn conv2d_past_binding(gpu: &'static Gpu, cin: usize, k: usize, cout: usize) -> Vec<String> {
    let (h, w) = (512, 512);
    note_if_within_binding(4 * cin.max(cout) * h * w, "conv2d tensor");
    let mut rng = Rng::new(7);
    let x = rng.vec(cin * h * w, 1.0);
    let wt = rng.vec(cout * cin * k * k, 0.1);
    let b = rng.vec(cout, 0.5);
    let pad = k / 2;
    let cfg = Conv2d::same(pad);
    let mut g = guarded_graph(gpu);
    let xt = g.input_f32(&[cin, h, w], &x).unwrap();
    let wt_t = g.input_f32(&[cout, cin, k, k], &wt).unwrap();
    let bt = g.input_f32(&[cout], &b).unwrap();
    let y = conv2d::conv2d(&mut g, xt, wt_t, bt, cfg).unwrap();
    let (out, report) = run_checked(&g, &[y]);
    drop(g);
    let got = out[0].f32();
    // The full reference is 2.5 G multiply-adds; check 8 192 pixels instead, every
    // output channel, the borders included (each sums both input windows).
    let mut points: Vec<(usize, usize)> = (0..w)
        .step_by(37)
        .flat_map(|x| [(0, x), (h - 1, x)])
        .collect();
    points.extend((0..h).step_by(37).flat_map(|y| [(y, 0), (y, w - 1)]));
    while points.len() < 1024 {
        points.push((rng.below(h as u64) as usize, rng.below(w as u64) as usize));
    }
    let (mut got_s, mut want_s) = (Vec::new(), Vec::new());
    for oc in 0..cout {
        for &(oy, ox) in &points {
            let mut acc = b[oc] as f64;
            for ic in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = (
                            (oy + ky) as isize - pad as isize,
                            (ox + kx) as isize - pad as isize,
                        );
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            acc += x[(ic * h + iy as usize) * w + ix as usize] as f64
                                * wt[((oc * cin + ic) * k + ky) * k + kx] as f64;
                        }
                    }
                }
            }
            got_s.push(got[(oc * h + oy) * w + ox]);
            want_s.push(acc as f32);
        }
    }
    assert!(want_s.len() >= 8192);
    assert_close(
        &got_s,
        &want_s,
        1e-5,
        &format!("{k}×{k} conv2d {cin}→{cout} at 512×512 (sampled)"),
    );
    report.kernels.into_keys().collect()
}

#[test]
fn conv_transpose_past_binding() {
    let _guard = lock();
    // 2×2 stride 2: cheap enough for the full reference. First 130 input channels of
    // 512×512 (130 MiB, accumulating input windows), then 34 output channels of
    // 1024×1024 (136 MiB, output windows).
    for (cin, cout, seed) in [(130, 1, 8), (1, 34, 9)] {
        let (h, w, k) = (512, 512, 2);
        note_if_within_binding(4 * cin.max(4 * cout) * h * w, "conv_transpose2d tensor");
        let mut rng = Rng::new(seed);
        let x = rng.vec(cin * h * w, 1.0);
        let wt = rng.vec(cin * cout * k * k, 0.2);
        let b = rng.vec(cout, 0.5);
        let mut g = guarded_graph(gpu());
        let xt = g.input_f32(&[cin, h, w], &x).unwrap();
        let wt_t = g.input_f32(&[cin, cout, k, k], &wt).unwrap();
        let bt = g.input_f32(&[cout], &b).unwrap();
        let y = conv_transpose2d::conv_transpose2d(&mut g, xt, wt_t, bt, 2, 0, 0).unwrap();
        let (out, _) = run_checked(&g, &[y]);
        drop(g);
        let want =
            conv_transpose2d::reference(&x, [cin, h, w], &wt, [cin, cout, k, k], &b, (2, 0, 0));
        assert_close(
            &out[0].f32(),
            &want,
            1e-5,
            &format!("conv_transpose2d {cin}→{cout} on 512×512"),
        );
    }
}

/// GEGLU on the feed-forward projection of a 1024×1024 image's UNet (rows × 2·1280 f32,
/// past one binding), split into row windows; sampled rows against the reference.
#[test]
fn geglu_past_binding() {
    let _guard = lock();
    let (rows, cols) = (13_200, 1280);
    let bytes = rows * 2 * cols * 4;
    note_if_within_binding(bytes, "geglu input");
    let x = Rng::new(41).vec(rows * 2 * cols, 3.0);
    let mut g = guarded_graph(gpu());
    let xt = g.input_f32(&[rows, 2 * cols], &x).unwrap();
    let y = elementwise::geglu(&mut g, xt).unwrap();
    let (out, _) = run_checked(&g, &[y]);
    let got = out[0].f32();
    for r in (0..rows).step_by(97).chain([rows - 1]) {
        let want = elementwise::geglu_reference(&x[r * 2 * cols..(r + 1) * 2 * cols], 1, cols);
        assert_close(
            &got[r * cols..(r + 1) * cols],
            &want,
            1e-6,
            &format!("geglu row {r}"),
        );
    }
}

/// A batched product whose `b` (2 × 64 × 270 000, 138 MiB) is split into windows, on
/// the portable kernels (lavapipe's subgroup kernels take it whole as a Linear).
#[test]
fn batched_matmul_past_binding() {
    let _guard = lock();
    let (batches, n, k, m) = (2, 4, 64, 270_000);
    note_if_within_binding(4 * batches * k * m, "matmul operand");
    check_matmul_on(portable_gpu(), batches, n, k, m, 44);
}

/// A batched product past one binding whose batches start between aligned offsets: each
/// window binds from the aligned offset below its batch and the kernel skips that head.
/// On the portable kernels (k = 65: x's batches start 780 bytes apart) and on lavapipe's
/// (k = 72) with the 256-byte alignment GPUs ask for; lavapipe's own 16 bytes keep the
/// whole-vec4 rows of its kernels aligned.
#[test]
fn batched_matmul_past_binding_with_misaligned_batches() {
    let _guard = lock();
    let mut coarse = Gpu::new(&GpuOptions::default()).unwrap();
    coarse.limits.min_storage_buffer_offset_alignment = 256;
    for (gpu, (batches, n, k, m)) in [
        (portable_gpu(), (2, 3, 65, 270_000)),
        (&coarse, (2, 3, 72, 270_004)),
    ] {
        note_if_within_binding(4 * batches * k * m, "matmul operand");
        let ran = check_matmul_on(gpu, batches, n, k, m, 45);
        if gpu.has(wgpu::Features::SUBGROUP) {
            assert!(
                ran.iter().all(|k| k.starts_with("matmul_subgroup.")),
                "lavapipe's kernels: {ran:?}"
            );
        }
    }
}
