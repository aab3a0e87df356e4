// What the portable kernels `tiled` and `tiled128` of `conv2d.wgsl` and `matmul.wgsl`
// share: `tiled128`'s tile and step, the values an invocation stages per step, and the
// blocks of outputs an invocation accumulates: 4 × 4 (`tiled`, matmul's `narrow`) or
// 8 × 8 (`tiled128`).

const WIDE: u32 = 128u;
const WIDE_STEP: u32 = 8u;

// The four values of the tile's rows and the four of its columns that an invocation
// stages per step (which ones is the kernel's layout).
struct Staged {
    rows: vec4<f32>,
    cols: vec4<f32>,
}

// The 4 × 4 outputs of one `tiled` (or matmul's `narrow`) invocation: rows r + i (a{i}),
// each at 4 columns c... Named registers, as below.
struct Block4x4 {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
}

// One k of the product: its values of the 4 rows times those of the 4 columns, added to b.
fn block4_fma(b: Block4x4, rows: vec4<f32>, cols: vec4<f32>) -> Block4x4 {
    return Block4x4(
        fma(vec4<f32>(rows.x), cols, b.a0),
        fma(vec4<f32>(rows.y), cols, b.a1),
        fma(vec4<f32>(rows.z), cols, b.a2),
        fma(vec4<f32>(rows.w), cols, b.a3)
    );
}

// Hands every row's column quad to the kernel's `store_quad(row, column, values)`.
fn block4_store(b: Block4x4, r: u32, c: u32) {
    store_quad(r, c, b.a0);
    store_quad(r + 1u, c, b.a1);
    store_quad(r + 2u, c, b.a2);
    store_quad(r + 3u, c, b.a3);
}

// The 8 × 8 outputs of one `tiled128` invocation: rows r, r + 1, r + 2, r + 3 and the same 64
// further (a{i}{h}: row i, i ≥ 4 the further ones), each at 4 columns c.. (h = 0) and 4
// columns 64 further (h = 1). Named registers, not an indexed array, which a compiler
// may leave in memory.
struct Block8x8 {
    a00: vec4<f32>,
    a01: vec4<f32>,
    a10: vec4<f32>,
    a11: vec4<f32>,
    a20: vec4<f32>,
    a21: vec4<f32>,
    a30: vec4<f32>,
    a31: vec4<f32>,
    a40: vec4<f32>,
    a41: vec4<f32>,
    a50: vec4<f32>,
    a51: vec4<f32>,
    a60: vec4<f32>,
    a61: vec4<f32>,
    a70: vec4<f32>,
    a71: vec4<f32>,
}

// One k of the product: its values of the rows (rlo: rows 0..3, rhi: 4..7) times those of
// the columns (clo, chi), added to b.
fn block_fma(b: Block8x8, rlo: vec4<f32>, rhi: vec4<f32>, clo: vec4<f32>, chi: vec4<f32>) -> Block8x8 {
    return Block8x8(
        fma(vec4<f32>(rlo.x), clo, b.a00),
        fma(vec4<f32>(rlo.x), chi, b.a01),
        fma(vec4<f32>(rlo.y), clo, b.a10),
        fma(vec4<f32>(rlo.y), chi, b.a11),
        fma(vec4<f32>(rlo.z), clo, b.a20),
        fma(vec4<f32>(rlo.z), chi, b.a21),
        fma(vec4<f32>(rlo.w), clo, b.a30),
        fma(vec4<f32>(rlo.w), chi, b.a31),
        fma(vec4<f32>(rhi.x), clo, b.a40),
        fma(vec4<f32>(rhi.x), chi, b.a41),
        fma(vec4<f32>(rhi.y), clo, b.a50),
        fma(vec4<f32>(rhi.y), chi, b.a51),
        fma(vec4<f32>(rhi.z), clo, b.a60),
        fma(vec4<f32>(rhi.z), chi, b.a61),
        fma(vec4<f32>(rhi.w), clo, b.a70),
        fma(vec4<f32>(rhi.w), chi, b.a71)
    );
}

// Hands every row's two column quads to the kernel's `store_quad(row, column, values)`.
fn block_store(b: Block8x8, r: u32, c: u32) {
    let r0 = r;
    let r1 = r + 64u;
    let c0 = c;
    let c1 = c + 64u;
    store_quad(r0, c0, b.a00);
    store_quad(r0, c1, b.a01);
    store_quad(r0 + 1u, c0, b.a10);
    store_quad(r0 + 1u, c1, b.a11);
    store_quad(r0 + 2u, c0, b.a20);
    store_quad(r0 + 2u, c1, b.a21);
    store_quad(r0 + 3u, c0, b.a30);
    store_quad(r0 + 3u, c1, b.a31);
    store_quad(r1, c0, b.a40);
    store_quad(r1, c1, b.a41);
    store_quad(r1 + 1u, c0, b.a50);
    store_quad(r1 + 1u, c1, b.a51);
    store_quad(r1 + 2u, c0, b.a60);
    store_quad(r1 + 2u, c1, b.a61);
    store_quad(r1 + 3u, c0, b.a70);
    store_quad(r1 + 3u, c1, b.a71);
}
