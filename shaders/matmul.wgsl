// y[b, r, c] = Σ_k x[b, r, k] · w[b, c, k] (+ bias[c]): a Linear layer (w [m, k] in
// PyTorch layout, f32 or packed f16) or, with per-batch strides, a batched matmul whose
// right operand was transposed to [m, k]. The portable kernel, for GPUs: a workgroup
// stages 16 k of a 64-row x tile and a 64-column w tile in workgroup memory per step and
// each invocation accumulates a 4 × 4 block of y from it in registers, so that every
// value loaded from memory feeds 64 FMAs. `matmul_subgroup.wgsl` is the fast path on
// adapters with 8-wide subgroups (lavapipe), where barriers are costly.

struct Params {
    rows: u32,      // rows of x (and y) per batch in this window
    k: u32,
    m: u32,
    batches: u32,
    x_batch: u32,   // elements between batches of x, w and y (w: 0 for a Linear)
    w_batch: u32,
    y_batch: u32,
    bias_kind: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn load_w(i: u32) -> f32 {
    return widen(wt[word_of(i)], i);
}

fn load_b(i: u32) -> f32 {
    return widen(bias[word_of(i)], i);
}

// Rows and columns of y per workgroup, and k per staging step.
const TILE: u32 = 64u;
const STEP: u32 = 16u;
// A staged k's row in vec4s: 16 of tile rows and one of padding. The 16 invocations
// staging one x (or w) row write 16 k of it; unpadded, those lie 64 floats apart, all in
// one bank of a GPU's workgroup memory (32 banks of 4 bytes), and the writes serialise
// 16-fold. 68 floats apart they fall in 8 banks, 2 to a bank.
const ROW4: u32 = 17u;

// One step of the tiles, k-major: xs[kk * ROW4 + q] holds x rows 4q..4q+3 of the tile
// at k kk, ws likewise w rows (columns of y), so the inner loop reads one vec4 of each.
var<workgroup> xs: array<vec4<f32>, 272>;
var<workgroup> ws: array<vec4<f32>, 272>;

// Workgroup: 16 × 16 invocations on a 64 × 64 tile of y; invocation li takes rows
// 4·(li / 16).. and columns 4·(li % 16).. of it. For staging, invocation li loads k
// k0 + li % 16 of tile rows li / 16 + 16j (j < 4): neighbours read neighbouring k of a
// row. Rows, columns and k past the end are clamped on load and skipped on store; x
// reads 0 past the last k, which zeroes those products. Workgroups past the last batch leave together, before any barrier.
@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let col_blocks = (p.m + TILE - 1u) / TILE;
    let row_blocks = (p.rows + TILE - 1u) / TILE;
    let flat = flat_workgroup(wg, num);
    let b = flat / (row_blocks * col_blocks);
    if b >= p.batches {
        return;
    }
    let rest = flat % (row_blocks * col_blocks);
    let row0 = (rest / col_blocks) * TILE;
    let col0 = (rest % col_blocks) * TILE;
    let xb = b * p.x_batch;
    let wb = b * p.w_batch;
    let lk = li % STEP;
    let lr = li / STEP;
    let q_rows = li / 16u;
    let q_cols = li % 16u;
    // acc{i}: row 4·q_rows + i, columns 4·q_cols.. of the tile.
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var k0 = 0u; k0 < p.k; k0 += STEP) {
        let kk = k0 + lk;
        let inside = kk < p.k;
        let kc = min(kk, p.k - 1u);
        for (var j = 0u; j < 4u; j++) {
            let r = lr + 16u * j;
            let xv = x[xb + min(row0 + r, p.rows - 1u) * p.k + kc];
            let wv = load_w(wb + min(col0 + r, p.m - 1u) * p.k + kc);
            xs[lk * ROW4 + r / 4u][r % 4u] = select(0.0, xv, inside);
            ws[lk * ROW4 + r / 4u][r % 4u] = wv;
        }
        workgroupBarrier();
        for (var s = 0u; s < STEP; s++) {
            let a = xs[s * ROW4 + q_rows];
            let w = ws[s * ROW4 + q_cols];
            acc0 = fma(vec4<f32>(a.x), w, acc0);
            acc1 = fma(vec4<f32>(a.y), w, acc1);
            acc2 = fma(vec4<f32>(a.z), w, acc2);
            acc3 = fma(vec4<f32>(a.w), w, acc3);
        }
        workgroupBarrier();
    }
    let acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + 4u * q_rows + i;
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + 4u * q_cols + j;
            if r < p.rows && c < p.m {
                var v = acc[i][j];
                if p.bias_kind != 0u {
                    v += load_b(c);
                }
                y[b * p.y_batch + r * p.m + c] = v;
            }
        }
    }
}
