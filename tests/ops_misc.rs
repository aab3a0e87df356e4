//! GroupNorm, transposed conv, upsampling, concat, timestep embedding, channel norms and
//! VQ against their CPU references on small odd shapes; the kernel bench's memory probes.

mod common;

use common::{assert_close, assert_only_kernel, gpu, guarded_graph, run_checked};
use oscar_wgpu::gpu::KernelKey;
use oscar_wgpu::graph::{DType, Graph, Tensor};
use oscar_wgpu::ops::conv2d::Activation;
use oscar_wgpu::ops::{
    channel_norm, concat, conv_transpose2d, group_norm, resize, split_k, timestep, vq,
};
use oscar_wgpu::rng::Rng;
use oscar_wgpu::weights::{Precision, Weights};

/// `values` as a weight-like tensor, stored as packed f16 when `f16`; returns the
/// tensor and the values it actually holds.
fn weight(g: &mut Graph, shape: &[usize], values: &[f32], f16: bool) -> (Tensor, Vec<f32>) {
    if !f16 {
        return (g.input_f32(shape, values).unwrap(), values.to_vec());
    }
    let weights = Weights::from_host(
        gpu(),
        vec![("w".into(), shape.to_vec(), values.to_vec())],
        Precision::F16,
    )
    .unwrap();
    let rounded = values
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    (weights.tensor(g, "w").unwrap(), rounded)
}

fn check_group_norm(
    c: usize,
    h: usize,
    w: usize,
    groups: usize,
    offset: f32,
    f16: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    // SD activations sit far from zero relative to their spread; `offset` makes a naive
    // E[x²] − E[x]² lose about 1e-3 here.
    let x: Vec<f32> = rng.vec(c * h * w, 1.0).iter().map(|v| v + offset).collect();
    let gamma: Vec<f32> = rng.vec(c, 1.0).iter().map(|v| v + 1.0).collect();
    let beta = rng.vec(c, 0.5);
    for silu in [false, true] {
        let mut g = guarded_graph(gpu());
        let xt = g.input_f32(&[c, h, w], &x).unwrap();
        let (gt, gamma_held) = weight(&mut g, &[c], &gamma, f16);
        let (bt, beta_held) = weight(&mut g, &[c], &beta, f16);
        let y = group_norm::group_norm(&mut g, xt, gt, bt, groups, 1e-6, silu).unwrap();
        let (out, _) = run_checked(&g, &[y]);
        let want =
            group_norm::reference(&x, [c, h, w], &gamma_held, &beta_held, groups, 1e-6, silu);
        assert_close(
            &out[0].f32(),
            &want,
            1e-5,
            &format!("group_norm {c}×{h}×{w} / {groups} offset {offset} f16 {f16} silu {silu}"),
        );
    }
}

#[test]
fn group_norm_odd_shapes() {
    check_group_norm(6, 5, 7, 3, 0.0, false, 1);
    check_group_norm(10, 1, 1, 5, 0.0, false, 2);
    check_group_norm(7, 3, 3, 1, 2.0, false, 3);
    check_group_norm(64, 33, 17, 32, 0.0, false, 4);
    // Groups of 36 elements (vec4 statistics) over 3×3 pixels (scalar normalising).
    check_group_norm(8, 3, 3, 2, 1.0, false, 9);
}

#[test]
fn group_norm_large_mean_and_many_slices() {
    // 4 channels of 64×70 per group: 17 920 elements, five partial slices.
    check_group_norm(8, 64, 70, 2, 50.0, false, 5);
    check_group_norm(96, 24, 24, 32, -30.0, false, 6);
}

#[test]
fn group_norm_f16_affine() {
    check_group_norm(12, 9, 11, 4, 1.0, true, 7);
    check_group_norm(5, 1, 1, 5, 0.0, true, 8);
    check_group_norm(12, 8, 6, 4, 1.0, true, 10);
}

/// `geometry`: (stride, padding, output_padding).
fn check_deconv(
    [cin, h, w]: [usize; 3],
    cout: usize,
    k: usize,
    geometry: (usize, usize, usize),
    f16: bool,
    seed: u64,
) {
    let (stride, pad, out_pad) = geometry;
    let mut rng = Rng::new(seed);
    let x = rng.vec(cin * h * w, 1.0);
    let wt = rng.vec(cin * cout * k * k, 0.5);
    let b = rng.vec(cout, 0.5);
    let mut g = guarded_graph(gpu());
    let xt = g.input_f32(&[cin, h, w], &x).unwrap();
    let (wt_t, wt_held) = weight(&mut g, &[cin, cout, k, k], &wt, f16);
    let (bt, b_held) = weight(&mut g, &[cout], &b, f16);
    let y = conv_transpose2d::conv_transpose2d(&mut g, xt, wt_t, bt, stride, pad, out_pad).unwrap();
    let (out, _) = run_checked(&g, &[y]);
    let oh = conv_transpose2d::out_size(h, k, stride, pad, out_pad).unwrap();
    let ow = conv_transpose2d::out_size(w, k, stride, pad, out_pad).unwrap();
    assert_eq!(out[0].shape, [cout, oh, ow]);
    let want = conv_transpose2d::reference(
        &x,
        [cin, h, w],
        &wt_held,
        [cin, cout, k, k],
        &b_held,
        geometry,
    );
    assert_close(
        &out[0].f32(),
        &want,
        1e-5,
        &format!("deconv {cin}→{cout} {k}×{k} s{stride} p{pad} op{out_pad} on {h}×{w}"),
    );
}

#[test]
fn conv_transpose_compressai_deconv() {
    // compressai's deconv: 5×5, stride 2, padding 2, output_padding 1 (doubles the size).
    check_deconv([5, 7, 9], 6, 5, (2, 2, 1), false, 10);
    check_deconv([3, 1, 1], 11, 5, (2, 2, 1), false, 11);
    check_deconv([17, 12, 21], 9, 5, (2, 2, 1), false, 12);
}

#[test]
fn conv_transpose_other_geometries() {
    check_deconv([4, 6, 5], 3, 3, (1, 1, 0), false, 13);
    check_deconv([6, 5, 8], 10, 4, (2, 1, 0), false, 14);
    check_deconv([3, 4, 3], 5, 2, (2, 0, 0), false, 15);
    check_deconv([2, 5, 7], 4, 3, (3, 0, 2), false, 16);
}

#[test]
fn conv_transpose_f16_weights() {
    check_deconv([7, 5, 6], 13, 5, (2, 2, 1), true, 17);
}

#[test]
fn upsample_odd_sizes() {
    let mut rng = Rng::new(20);
    // Rows of 4 and 12 take the vec4 kernel.
    for (c, h, w) in [
        (3, 5, 7),
        (1, 1, 1),
        (5, 1, 9),
        (2, 13, 1),
        (3, 5, 4),
        (2, 3, 12),
    ] {
        let x = rng.vec(c * h * w, 1.0);
        let mut g = guarded_graph(gpu());
        let xt = g.input_f32(&[c, h, w], &x).unwrap();
        let y = resize::upsample_nearest2x(&mut g, xt).unwrap();
        let (out, report) = run_checked(&g, &[y]);
        let kernel = if w % 4 == 0 {
            "resize.nearest2x4"
        } else {
            "resize.nearest2x"
        };
        assert_only_kernel(&report, kernel, &format!("upsample {c}×{h}×{w}"));
        assert_eq!(out[0].shape, [c, 2 * h, 2 * w]);
        assert_eq!(
            out[0].f32(),
            resize::reference(&x, [c, h, w]),
            "upsample {c}×{h}×{w}"
        );
    }
}

#[test]
fn concat_unaligned_parts() {
    let mut rng = Rng::new(21);
    // 3 channels of 1×1 put the second part 12 bytes in: not at a binding alignment.
    for (ca, cb, h, w) in [(3, 2, 1, 1), (3, 5, 5, 7), (1, 1, 3, 3), (64, 61, 9, 9)] {
        let a = rng.vec(ca * h * w, 1.0);
        let b = rng.vec(cb * h * w, 1.0);
        let mut g = guarded_graph(gpu());
        let at = g.input_f32(&[ca, h, w], &a).unwrap();
        let bt = g.input_f32(&[cb, h, w], &b).unwrap();
        let y = concat::concat_channels(&mut g, at, bt).unwrap();
        let (out, _) = run_checked(&g, &[y]);
        assert_eq!(out[0].shape, [ca + cb, h, w]);
        assert_eq!(
            out[0].f32(),
            concat::reference(&a, &b),
            "concat {ca}+{cb} of {h}×{w}"
        );
    }
}

#[test]
fn concat_rejects_mismatched_planes() {
    let mut g = guarded_graph(gpu());
    let a = g.input_f32(&[2, 3, 4], &[0.0; 24]).unwrap();
    let b = g.input_f32(&[2, 4, 3], &[0.0; 24]).unwrap();
    assert!(concat::concat_channels(&mut g, a, b).is_err());
}

#[test]
fn timestep_embedding_matches_f64() {
    // SD-2.1: dim 320, flip_sin_to_cos, freq_shift 0; t up to 1000 makes sin/cos
    // arguments up to 1000 rad, far outside where WGSL's builtins are specified.
    let cases = [
        (320, true, 0.0),
        (320, false, 1.0),
        (7, false, 1.0),
        (33, true, 0.0),
        (1, true, 0.0),
        (2, false, 0.0),
    ];
    for (dim, flip, shift) in cases {
        for t in [0.0f32, 1.0, 150.0, 281.0, 500.0, 999.0, 1000.0, 4321.5] {
            let mut g = guarded_graph(gpu());
            let y = timestep::timestep_embedding(&mut g, t, dim, flip, shift).unwrap();
            let (out, _) = run_checked(&g, &[y]);
            let want = timestep::reference(t, dim, flip, shift);
            let got = out[0].f32();
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // Absolute: the values are sines and cosines.
            assert!(
                err <= 1e-5,
                "timestep dim {dim} flip {flip} shift {shift} t {t}: error {err:.2e}"
            );
        }
    }
}

#[test]
fn timestep_frequencies_follow_torch() {
    // exp(−ln(10000)·i/160) for dim 320, shift 0, at spot values.
    let f = timestep::frequencies(320, 0.0).unwrap();
    assert_eq!(f.len(), 160);
    assert_eq!(f[0], 1.0);
    // f32 rounding of ln(10000) and of each step: a few e-7 relative.
    assert!(
        (f[80] as f64 / 0.01 - 1.0).abs() < 1e-6,
        "f[80] = {}",
        f[80]
    );
    assert!(
        (f[159] as f64 / 10000f64.powf(-159.0 / 160.0) - 1.0).abs() < 1e-6,
        "f[159] = {}",
        f[159]
    );
    assert!(
        timestep::frequencies(2, 1.0).is_err(),
        "half − shift = 0 must be refused"
    );
}

/// A plane whose squares each fall under half a unit in the last place of the sum they
/// join (1e4² = 1e8, where f32 steps by 8; 1.99² < 4): a plain running sum drops them
/// all, 2·10⁻⁵ of the norm; the compensated one keeps them.
#[test]
fn channel_norms_keep_what_plain_sums_round_away() {
    let (h, w) = (256, 1024);
    let x: Vec<f32> = (0..h * w)
        .map(|i| if i < 256 { 1e4 } else { 1.99 })
        .collect();
    let mut g = guarded_graph(gpu());
    let xt = g.input_f32(&[1, h, w], &x).unwrap();
    let norms = channel_norm::channel_l2_norms(&mut g, xt).unwrap();
    let (out, _) = run_checked(&g, &[norms]);
    assert_norms(
        &out[0].f32(),
        &x,
        "norm of a plane of large and small values",
    );
}

/// Each channel's norm against the f64 reference, within 1e-6 of its own scale.
fn assert_norms(got: &[f32], x: &[f32], what: &str) {
    let want = channel_norm::norms_reference(x, got.len());
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        assert!(
            (got - want).abs() <= 1e-6 * want,
            "{what}: channel {i}: {got} vs {want}"
        );
    }
}

#[test]
fn channel_norms_and_rescale() {
    let mut rng = Rng::new(30);
    for (c, h, w) in [(4, 64, 64), (3, 1, 1), (5, 300, 301), (6, 7, 5)] {
        let x: Vec<f32> = rng.vec(c * h * w, 2.0).iter().map(|v| v + 0.5).collect();
        let target: Vec<f32> = (0..c).map(|_| rng.uniform() * 100.0 + 1.0).collect();
        let mut g = guarded_graph(gpu());
        let xt = g.input_f32(&[c, h, w], &x).unwrap();
        let tt = g.input_f32(&[c], &target).unwrap();
        let norms = channel_norm::channel_l2_norms(&mut g, xt).unwrap();
        let y = channel_norm::rescale_channels(&mut g, xt, tt).unwrap();
        let (out, _) = run_checked(&g, &[norms, y]);
        let what = format!("channel norms of {c}×{h}×{w}");
        assert_norms(&out[0].f32(), &x, &what);
        assert_close(
            &out[1].f32(),
            &channel_norm::rescale_reference(&x, c, &target),
            1e-5,
            &format!("rescale of {c}×{h}×{w}"),
        );
    }
}

fn check_vq(n: usize, d: usize, k: usize, f16: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut z = rng.vec(n * d, 1.0);
    let mut codebook = rng.vec(k * d, 1.0);
    // Row 3, long enough to win for a token along it, and copies of it further on:
    // that token must get 3, not a later copy.
    for v in &mut codebook[3 * d..4 * d] {
        *v *= 10.0;
    }
    for dup in [k / 2, k - 1] {
        codebook.copy_within(3 * d..4 * d, dup * d);
    }
    let token: Vec<f32> = codebook[3 * d..4 * d].iter().map(|v| 0.25 * v).collect();
    z[..d].copy_from_slice(&token);
    let mut g = guarded_graph(gpu());
    let zt = g.input_f32(&[n, d], &z).unwrap();
    let (ct, held) = weight(&mut g, &[k, d], &codebook, f16);
    let idx = vq::argmax_cosine(&mut g, zt, ct).unwrap();
    let (out, _) = run_checked(&g, &[idx]);
    let got = out[0].u32();
    let scores = vq::scores_reference(&z, &held, d);
    let want = vq::argmax_reference(&scores);
    assert_eq!(
        got[0], 3,
        "duplicate codebook rows must resolve to the lowest index"
    );
    for (t, (&a, &b)) in got.iter().zip(&want).enumerate() {
        // f32 summation may only flip a near-tie.
        let gap = scores[t][b as usize] - scores[t][a as usize];
        assert!(
            a == b || gap.abs() < 1e-5,
            "vq token {t}: got {a}, want {b} (score gap {gap:.2e})"
        );
    }
    let exact = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    assert!(exact + 2 >= n, "vq n {n} d {d} k {k}: only {exact} exact");
}

#[test]
fn vq_argmax_with_ties() {
    check_vq(300, 32, 100, false, 40);
    check_vq(17, 3, 9, false, 41);
    check_vq(5, 32, 2048, true, 42);
}

#[test]
fn vq_all_equal_scores_pick_zero() {
    let (n, d, k) = (3, 4, 6);
    let mut g = guarded_graph(gpu());
    let zt = g.input_f32(&[n, d], &[0.0; 12]).unwrap();
    let codebook: Vec<f32> = (0..k * d).map(|i| i as f32).collect();
    let ct = g.input_f32(&[k, d], &codebook).unwrap();
    let idx = vq::argmax_cosine(&mut g, zt, ct).unwrap();
    let (out, _) = run_checked(&g, &[idx]);
    assert_eq!(
        out[0].u32(),
        [0, 0, 0],
        "an all-zero token scores 0 everywhere: first index"
    );
}

/// A token none of whose scores is a number (a NaN in it, or an infinity, which
/// normalises to NaNs) gets k, the index no row has, over a codebook of two windows;
/// the encoder refuses it. Before, it got row 0, a valid token.
#[test]
fn vq_tokens_that_are_not_numbers_win_no_row() {
    let (k, d) = (2048, 32);
    let mut rng = Rng::new(22);
    let codebook = rng.vec(k * d, 1.0);
    let mut z = rng.vec(4 * d, 1.0);
    z[3] = f32::NAN;
    z[d + 7] = f32::INFINITY;
    z[2 * d..3 * d].fill(0.0);
    let mut g = guarded_graph(gpu());
    let zt = g.input_f32(&[4, d], &z).unwrap();
    let cb = g.input_f32(&[k, d], &codebook).unwrap();
    let idx = vq::argmax_cosine(&mut g, zt, cb).unwrap();
    let (out, _) = run_checked(&g, &[idx]);
    let want = vq::argmax_reference(&vq::scores_reference(&z, &codebook, d));
    assert_eq!(&want[..3], [k as u32, k as u32, 0]);
    assert!((want[3] as usize) < k);
    assert_eq!(out[0].u32(), want);
}

#[test]
fn gather_rows_clamps() {
    let mut rng = Rng::new(50);
    for (k, d, f16) in [(16, 32, false), (7, 5, true), (1, 3, false)] {
        let table = rng.vec(k * d, 1.0);
        let indices: Vec<u32> = (0..37)
            .map(|i| {
                if i % 11 == 10 {
                    k as u32 + 5
                } else {
                    rng.below(k as u64) as u32
                }
            })
            .collect();
        let mut g = guarded_graph(gpu());
        let (tt, held) = weight(&mut g, &[k, d], &table, f16);
        let it = g.input_u32(&[indices.len()], &indices).unwrap();
        let y = vq::gather_rows(&mut g, tt, it).unwrap();
        let (out, _) = run_checked(&g, &[y]);
        assert_eq!(
            out[0].f32(),
            vq::gather_reference(&held, d, &indices),
            "gather k {k} d {d} f16 {f16}"
        );
    }
}

/// The largest codebook (2048 × 32) with the winner in its last rows: a scan that
/// stopped early (llvmpipe silently caps loops at 65535 trips) would miss it.
#[test]
fn vq_argmax_scans_the_whole_large_codebook() {
    let (n, k, d) = (37, 2048, 32);
    let mut rng = Rng::new(21);
    let z = rng.vec(n * d, 1.0);
    let mut codebook = rng.vec(k * d, 0.05);
    // Token t's own direction sits at row k − 1 − t, well past the first window.
    for t in 0..n {
        let norm = z[t * d..(t + 1) * d]
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt();
        for i in 0..d {
            codebook[(k - 1 - t) * d + i] = z[t * d + i] / norm;
        }
    }
    let mut g = guarded_graph(gpu());
    let zt = g.input_f32(&[n, d], &z).unwrap();
    let cb = g.input_f32(&[k, d], &codebook).unwrap();
    let idx = vq::argmax_cosine(&mut g, zt, cb).unwrap();
    let (out, _) = run_checked(&g, &[idx]);
    let want: Vec<u32> = (0..n).map(|t| (k - 1 - t) as u32).collect();
    assert_eq!(out[0].u32(), want);
    assert_eq!(
        vq::argmax_reference(&vq::scores_reference(&z, &codebook, d)),
        want
    );
}

/// OSCAR's real width (M = 320 input channels) through compressai's deconv: the
/// channel loop must be split under llvmpipe's loop cap, or the sum silently stops.
#[test]
fn conv_transpose_many_input_channels() {
    check_deconv([320, 6, 5], 9, 5, (2, 2, 1), false, 31);
}

/// The same for the 3×3 convolution over the UNet's widest concatenation (2560 channels).
#[test]
fn conv_many_input_channels() {
    use oscar_wgpu::ops::conv2d::{self, Conv2d};
    let (cin, h, w, cout) = (2560, 3, 4, 5);
    let mut rng = Rng::new(32);
    let x = rng.vec(cin * h * w, 1.0);
    let wt = rng.vec(cout * cin * 9, 0.05);
    let b = rng.vec(cout, 0.5);
    let mut g = guarded_graph(gpu());
    let xt = g.input_f32(&[cin, h, w], &x).unwrap();
    let wt_t = g.input_f32(&[cout, cin, 3, 3], &wt).unwrap();
    let bt = g.input_f32(&[cout], &b).unwrap();
    let y = conv2d::conv2d(&mut g, xt, wt_t, bt, Conv2d::same(1)).unwrap();
    let (out, _) = run_checked(&g, &[y]);
    assert_close(
        &out[0].f32(),
        &conv2d::reference(&x, [cin, h, w], &wt, [cout, cin, 3, 3], &b, Conv2d::same(1)),
        1e-5,
        "conv 2560→5",
    );
}

/// One split-K sum against its reference: `splits` slices of [c, n] (odd n: the last
/// invocation's quad is partial), a bias per channel (`inner` n) or per column (1).
fn check_split_sum(
    splits: usize,
    c: usize,
    n: usize,
    bias: Option<(usize, bool)>,
    act: Activation,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let part = rng.vec(splits * c * n, 1.0);
    let mut g = guarded_graph(gpu());
    let part_t = g.input_f32(&[splits, c, n], &part).unwrap();
    let y = g.intermediate(&[c, n], DType::F32);
    let bias = bias.map(|(inner, f16)| {
        let count = if inner == 1 { n } else { c };
        let (t, values) = weight(&mut g, &[count], &rng.vec(count, 0.5), f16);
        (t, values, inner)
    });
    let bias_t = bias.as_ref().map(|(t, _, inner)| (*t, *inner));
    split_k::sum_into(&mut g, part_t, bias_t, act, y).unwrap();
    let (out, report) = run_checked(&g, &[y]);
    let bias_ref = bias.as_ref().map(|(_, v, inner)| (&v[..], *inner));
    let want = split_k::reference(&part, splits, bias_ref, act);
    let what = format!(
        "split-K sum of {splits} × [{c}, {n}], bias {:?}",
        bias_t.map(|b| b.1)
    );
    assert_close(&out[0].f32(), &want, 1e-6, &what);
    assert_only_kernel(&report, "split_k.sum", &what);
}

#[test]
fn split_k_sum() {
    check_split_sum(12, 7, 65, Some((65, true)), Activation::Silu, 20);
    check_split_sum(3, 5, 9, Some((1, false)), Activation::None, 21);
    check_split_sum(2, 1, 3, None, Activation::Relu, 22);
    // More than 256 · 4 outputs: several workgroups.
    check_split_sum(5, 64, 70, Some((70, false)), Activation::Relu, 23);
}

/// The kernel bench's memory probes (shaders/probe.wgsl) move what they are credited
/// with: `copy` every vec4, `read_stream` every vec4 of its 16 runs, summed, so that a
/// faster reading cannot come from reading less. 64 · 3 + 5 invocations: a partial
/// workgroup.
#[test]
fn bandwidth_probes_read_every_element() {
    let n = 64 * 3 + 5;
    let src = Rng::new(30).vec(16 * n * 4, 1.0);
    // The probes' parameters: vec4 elements, then three words they do not read here.
    let params: Vec<u8> = [(16 * n) as u32, 0, 0, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    for (entry, outputs, invocations) in [("copy", 16 * n, 16 * n), ("read_stream", n, n)] {
        let mut g = guarded_graph(gpu());
        let x = g.input_f32(&[src.len()], &src).unwrap();
        let y = g.intermediate(&[outputs * 4], DType::F32);
        let views = vec![g.view(y).unwrap(), g.view(x).unwrap()];
        let grid = g.grid(invocations.div_ceil(64) as u64).unwrap();
        g.dispatch(KernelKey::new("probe", entry), &params, views, grid, 0);
        let out = run_checked(&g, &[y]).0[0].f32();
        let want: Vec<f32> = if entry == "copy" {
            src.clone()
        } else {
            (0..n * 4)
                .map(|i| (0..16).map(|r| src[i + r * n * 4]).sum())
                .collect()
        };
        assert_close(&out, &want, 1e-6, entry);
    }
}
