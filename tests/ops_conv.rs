mod common;

use common::{assert_close, gpu, guarded_graph, portable_gpu};
use oscar_wgpu::gpu::Gpu;
use oscar_wgpu::graph::{DType, Graph};
use oscar_wgpu::ops::conv2d::{self, Activation, Conv2d};
use oscar_wgpu::ops::im2col;
use oscar_wgpu::rng::Rng;

/// Checks one convolution against the reference; returns the kernels (`shader.entry`)
/// it ran, where the adapter has timestamp queries to say (none otherwise).
fn check(
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    cfg: Conv2d,
    seed: u64,
) -> Vec<String> {
    check_on(gpu(), [cin, h, w], cout, [k, k], cfg, seed, false)
}

/// One convolution (a kh × kw kernel) on `gpu` against the reference, its weights and
/// bias f32 or packed f16 (the reference then takes the f16-rounded values), with
/// guarded stores: no kernel may store past a tensor's end.
fn check_on(
    gpu: &'static Gpu,
    [cin, h, w]: [usize; 3],
    cout: usize,
    [kh, kw]: [usize; 2],
    cfg: Conv2d,
    seed: u64,
    f16: bool,
) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let x = rng.vec(cin * h * w, 1.0);
    let round = |v: Vec<f32>| -> Vec<f32> {
        if f16 {
            v.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
        } else {
            v
        }
    };
    let wt = round(rng.vec(cout * cin * kh * kw, 0.5));
    let b = round(rng.vec(cout, 0.5));
    let mut g = guarded_graph(gpu);
    let weight = |g: &mut Graph, shape: &[usize], v: &[f32]| {
        if !f16 {
            return g.input_f32(shape, v).unwrap();
        }
        let bytes = oscar_wgpu::weights::pack_f16(v);
        let buf = wgpu::util::DeviceExt::create_buffer_init(
            &gpu.device,
            &wgpu::util::BufferInitDescriptor {
                label: None,
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE,
            },
        );
        g.resident(shape, DType::F16, std::sync::Arc::new(buf))
    };
    let xt = g.input_f32(&[cin, h, w], &x).unwrap();
    let wt_t = weight(&mut g, &[cout, cin, kh, kw], &wt);
    let bt = weight(&mut g, &[cout], &b);
    let y = conv2d::conv2d(&mut g, xt, wt_t, bt, cfg).unwrap();
    let (out, report) = g.run_profiled(&[y]).unwrap();
    let want = conv2d::reference(&x, [cin, h, w], &wt, [cout, cin, kh, kw], &b, cfg);
    let what = format!("conv {cin}→{cout} {kh}×{kw} on {h}×{w} {cfg:?}, f16 weights {f16}");
    assert_close(&out[0].f32(), &want, 1e-5, &what);
    assert_eq!(report.stray_bytes, 0, "{what}: stores past a tensor's end");
    report.kernels.into_keys().collect()
}

/// Asserts that `ran` is `kernel` alone, where the adapter has the broadcast kernels
/// (8-lane subgroups) and timestamps to tell.
fn assert_ran(ran: &[String], kernel: &str) {
    if gpu().info.subgroup_max_size == 8 && !ran.is_empty() {
        assert_eq!(ran, [kernel], "expected {kernel}");
    }
}

#[test]
fn conv_3x3_odd_sizes() {
    check(3, 13, 11, 5, 3, Conv2d::same(1), 1);
    check(7, 9, 17, 13, 3, Conv2d::same(1).with(Activation::Silu), 2);
}

#[test]
fn conv_1x1_and_single_pixel() {
    check(10, 1, 1, 9, 1, Conv2d::same(0), 3);
    check(33, 5, 7, 17, 1, Conv2d::same(0).with(Activation::Relu), 4);
    check(6, 1, 1, 4, 3, Conv2d::same(1), 5);
}

#[test]
fn conv_strided_asymmetric_padding() {
    // diffusers' Downsample2D: pad right and bottom by one, 3×3 stride 2.
    check(6, 16, 14, 6, 3, Conv2d::strided(2, [0, 1, 0, 1]), 6);
    // compressai's conv: 5×5 stride 2 padding 2.
    check(5, 15, 9, 7, 5, Conv2d::strided(2, [2; 4]), 7);
}

fn check_f16(
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    cfg: Conv2d,
    seed: u64,
) -> Vec<String> {
    check_on(gpu(), [cin, h, w], cout, [k, k], cfg, seed, true)
}

#[test]
fn conv_f16_weights() {
    check_f16(5, 7, 6, 11, 3, Conv2d::same(1), 9);
    // Input channels in eights and a width in fours: the vec4 3×3 kernel's f16 path.
    assert_ran(
        &check_f16(16, 9, 12, 21, 3, Conv2d::same(1), 10),
        "conv2d_subgroup.main3",
    );
    // And the 1×1 one's (with a fused activation: without, 1×1 convolutions are products,
    // see `conv_f16_as_products`): 24 channels are three f16 words per weight row.
    assert_ran(
        &check_f16(24, 5, 4, 19, 1, Conv2d::same(0).with(Activation::Silu), 11),
        "conv2d_subgroup.main1",
    );
    // And the stride-2 one's.
    assert_ran(
        &check_f16(16, 21, 16, 18, 3, Conv2d::strided(2, [0, 1, 0, 1]), 12),
        "conv2d_subgroup.main3s2",
    );
    // Past one workgroup's 32 channels.
    assert_ran(
        &check_f16(8, 10, 8, 50, 3, Conv2d::same(1), 13),
        "conv2d_subgroup.main3",
    );
}

/// With packed f16 weights, pictures of at most 64 output pixels and 1×1 convolutions run
/// as products weight · patches on the broadcast kernel, which reads the f16 weights as
/// its rows: "same" 3×3 at 8×8 and 4×4, stride 2 down to 4×4, 1×1 on small and larger
/// pictures, output channels not in fours; pixels not in fours stay on the vector
/// kernels (see `conv_f16_weights`).
#[test]
fn conv_f16_as_products() {
    let product = |tile: &str, k: usize| {
        let mut ran = vec![format!("matmul_subgroup.{tile}")];
        if k > 1 {
            ran.insert(0, "im2col.main".to_string());
        }
        ran
    };
    for (cin, h, w, cout, k, cfg, seed, tile) in [
        (16, 8, 8, 40, 3, Conv2d::same(1), 90, "r8c64"),
        (8, 4, 4, 20, 3, Conv2d::same(1), 91, "r16c16"),
        (8, 8, 8, 21, 3, Conv2d::strided(2, [1; 4]), 92, "r16c16"),
        (16, 5, 4, 24, 1, Conv2d::same(0), 93, "r4c64"),
        (24, 12, 12, 150, 1, Conv2d::same(0), 94, "r16c64"),
    ] {
        let ran = check_f16(cin, h, w, cout, k, cfg, seed);
        if gpu().info.subgroup_max_size == 8 && !ran.is_empty() {
            assert_eq!(ran, product(tile, k), "{cin}→{cout} {k}×{k} on {h}×{w}");
        }
    }
}

/// Shapes the vec4 3×3 kernel takes (stride 1, one column of padding, input channels in
/// fours, width in fours), with output channels that are not multiples of its 32 per
/// workgroup: fewer (down to one), and a second workgroup's first, second or third eight.
#[test]
fn conv_3x3_vector_kernel_shapes() {
    assert_ran(
        &check(8, 13, 12, 21, 3, Conv2d::same(1).with(Activation::Silu), 30),
        "conv2d_subgroup.main3",
    );
    assert_ran(
        &check(12, 9, 8, 45, 3, Conv2d::same(1), 34),
        "conv2d_subgroup.main3",
    );
    assert_ran(
        &check(4, 9, 4, 58, 3, Conv2d::same(1).with(Activation::Relu), 35),
        "conv2d_subgroup.main3",
    );
    // Fewer than 8 output channels (the VAE's and the UNet's output convolutions).
    assert_ran(
        &check(8, 10, 12, 3, 3, Conv2d::same(1), 36),
        "conv2d_subgroup.main3",
    );
    assert_ran(
        &check(4, 9, 16, 1, 3, Conv2d::strided(2, [0, 1, 0, 1]), 37),
        "conv2d_subgroup.main3s2",
    );
    check(16, 9, 8, 9, 3, Conv2d::strided(1, [0, 2, 1, 1]), 31);
    check(4, 5, 4, 17, 3, Conv2d::same(1).with(Activation::Relu), 32);
    check(64, 6, 40, 24, 3, Conv2d::strided(1, [2, 0, 1, 1]), 33);
}

/// With 8 or more output channels, adapters with 8-lane subgroups (lavapipe) take the
/// broadcast kernel (`conv2d_subgroup.wgsl`): channel counts that are not multiples of
/// its 16-channel tiles, stride 2, 1×1 and 5×5 kernels, f16 weights.
#[test]
fn conv_subgroup_tiles() {
    check(7, 13, 11, 21, 3, Conv2d::same(1).with(Activation::Silu), 20);
    check(16, 9, 10, 8, 3, Conv2d::strided(2, [0, 1, 0, 1]), 21);
    check(
        5,
        15,
        9,
        17,
        5,
        Conv2d::strided(2, [2; 4]).with(Activation::Relu),
        22,
    );
    check(33, 5, 7, 40, 1, Conv2d::same(0), 23);
    check(3, 1, 1, 9, 3, Conv2d::same(1), 24);
}

/// Pictures of 256 tiles or more take 64 tiles per workgroup in the broadcast kernels
/// (smaller ones 8): the 3×3 vector kernel at 64×64 and 68×60, the general one (1×1,
/// stride 2) past 256 tiles, with a last workgroup only partly used.
#[test]
fn conv_subgroup_wide_pictures() {
    // 1×1 with channels in fours (the vec4 kernel): 20 and 1320 pixels (8 tiles per
    // workgroup), 4224 pixels (64).
    check(8, 5, 4, 17, 1, Conv2d::same(0), 44);
    check(
        16,
        33,
        40,
        20,
        1,
        Conv2d::same(0).with(Activation::Relu),
        45,
    );
    check(12, 64, 66, 9, 1, Conv2d::same(0).with(Activation::Silu), 46);
    check(4, 64, 64, 20, 3, Conv2d::same(1), 40);
    check(8, 68, 60, 17, 3, Conv2d::same(1).with(Activation::Silu), 41);
    check(5, 33, 41, 17, 1, Conv2d::same(0), 42);
    check(3, 70, 66, 9, 3, Conv2d::strided(2, [0, 1, 0, 1]), 43);
}

/// A plain 1×1 convolution (f32 weights, no activation) with input channels in eights
/// and pixels in fours is the product weight · pixels + a bias per row, on the broadcast
/// matmul kernel where subgroups are 8 lanes: 130 channels (two row blocks of 128, the
/// second nearly empty), 140 pixels (a last column block of 12), 12 pixels (the narrow
/// tile), and 25 pixels, which stay on the convolution kernel.
#[test]
fn conv_1x1_as_a_product() {
    assert_ran(
        &check(16, 10, 14, 130, 1, Conv2d::same(0), 50),
        "matmul_subgroup.r16c64",
    );
    assert_ran(
        &check(24, 3, 4, 5, 1, Conv2d::same(0), 51),
        "matmul_subgroup.r16c16",
    );
    assert_ran(
        &check(8, 5, 5, 9, 1, Conv2d::same(0), 52),
        "conv2d_subgroup.main",
    );
}

/// Pictures of at most 64 output pixels (the UNet's 8×8 and 4×4 levels) run as
/// weight · im2col patches on the broadcast matmul kernel: "same" 3×3 at 8×8 and 4×4
/// (64 and 16 columns: a wide tile and the narrow one), stride 2 down to 4×4; with an
/// activation, or pixels not in fours, on the convolution kernels.
#[test]
fn conv_small_pictures_as_products() {
    let product = |rows: &str| vec!["im2col.main".to_string(), format!("matmul_subgroup.{rows}")];
    let expect = |ran: Vec<String>, want: Vec<String>| {
        if gpu().info.subgroup_max_size == 8 && !ran.is_empty() {
            assert_eq!(ran, want);
        }
    };
    expect(
        check(16, 8, 8, 40, 3, Conv2d::same(1), 80),
        product("r8c64"),
    );
    expect(
        check(8, 4, 4, 130, 3, Conv2d::same(1), 81),
        product("r16c16"),
    );
    expect(
        check(8, 8, 8, 24, 3, Conv2d::strided(2, [1; 4]), 82),
        product("r16c16"),
    );
    assert_ran(
        &check(8, 8, 8, 24, 3, Conv2d::same(1).with(Activation::Silu), 83),
        "conv2d_subgroup.main3",
    );
    assert_ran(
        &check(8, 5, 5, 24, 3, Conv2d::same(1), 84),
        "conv2d_subgroup.main",
    );
}

/// The patches against their reference: odd sizes, asymmetric padding (and top padding
/// other than left), stride 2, 1×1 and 5×5.
#[test]
fn im2col_odd_shapes() {
    for (cin, h, w, k, cfg, seed) in [
        (3, 5, 7, 3, Conv2d::strided(2, [0, 1, 0, 1]), 90),
        (3, 7, 6, 3, Conv2d::strided(2, [1, 0, 0, 2]), 94),
        (2, 6, 3, 1, Conv2d::same(0), 91),
        (5, 9, 8, 5, Conv2d::strided(2, [2; 4]), 92),
        (4, 4, 4, 3, Conv2d::same(1), 93),
    ] {
        let x = Rng::new(seed).vec(cin * h * w, 1.0);
        let mut g = Graph::new(gpu());
        let xt = g.input_f32(&[cin, h, w], &x).unwrap();
        let y = im2col::im2col(&mut g, xt, (k, k), cfg).unwrap();
        let (out, _) = g.run(&[y]).unwrap();
        let want = im2col::reference(&x, [cin, h, w], (k, k), cfg);
        assert_eq!(out[0].f32(), want, "im2col {cin}×{h}×{w}, {k}×{k} {cfg:?}");
    }
}

/// 3×3 stride-2 convolutions with left padding 0 (the VAE's downsamplers, padded right
/// and below) or 1 (the UNet's), input width in eights, on the vec4 kernel `main3s2`:
/// odd heights (a last row tile partly used), channels not in 32s, a picture past
/// 256 tiles (64-lane workgroups), and a width in fours only, which is not for it.
#[test]
fn conv_3x3_stride_2_vector_kernel() {
    let vae = Conv2d::strided(2, [0, 1, 0, 1]);
    let unet = Conv2d::strided(2, [1; 4]);
    assert_ran(&check(8, 21, 16, 21, 3, vae, 60), "conv2d_subgroup.main3s2");
    assert_ran(
        &check(12, 10, 24, 9, 3, unet.with(Activation::Silu), 61),
        "conv2d_subgroup.main3s2",
    );
    assert_ran(
        &check(4, 128, 136, 17, 3, unet, 62),
        "conv2d_subgroup.main3s2",
    );
    assert_ran(&check(8, 7, 12, 16, 3, vae, 63), "conv2d_subgroup.main");
    assert_ran(
        &check(8, 19, 16, 40, 3, unet, 64),
        "conv2d_subgroup.main3s2",
    );
}

/// With subgroups off (as on GPUs without 8-lane subgroups): the tiled kernel (64
/// channels × 64 pixels per workgroup, patches gathered 16 K at a time) from 32 output
/// channels on — 3×3 and 5×5, strides 1 and 2, a 1×1, partial channel and pixel tiles,
/// K not a multiple of 16, f16 weights, fused activations — and `main` below.
#[test]
fn portable_kernels() {
    let gpu = portable_gpu();
    let vae_down = Conv2d::strided(2, [0, 1, 0, 1]);
    for (cin, h, w, cout, k, cfg, seed, kernel) in [
        (
            16,
            13,
            11,
            40,
            3,
            Conv2d::same(1).with(Activation::Silu),
            70,
            "conv2d.tiled",
        ),
        (8, 13, 16, 64, 3, vae_down, 71, "conv2d.tiled"),
        (16, 10, 14, 130, 1, Conv2d::same(0), 72, "conv2d.tiled"),
        (
            3,
            17,
            15,
            33,
            5,
            Conv2d::strided(2, [2; 4]).with(Activation::Relu),
            73,
            "conv2d.tiled",
        ),
        (16, 12, 12, 20, 3, Conv2d::same(1), 74, "conv2d.main"),
    ] {
        let ran = check_on(gpu, [cin, h, w], cout, [k, k], cfg, seed, false);
        assert!(ran.is_empty() || ran == [kernel], "{ran:?}, not {kernel}");
    }
    let ran = check_on(gpu, [12, 9, 10], 48, [3, 3], Conv2d::same(1), 75, true);
    assert!(ran.is_empty() || ran == ["conv2d.tiled"], "{ran:?}");
}

/// The portable `tiled128` kernel (128 channels × 128 pixels per workgroup, 8 K per
/// step), which convolutions of at least 256 such tiles take: partial channel and pixel
/// tiles, K not a multiple of the step, stride 2 with a fused SiLU, f16 weights; and
/// 130 channels, which 128-channel tiles would pad by a third more than 64-channel ones,
/// on `tiled`.
#[test]
fn portable_wide_tiles() {
    let gpu = portable_gpu();
    let down = Conv2d::strided(2, [0, 1, 0, 1]).with(Activation::Silu);
    for (input, cout, k, cfg, seed, f16, kernel) in [
        (
            [3, 131, 127],
            250,
            3,
            Conv2d::same(1),
            79,
            false,
            "tiled128",
        ),
        ([2, 262, 254], 248, 3, down, 80, false, "tiled128"),
        ([4, 129, 130], 240, 1, Conv2d::same(0), 81, true, "tiled128"),
        ([3, 131, 127], 130, 3, Conv2d::same(1), 82, false, "tiled"),
    ] {
        let ran = check_on(gpu, input, cout, [k, k], cfg, seed, f16);
        let want = format!("conv2d.{kernel}");
        assert!(
            ran.is_empty() || ran == [want.as_str()],
            "{ran:?}, not {want}"
        );
    }
}

/// Split-K on the portable `tiled` kernel: convolutions whose few tiles would leave a
/// GPU idle (the UNet's 8×8 and 4×4 levels) sum runs of K in separate workgroups, and
/// `split_k.sum` adds them, the bias and the activation. A last run shorter than the
/// others, f16 weights, SiLU and ReLU, a stride-2 convolution down to 4×4, partial
/// channel and pixel tiles. A wrong run boundary counts K twice or not at all.
#[test]
fn portable_split_k() {
    let gpu = portable_gpu();
    let split = ["conv2d.tiled", "split_k.sum"];
    let silu = Conv2d::same(1).with(Activation::Silu);
    let down = Conv2d::strided(2, [0, 1, 0, 1]).with(Activation::Relu);
    for (input, cout, cfg, seed, f16) in [
        ([200, 5, 5], 70, silu, 83, true),
        ([320, 8, 8], 96, Conv2d::same(1), 84, false),
        ([300, 8, 8], 40, down, 85, false),
    ] {
        let ran = check_on(gpu, input, cout, [3, 3], cfg, seed, f16);
        assert!(ran.is_empty() || ran == split, "{ran:?}");
    }
}

/// On the portable kernels, pictures of so few pixels that `tiled`'s 64-pixel tiles would
/// do twice the work run as im2col products on `narrow`'s 16-row tiles: 4×4 with 3×3
/// and 1×1 kernels, f16 weights, split-K, a stride-2 convolution down to 3×3; with a
/// fused activation, `tiled` instead.
#[test]
fn portable_narrow_pictures() {
    let gpu = portable_gpu();
    let down = Conv2d::strided(2, [0, 1, 0, 1]);
    for (input, cout, k, cfg, seed, f16, split) in [
        ([40, 4, 4], 100, 3, Conv2d::same(1), 86, false, false),
        ([300, 4, 4], 520, 3, Conv2d::same(1), 87, true, true),
        ([64, 5, 5], 200, 3, down, 88, false, true),
        ([96, 4, 4], 300, 1, Conv2d::same(0), 89, false, false),
    ] {
        let ran = check_on(gpu, input, cout, [k, k], cfg, seed, f16);
        let has = |name: &str| ran.iter().any(|k| k == name);
        assert!(
            ran.is_empty()
                || has("matmul.narrow")
                    && has("split_k.sum") == split
                    && !ran.iter().any(|k| k.starts_with("conv2d")),
            "{ran:?}"
        );
    }
    let ran = check_on(
        gpu,
        [40, 4, 4],
        100,
        [3, 3],
        Conv2d::same(1).with(Activation::Silu),
        90,
        false,
    );
    assert!(ran.is_empty() || ran == ["conv2d.tiled"], "{ran:?}");
}

/// Kernels of unequal height and width, on the portable `tiled` kernel (which takes
/// them as constants, splitting each K into channel, row and column) and on lavapipe's.
#[test]
fn non_square_kernels() {
    for (kh, kw, cfg, seed) in [
        (1, 3, Conv2d::strided(1, [0, 0, 1, 1]), 76),
        (3, 1, Conv2d::strided(1, [1, 1, 0, 0]), 77),
        (2, 5, Conv2d::strided(2, [0, 1, 2, 1]), 78),
    ] {
        let ran = check_on(portable_gpu(), [6, 11, 9], 36, [kh, kw], cfg, seed, false);
        assert!(ran.is_empty() || ran == ["conv2d.tiled"], "{ran:?}");
        check_on(gpu(), [6, 11, 9], 36, [kh, kw], cfg, seed, false);
    }
}
