mod common;

use common::{assert_close, gpu, guarded_graph, portable_gpu, run_checked};
use oscar_wgpu::gpu::Gpu;
use oscar_wgpu::graph::{Graph, Tensor};
use oscar_wgpu::ops::{attention, softmax};
use oscar_wgpu::rng::Rng;
use oscar_wgpu::Result;

/// An attention entry point: `attention` (which picks), `flash` or `blocked`.
type Attention = fn(&mut Graph, Tensor, Tensor, Tensor, usize) -> Result<Tensor>;

fn blocked(g: &mut Graph, q: Tensor, k: Tensor, v: Tensor, _heads: usize) -> Result<Tensor> {
    attention::blocked(g, q, k, v)
}

/// Runs attention on `shape` = (nq, nk, heads, d) and compares the row ranges
/// [start, end) in `rows` with the CPU reference; values are uniform in
/// [v_mean - 1, v_mean + 1).
fn check_rows(
    shape: (usize, usize, usize, usize),
    rows: &[(usize, usize)],
    v_mean: f32,
    tol: f32,
    seed: u64,
) {
    check_with(attention::attention, shape, rows, v_mean, tol, seed);
}

fn check_with(
    op: Attention,
    shape: (usize, usize, usize, usize),
    rows: &[(usize, usize)],
    v_mean: f32,
    tol: f32,
    seed: u64,
) {
    check_on(gpu(), op, shape, rows, v_mean, tol, seed);
}

fn check_on(
    gpu: &'static Gpu,
    op: Attention,
    shape: (usize, usize, usize, usize),
    rows: &[(usize, usize)],
    v_mean: f32,
    tol: f32,
    seed: u64,
) {
    let (nq, nk, heads, d) = shape;
    let c = heads * d;
    let mut rng = Rng::new(seed);
    let q = rng.vec(nq * c, 1.0);
    let k = rng.vec(nk * c, 1.0);
    let v: Vec<f32> = rng.vec(nk * c, 1.0).iter().map(|x| x + v_mean).collect();
    let mut g = guarded_graph(gpu);
    let (qt, kt, vt) = (
        g.input_f32(&[nq, c], &q).unwrap(),
        g.input_f32(&[nk, c], &k).unwrap(),
        g.input_f32(&[nk, c], &v).unwrap(),
    );
    let y = op(&mut g, qt, kt, vt, heads).unwrap();
    let (out, _) = run_checked(&g, &[y]);
    let got = out[0].f32();
    for &(start, end) in rows {
        let want = attention::reference(&q[start * c..end * c], &k, &v, end - start, nk, heads, d);
        let what = format!("attention nq {nq} nk {nk} heads {heads} d {d}, rows {start}..{end}");
        assert_close(&got[start * c..end * c], &want, tol, &what);
    }
}

fn check(nq: usize, nk: usize, heads: usize, d: usize, seed: u64) {
    check_rows((nq, nk, heads, d), &[(0, nq)], 0.0, 1e-5, seed);
}

#[test]
fn attention_sd_heads() {
    // SD's 64-dim heads; 77 keys is cross-attention on the text embedding.
    check(130, 77, 2, 64, 1);
    check(70, 150, 5, 64, 2);
    // A second workgroup of the subgroup kernel's 512 queries, cut mid-way through a
    // lane's eight rows (li + 64i).
    check(700, 33, 2, 64, 16);
}

#[test]
fn attention_small_and_odd_head_dims() {
    check(50, 45, 3, 32, 3);
    check(17, 9, 2, 3, 4);
    check(1, 1, 1, 4, 5);
    check(9, 20, 2, 80, 6);
}

#[test]
fn attention_single_head_over_pixels() {
    // The VAE mid-block: one head over all pixels, 64 channels (tiny model) and 512 (SD).
    check(100, 100, 1, 64, 7);
    check(20, 33, 1, 512, 8);
    // Both ways for the wide head, whichever `attention` picks.
    check_with(
        attention::flash,
        (20, 33, 1, 512),
        &[(0, 20)],
        0.0,
        1e-5,
        12,
    );
    check_with(blocked, (20, 33, 1, 512), &[(0, 20)], 0.0, 1e-5, 12);
    check_with(blocked, (1, 1, 1, 128), &[(0, 1)], 0.0, 1e-5, 13);
    check_with(blocked, (300, 130, 1, 160), &[(0, 300)], 0.0, 1e-5, 14);
}

/// 40000 keys leave room for 419 query rows of scores per block: 900 queries take
/// three blocks; rows on both sides of each block edge are compared.
#[test]
fn attention_blocked_across_blocks() {
    let shape = (900, 40_000, 1, 128);
    check_with(
        blocked,
        shape,
        &[(0, 3), (416, 422), (835, 841), (897, 900)],
        1.0,
        5e-5,
        15,
    );
}

#[test]
fn softmax_rows() {
    for (rows, n, spread, scale, seed) in [
        (1, 1, 1.0, 1.0, 20),
        (3, 5, 1.0, 0.125, 21),
        (70, 1000, 50.0, 0.2, 22),
        (2, 4099, 1.0, 1.0, 23),
    ] {
        let x = Rng::new(seed).vec(rows * n, spread);
        let mut g = guarded_graph(gpu());
        let xt = g.input_f32(&[rows, n], &x).unwrap();
        let y = softmax::softmax(&mut g, xt, scale).unwrap();
        let (out, _) = run_checked(&g, &[y]);
        assert_close(
            &out[0].f32(),
            &softmax::reference(&x, n, scale),
            1e-5,
            &format!("softmax [{rows}, {n}] × {scale}"),
        );
    }
    let mut g = guarded_graph(gpu());
    let xt = g.input_f32(&[2, 2], &[0.0; 4]).unwrap();
    assert!(softmax::softmax(&mut g, xt, 0.0).is_err());
    assert!(softmax::softmax(&mut g, xt, f32::NAN).is_err());
}

/// A 256×256 latent: 65536 queries (sampled rows are compared).
#[test]
fn attention_many_queries() {
    let n = 65_536;
    check_rows(
        (n, 77, 5, 64),
        &[(0, 40), (30_000, 30_040), (n - 40, n)],
        0.0,
        1e-5,
        9,
    );
}

/// Keys and values past the binding limit (and, on lavapipe, past its loop cap): key
/// windows carry the softmax state, per head-dim chunk where heads take several (four
/// heads of 128: lavapipe's kernel in two chunks; one head of 512, the VAE's, runs the
/// same code in eight chunks, and for a few queries on one workgroup: 94 s against 19 on
/// lavapipe on a 2-core AMD EPYC). Values are offset from zero so the output is near
/// v_mean, not a mean of 65600 cancelling terms. The tolerance allows for f32 running
/// sums over 65600 keys, which round by about √n·2⁻²⁴ ≈ 1.5e-5.
#[test]
fn attention_long_key_sequences() {
    let nk = 65_600;
    assert!(
        (nk * 512 * 4) as u64 > gpu().max_binding(),
        "the test must exceed one binding"
    );
    check_rows((3, nk, 4, 128), &[(0, 3)], 1.0, 5e-5, 10);
    check_rows((2, nk, 170, 3), &[(0, 2)], 1.0, 5e-5, 11);
}

#[test]
fn attention_shape_errors() {
    let mut g = guarded_graph(gpu());
    let q = g.input_f32(&[4, 6], &[0.0; 24]).unwrap();
    let k = g.input_f32(&[5, 6], &[0.0; 30]).unwrap();
    let v = g.input_f32(&[5, 4], &[0.0; 20]).unwrap();
    assert!(attention::attention(&mut g, q, k, v, 2).is_err());
    assert!(attention::attention(&mut g, q, k, k, 4).is_err());
    assert!(attention::attention(&mut g, q, k, k, 0).is_err());
}

/// With subgroups off (as on GPUs without 8-lane subgroups): the tiled flash kernel for
/// heads of up to 64 dims in fours (64 queries per workgroup, keys in blocks of 32 —
/// partial blocks of both, 1200 keys in three windows on CPU adapters, heads of 12), the
/// per-query one for other heads, and the blocked products on the portable matmul for one
/// wide head.
#[test]
fn portable_kernels() {
    let gpu = portable_gpu();
    check_on(
        gpu,
        attention::attention,
        (130, 77, 2, 64),
        &[(0, 130)],
        0.0,
        1e-5,
        30,
    );
    check_on(
        gpu,
        attention::attention,
        (70, 1200, 5, 64),
        &[(0, 70)],
        1.0,
        5e-5,
        31,
    );
    check_on(
        gpu,
        attention::attention,
        (17, 9, 2, 12),
        &[(0, 17)],
        0.0,
        1e-5,
        32,
    );
    check_on(
        gpu,
        attention::attention,
        (9, 20, 2, 80),
        &[(0, 9)],
        0.0,
        1e-5,
        33,
    );
    check_on(gpu, blocked, (70, 90, 1, 512), &[(0, 70)], 0.0, 1e-5, 34);
}
