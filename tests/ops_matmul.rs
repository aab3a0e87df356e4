mod common;

use std::sync::Arc;

use common::{assert_close, check_matmul_on, gpu, portable_gpu};
use oscar_wgpu::gpu::Gpu;
use oscar_wgpu::graph::{DType, Graph, Tensor};
use oscar_wgpu::ops::{matmul, transpose};
use oscar_wgpu::rng::Rng;
use wgpu::util::DeviceExt;

/// Rounds to f16 and returns the rounded values with their packed words.
fn halves(v: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let h: Vec<half::f16> = v.iter().map(|&f| half::f16::from_f32(f)).collect();
    let words = h
        .chunks(2)
        .map(|c| c[0].to_bits() as u32 | (c.get(1).map_or(0, |x| x.to_bits()) as u32) << 16)
        .collect();
    (h.iter().map(|x| x.to_f32()).collect(), words)
}

fn resident_f16(g: &mut Graph, shape: &[usize], words: &[u32]) -> Tensor {
    let buf = g
        .gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(words),
            usage: wgpu::BufferUsages::STORAGE,
        });
    g.resident(shape, DType::F16, Arc::new(buf))
}

/// Checks one Linear against the reference; returns the kernels (`shader.entry`) it ran,
/// where the adapter has timestamp queries to say (none otherwise).
fn check_linear(
    n: usize,
    k: usize,
    m: usize,
    with_bias: bool,
    f16: bool,
    seed: u64,
) -> Vec<String> {
    check_linear_on(gpu(), n, k, m, with_bias, f16, seed)
}

fn check_linear_on(
    gpu: &'static Gpu,
    n: usize,
    k: usize,
    m: usize,
    with_bias: bool,
    f16: bool,
    seed: u64,
) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let x = rng.vec(n * k, 1.0);
    let mut w = rng.vec(m * k, 0.5);
    let mut b = rng.vec(m, 0.5);
    let mut g = Graph::new(gpu);
    let xt = g.input_f32(&[n, k], &x).unwrap();
    let (wt, bt) = if f16 {
        let (wr, ww) = halves(&w);
        let (br, bw) = halves(&b);
        (w, b) = (wr, br);
        (
            resident_f16(&mut g, &[m, k], &ww),
            resident_f16(&mut g, &[m], &bw),
        )
    } else {
        (
            g.input_f32(&[m, k], &w).unwrap(),
            g.input_f32(&[m], &b).unwrap(),
        )
    };
    let y = matmul::linear(&mut g, xt, wt, with_bias.then_some(bt)).unwrap();
    let (out, report) = g.run_profiled(&[y]).unwrap();
    let want = matmul::linear_reference(&x, n, k, &w, m, with_bias.then_some(&b[..]));
    assert_close(
        &out[0].f32(),
        &want,
        1e-5,
        &format!("linear [{n}, {k}] × [{m}, {k}]ᵀ bias {with_bias} f16 {f16}"),
    );
    report.kernels.into_keys().collect()
}

/// Asserts that `ran` is the broadcast kernel's `entry` alone, where the adapter has it
/// (8-lane subgroups) and timestamps to tell.
fn assert_tile(ran: &[String], entry: &str) {
    if gpu().info.subgroup_max_size == 8 && !ran.is_empty() {
        assert_eq!(ran, [format!("matmul_subgroup.{entry}")]);
    }
}

#[test]
fn linear_odd_shapes() {
    // k % 4 != 0 takes the portable kernel, k % 4 == 0 the subgroup one where available.
    check_linear(13, 7, 19, true, false, 1);
    check_linear(300, 36, 21, true, false, 2);
    check_linear(300, 36, 21, false, false, 3);
    check_linear(1, 64, 5, true, false, 4);
    check_linear(77, 1, 3, true, false, 5);
}

#[test]
fn linear_f16_weights() {
    check_linear(45, 40, 33, true, true, 6);
    check_linear(45, 12, 33, true, true, 7);
    check_linear(17, 9, 3, false, true, 8);
}

/// On 8-lane subgroups (lavapipe) k % 8 == 0 and m % 4 == 0 take the broadcast kernel,
/// whose tiles are 16, 8, 4, 2 or 1 rows × 64 columns per lane, or 16 × 16 for products of at
/// most 16 columns: more rows than one workgroup, last row and column blocks only partly
/// used, and the f16 path of each tile.
#[test]
fn linear_broadcast_kernel_edges() {
    assert_tile(&check_linear(1100, 24, 36, true, false, 16), "r16c64");
    assert_tile(&check_linear(1030, 16, 140, true, true, 17), "r16c64");
    assert_tile(&check_linear(3, 8, 4, false, false, 18), "r16c16");
    assert_tile(&check_linear(77, 40, 100, true, false, 24), "r8c64");
    assert_tile(&check_linear(65, 16, 72, true, true, 25), "r8c64");
    assert_tile(&check_linear(32, 24, 68, true, false, 26), "r4c64");
    assert_tile(&check_linear(17, 16, 100, false, true, 27), "r4c64");
    assert_tile(&check_linear(16, 24, 68, true, false, 32), "r2c64");
    assert_tile(&check_linear(9, 16, 132, false, true, 33), "r2c64");
    assert_tile(&check_linear(1, 16, 68, true, false, 30), "r1c64");
    assert_tile(&check_linear(7, 24, 132, true, true, 31), "r1c64");
    assert_tile(&check_linear(300, 40, 12, true, false, 28), "r16c16");
    assert_tile(&check_linear(130, 16, 16, true, true, 29), "r16c16");
}

/// 16 to 127 tokens run as w · xᵀ with the result stored transposed: the weight rows
/// take the tile's rows (a full-height tile where the tokens alone would take a short
/// one) and the tokens its columns, any number of them (77, 17). f16 weights are then
/// the kernel's x; the last row and column blocks are partial.
#[test]
fn linear_few_tokens_run_transposed() {
    assert_tile(&check_linear(68, 24, 260, true, false, 34), "r16c64");
    assert_tile(&check_linear(20, 16, 132, true, true, 35), "r16c64");
    assert_tile(&check_linear(16, 8, 140, false, true, 36), "r16c16");
    assert_tile(&check_linear(124, 40, 200, true, false, 37), "r16c64");
    assert_tile(&check_linear(77, 16, 132, true, false, 38), "r16c64");
    assert_tile(&check_linear(17, 24, 260, true, true, 39), "r16c64");
}

/// A Linear layer from an image's channels × pixels to tokens, and from tokens back to
/// channels × pixels (a transformer's proj_in and proj_out), against the Linear
/// reference with the transposes written out. Where the broadcast kernel takes them
/// (k in eights, pixels in fours) one product runs and nothing is transposed; otherwise
/// a transpose and a Linear.
#[test]
fn linear_across_layouts() {
    for (k, n, m, with_bias, f16, seed, direct) in [
        (24, 68, 37, true, false, 40, true),
        (16, 20, 130, false, true, 41, true),
        (40, 132, 8, true, true, 42, true),
        (7, 12, 5, true, false, 43, false),
        (16, 18, 9, true, false, 44, false),
    ] {
        let mut rng = Rng::new(seed);
        let x = rng.vec(n * k, 1.0);
        let mut w = rng.vec(m * k, 0.5);
        let mut b = rng.vec(m, 0.5);
        let mut g = Graph::new(gpu());
        let x_tokens = g.input_f32(&[n, k], &x).unwrap();
        let x_channels = g
            .input_f32(&[k, n], &transpose::reference(&x, n, k))
            .unwrap();
        let (wt, bt) = if f16 {
            let (wr, ww) = halves(&w);
            let (br, bw) = halves(&b);
            (w, b) = (wr, br);
            (
                resident_f16(&mut g, &[m, k], &ww),
                resident_f16(&mut g, &[m], &bw),
            )
        } else {
            (
                g.input_f32(&[m, k], &w).unwrap(),
                g.input_f32(&[m], &b).unwrap(),
            )
        };
        let bias = with_bias.then_some(bt);
        let tokens = matmul::linear_from_channels(&mut g, x_channels, wt, bias).unwrap();
        let channels = matmul::linear_to_channels(&mut g, x_tokens, wt, bias).unwrap();
        assert_eq!(
            (g.shape(tokens), g.shape(channels)),
            (&[n, m][..], &[m, n][..])
        );
        let (out, report) = g.run_profiled(&[tokens, channels]).unwrap();
        let want = matmul::linear_reference(&x, n, k, &w, m, with_bias.then_some(&b[..]));
        let what = format!("[{n}, {k}] × [{m}, {k}]ᵀ bias {with_bias} f16 {f16}");
        assert_close(&out[0].f32(), &want, 1e-5, &format!("from channels {what}"));
        let want_t = transpose::reference(&want, n, m);
        assert_close(&out[1].f32(), &want_t, 1e-5, &format!("to channels {what}"));
        let ran: Vec<String> = report.kernels.into_keys().collect();
        if gpu().info.subgroup_max_size == 8 && !ran.is_empty() {
            let transposed = ran.iter().any(|k| k.starts_with("transpose"));
            assert_eq!(transposed, !direct, "{what}: {ran:?}");
        }
    }
}

#[test]
fn linear_sd_shape() {
    check_linear(260, 320, 320, true, false, 9);
    check_linear(70, 1280, 40, true, true, 10);
}

/// x larger than one storage binding (128 MiB on lavapipe) is split into row windows.
#[test]
fn linear_past_the_binding_limit() {
    let (n, k, m) = (33_000, 1024, 8);
    assert!(
        (n * k * 4) as u64 > gpu().max_binding(),
        "the test must exceed one binding"
    );
    check_linear(n, k, m, true, false, 11);
}

fn check_matmul(batches: usize, n: usize, k: usize, m: usize, seed: u64) {
    check_matmul_on(gpu(), batches, n, k, m, seed);
}

#[test]
fn matmul_batched() {
    check_matmul(3, 5, 8, 6, 12);
    check_matmul(2, 33, 7, 17, 13);
    check_matmul(1, 1, 1, 1, 14);
    check_matmul(4, 70, 64, 77, 15);
    check_matmul(3, 1030, 16, 20, 19);
}

/// On the broadcast kernel (k % 8 == 0, m % 4 == 0) the right operand is read as it
/// lies, [k, m]: short and tall tiles, last column blocks of 4 and 12, and a left
/// operand larger than one binding (one dispatch per batch and row window).
#[test]
fn matmul_right_operand_as_it_lies() {
    check_matmul(2, 40, 64, 36, 20);
    check_matmul(3, 200, 24, 4, 21);
    check_matmul(1, 130, 8, 44, 22);
    let (n, k, m) = (33_000, 1024, 8);
    assert!(
        (n * k * 4) as u64 > gpu().max_binding(),
        "the test must exceed one binding"
    );
    check_matmul(1, n, k, m, 23);
}

/// Where k is at most 256, m a multiple of 8 and the tile fills (64 rows, 256 columns) a
/// batched matmul on 8-lane subgroups takes the tile whose lanes split the columns: a
/// last row block of 6 rows, last column blocks of 8 (m = 264) and of 40 (m = 296), k of
/// 8 and 256, three batches; k = 264 and m = 260 (a last block of 4) stay on the row
/// tiles.
#[test]
fn matmul_column_tile() {
    let columns = "matmul_columns_subgroup.cols_r64c32";
    for (batches, n, k, m, seed, kernel) in [
        (2, 70, 64, 264, 24, columns),
        (1, 64, 8, 256, 25, columns),
        (3, 130, 256, 296, 26, columns),
        (1, 64, 264, 256, 27, "matmul_subgroup.r8c64"),
        (2, 70, 64, 260, 28, "matmul_subgroup.r8c64"),
    ] {
        let ran = check_matmul_on(gpu(), batches, n, k, m, seed);
        if gpu().info.subgroup_max_size == 8 && !ran.is_empty() {
            assert_eq!(ran, [kernel], "{batches} × [{n}, {k}] · [{k}, {m}]");
        }
    }
}

#[test]
fn shape_errors() {
    let mut g = Graph::new(gpu());
    let x = g.input_f32(&[4, 3], &[0.0; 12]).unwrap();
    let w = g.input_f32(&[5, 4], &[0.0; 20]).unwrap();
    let b = g.input_f32(&[4], &[0.0; 4]).unwrap();
    assert!(matmul::linear(&mut g, x, w, None).is_err());
    let w2 = g.input_f32(&[5, 3], &[0.0; 15]).unwrap();
    assert!(matmul::linear(&mut g, x, w2, Some(b)).is_err());
    let a3 = g.input_f32(&[2, 2, 3], &[0.0; 12]).unwrap();
    let b3 = g.input_f32(&[2, 2, 3], &[0.0; 12]).unwrap();
    assert!(matmul::matmul(&mut g, a3, b3).is_err());
}

fn check_transpose(a: usize, b: usize, seed: u64) {
    let x = Rng::new(seed).vec(a * b, 1.0);
    let mut g = Graph::new(gpu());
    let xt = g.input_f32(&[a, b], &x).unwrap();
    let y = transpose::transpose(&mut g, xt).unwrap();
    assert_eq!(g.shape(y), [b, a]);
    let (out, _) = g.run(&[y]).unwrap();
    assert!(
        out[0].f32() == transpose::reference(&x, a, b),
        "transpose [{a}, {b}] differs"
    );
}

#[test]
fn transpose_odd_shapes() {
    check_transpose(13, 7, 16);
    check_transpose(1, 5, 17);
    check_transpose(320, 4096, 18);
}

/// 520 × 65536 f32 is 136 MiB: tiled into windows on both sides.
#[test]
fn transpose_past_the_binding_limit() {
    let (a, b) = (520, 65_536);
    assert!(
        (a * b * 4) as u64 > gpu().max_binding(),
        "the test must exceed one binding"
    );
    check_transpose(a, b, 19);
}

/// The portable kernel (64 × 64 tiles staged 16 k at a time in workgroup memory), which
/// every GPU without 8-lane subgroups runs: SD shapes, f16 weights, k not a multiple of
/// the step, partial row and column tiles, several tiles each way, batches.
#[test]
fn portable_kernel() {
    let gpu = portable_gpu();
    check_linear_on(gpu, 260, 320, 320, true, false, 40);
    check_linear_on(gpu, 70, 1280, 40, true, true, 41);
    check_linear_on(gpu, 130, 20, 200, true, false, 42);
    check_linear_on(gpu, 3, 7, 5, false, false, 43);
    check_linear_on(gpu, 64, 16, 64, false, true, 44);
    check_matmul_on(gpu, 3, 1030, 16, 20, 45);
    check_matmul_on(gpu, 4, 70, 64, 77, 46);
}

/// Split-K on the portable `tiled` kernel: products of few tiles and long k (the UNet's
/// Linear layers at 64 tokens) sum runs of k in separate workgroups, and `split_k.sum`
/// adds them and the bias: f16 weights, a last run shorter than the others, batches.
#[test]
fn portable_split_k() {
    let gpu = portable_gpu();
    let split = ["matmul.tiled", "split_k.sum"];
    let ran = check_linear_on(gpu, 64, 1800, 70, true, true, 52);
    assert!(ran.is_empty() || ran == split, "{ran:?}");
    let ran = check_linear_on(gpu, 37, 1000, 100, false, false, 53);
    assert!(ran.is_empty() || ran == split, "{ran:?}");
    let ran = check_matmul_on(gpu, 3, 20, 700, 30, 54);
    assert!(
        ran.is_empty() || ran.iter().any(|k| k == "split_k.sum"),
        "{ran:?}"
    );
}

/// The portable kernel's 16 × 256 tiles, which products of so few rows that 64-row
/// tiles would do twice the work take: 16 rows, 25 (a partial row tile), one row with
/// split-K, partial column tiles, k not a multiple of the step, f16 weights and a bias,
/// batches (with and without split-K); 64 rows stay on `tiled`.
#[test]
fn portable_narrow_tiles() {
    let gpu = portable_gpu();
    let narrow = "matmul.narrow";
    let ran = check_linear_on(gpu, 16, 300, 520, true, true, 55);
    assert!(ran.is_empty() || ran == [narrow], "{ran:?}");
    let ran = check_linear_on(gpu, 25, 77, 1000, true, false, 56);
    assert!(ran.is_empty() || ran == [narrow], "{ran:?}");
    let ran = check_linear_on(gpu, 1, 2000, 300, true, false, 57);
    assert!(ran.is_empty() || ran == [narrow, "split_k.sum"], "{ran:?}");
    let ran = check_matmul_on(gpu, 3, 10, 40, 600, 58);
    assert!(
        ran.is_empty() || ran.contains(&narrow.to_string()),
        "{ran:?}"
    );
    let ran = check_matmul_on(gpu, 2, 5, 600, 300, 59);
    assert!(
        ran.is_empty()
            || ran.iter().any(|k| k == "split_k.sum") && ran.contains(&narrow.to_string()),
        "{ran:?}"
    );
    let ran = check_linear_on(gpu, 64, 40, 1024, false, false, 60);
    assert!(ran.is_empty() || ran == ["matmul.tiled"], "{ran:?}");
}

/// The portable kernel's 128 × 128 tiles (8 × 8 outputs per invocation, 8 k per step),
/// which products of at least 256 such tiles take: partial row and column tiles, k not
/// a multiple of the step (nor of 4), f16 weights and a bias, batches (the right operand
/// transposed first); one tile row short of 256 and rows that 128-row tiles would pad by
/// a third more than 64-row ones, the 64 × 64 kernel.
#[test]
fn portable_wide_tiles() {
    let gpu = portable_gpu();
    let wide = ["matmul.tiled128"];
    let ran = check_linear_on(gpu, 2100, 21, 1930, true, true, 47);
    assert!(ran.is_empty() || ran == wide, "{ran:?}");
    let ran = check_linear_on(gpu, 2048, 19, 2048, false, false, 48);
    assert!(ran.is_empty() || ran == wide, "{ran:?}");
    let ran = check_matmul_on(gpu, 32, 250, 12, 500, 50);
    assert!(
        ran.is_empty() || ran.contains(&wide[0].to_string()),
        "{ran:?}"
    );
    for (n, m, seed) in [(2048, 1920, 49), (130, 32_768, 51)] {
        let ran = check_linear_on(gpu, n, 19, m, false, false, seed);
        assert!(ran.is_empty() || ran == ["matmul.tiled"], "{ran:?}");
    }
}
