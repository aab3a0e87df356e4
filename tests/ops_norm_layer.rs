mod common;

use std::sync::Arc;

use common::{assert_close, gpu, guarded_graph};
use oscar_wgpu::graph::{DType, Graph};
use oscar_wgpu::ops::layer_norm;
use oscar_wgpu::rng::Rng;
use wgpu::util::DeviceExt;

fn check(n: usize, c: usize, offset: f32, eps: f32, f16: bool, seed: u64) {
    check_tol(n, c, offset, eps, f16, seed, 1e-5)
}

fn check_tol(n: usize, c: usize, offset: f32, eps: f32, f16: bool, seed: u64, tol: f32) {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = rng.vec(n * c, 1.0).iter().map(|v| v + offset).collect();
    let mut gamma = rng.vec(c, 1.0);
    let mut beta = rng.vec(c, 1.0);
    let mut g = guarded_graph(gpu());
    let xt = g.input_f32(&[n, c], &x).unwrap();
    let (gt, bt) = if f16 {
        let mut pack = |v: &mut Vec<f32>| {
            let h: Vec<half::f16> = v.iter().map(|&f| half::f16::from_f32(f)).collect();
            *v = h.iter().map(|x| x.to_f32()).collect();
            let words: Vec<u32> = h
                .chunks(2)
                .map(|p| p[0].to_bits() as u32 | (p.get(1).map_or(0, |x| x.to_bits()) as u32) << 16)
                .collect();
            let buf = gpu()
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents: bytemuck::cast_slice(&words),
                    usage: wgpu::BufferUsages::STORAGE,
                });
            g.resident(&[c], DType::F16, Arc::new(buf))
        };
        (pack(&mut gamma), pack(&mut beta))
    } else {
        (
            g.input_f32(&[c], &gamma).unwrap(),
            g.input_f32(&[c], &beta).unwrap(),
        )
    };
    let y = layer_norm::layer_norm(&mut g, xt, gt, bt, eps).unwrap();
    let (out, report) = g.run(&[y]).unwrap();
    let want = layer_norm::reference(&x, n, c, &gamma, &beta, eps);
    let what = format!("layer_norm [{n}, {c}] offset {offset} f16 {f16}");
    assert_close(&out[0].f32(), &want, tol, &what);
    assert_eq!(report.stray_bytes, 0, "{what}: stores past a tensor's end");
}

#[test]
fn layer_norm_shapes() {
    check(5, 7, 0.0, 1e-5, false, 1);
    check(300, 320, 0.0, 1e-5, false, 2);
    check(1, 1, 0.0, 1e-5, false, 3);
    check(77, 1024, 0.0, 1e-6, false, 4);
}

/// Rows far from zero: E[x²] - E[x]² would cancel to errors near 1e-2 here. The f32
/// mean itself is rounded by 300·2⁻²⁴ ≈ 2e-5, 3e-5 of the rows' standard deviation,
/// hence the looser tolerance.
#[test]
fn layer_norm_offset_rows() {
    check_tol(64, 96, 300.0, 1e-5, false, 5, 4e-5);
}

#[test]
fn layer_norm_f16_params() {
    check(33, 13, 0.0, 1e-5, true, 6);
}

#[test]
fn layer_norm_past_the_binding_limit() {
    let (n, c) = (33_000, 1024);
    assert!(
        (n * c * 4) as u64 > gpu().max_binding(),
        "the test must exceed one binding"
    );
    check(n, c, 0.0, 1e-5, false, 7);
}

#[test]
fn layer_norm_shape_errors() {
    let mut g = Graph::new(gpu());
    let x = g.input_f32(&[4, 3], &[0.0; 12]).unwrap();
    let p3 = g.input_f32(&[3], &[0.0; 3]).unwrap();
    let p4 = g.input_f32(&[4], &[0.0; 4]).unwrap();
    assert!(layer_norm::layer_norm(&mut g, x, p4, p3, 1e-5).is_err());
    assert!(layer_norm::layer_norm(&mut g, x, p3, p4, 1e-5).is_err());
}
