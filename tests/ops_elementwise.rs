mod common;

use common::{assert_close, assert_only_kernel, gpu, guarded_graph, run_checked};
use oscar_wgpu::ops::elementwise::{self, binary, geglu, unary, Binary, Unary};
use oscar_wgpu::rng::Rng;

#[test]
fn unary_ops_match_reference() {
    let mut rng = Rng::new(11);
    let x = rng.vec(1037, 6.0);
    for op in [
        Unary::Silu,
        Unary::Relu,
        Unary::Gelu,
        Unary::Sigmoid,
        Unary::Affine(-0.37, 1.5),
    ] {
        let mut g = guarded_graph(gpu());
        let xt = g.input_f32(&[1037], &x).unwrap();
        let y = unary(&mut g, xt, op).unwrap();
        let (out, _) = run_checked(&g, &[y]);
        let want: Vec<f32> = x.iter().map(|&v| op.apply(v)).collect();
        assert_close(&out[0].f32(), &want, 1e-6, &format!("{op:?}"));
    }
}

#[test]
fn binary_broadcasts_same_shape_per_channel_and_scalar() {
    let mut rng = Rng::new(12);
    // 105 elements (the general kernel) and 120 (same-shape operands take `binary4`).
    for (c, h, w) in [(7, 5, 3), (8, 5, 3)] {
        let a = rng.vec(c * h * w, 2.0);
        for (b_shape, op) in [
            (vec![c, h, w], Binary::Axpby(0.5, -2.0)),
            (vec![c], Binary::ADD),
            (vec![1], Binary::Mul),
            (vec![c, h, w], Binary::Gate),
            (vec![c, h, w], Binary::Mul),
        ] {
            let b_len: usize = b_shape.iter().product();
            let b = rng.vec(b_len, 2.0);
            let mut g = guarded_graph(gpu());
            let at = g.input_f32(&[c, h, w], &a).unwrap();
            let bt = g.input_f32(&b_shape, &b).unwrap();
            let y = binary(&mut g, at, bt, op).unwrap();
            let (out, report) = run_checked(&g, &[y]);
            let same4 = b_len == a.len() && a.len().is_multiple_of(4);
            let kernel = if same4 {
                "elementwise.binary4"
            } else {
                "elementwise.binary"
            };
            assert_only_kernel(&report, kernel, &format!("{op:?} against {b_shape:?}"));
            let inner = a.len() / b_len;
            let want: Vec<f32> = a
                .iter()
                .enumerate()
                .map(|(i, &u)| op.apply(u, b[i / inner]))
                .collect();
            assert_close(
                &out[0].f32(),
                &want,
                1e-6,
                &format!("{op:?} against {b_shape:?}"),
            );
        }
    }
}

#[test]
fn binary_rejects_incompatible_shapes() {
    let mut g = guarded_graph(gpu());
    let a = g.input_f32(&[3, 4], &[0.0; 12]).unwrap();
    let b = g.input_f32(&[5], &[0.0; 5]).unwrap();
    assert!(binary(&mut g, a, b, Binary::ADD).is_err());
}

#[test]
fn geglu_matches_reference() {
    let mut rng = Rng::new(13);
    // 9 columns (the scalar kernel) and 12 (`geglu4`).
    for (rows, cols) in [(13, 9), (7, 12)] {
        let x = rng.vec(rows * 2 * cols, 4.0);
        let mut g = guarded_graph(gpu());
        let xt = g.input_f32(&[rows, 2 * cols], &x).unwrap();
        let y = geglu(&mut g, xt).unwrap();
        let (out, report) = run_checked(&g, &[y]);
        let kernel = if cols % 4 == 0 {
            "elementwise.geglu4"
        } else {
            "elementwise.geglu"
        };
        assert_only_kernel(&report, kernel, &format!("geglu {rows}×{cols}"));
        assert_close(
            &out[0].f32(),
            &elementwise::geglu_reference(&x, rows, cols),
            1e-6,
            &format!("geglu {rows}×{cols}"),
        );
    }
}

#[test]
fn erf_reference_is_accurate() {
    // Known values of erf to 1e-12.
    for (x, want) in [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (-2.0, -0.995_322_265_018_952_7),
        (3.5, 0.999_999_256_901_627_7),
    ] {
        assert!((elementwise::erf(x) - want).abs() < 1e-12, "erf({x})");
    }
}
