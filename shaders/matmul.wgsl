// y[b, r, c] = Σ_k x[b, r, k] · w[b, c, k] (+ bias[c]): a Linear layer (w [m, k] in
// PyTorch layout, f32 or packed f16) or, with per-batch strides, a batched matmul whose
// right operand was transposed to [m, k]. The portable kernels, for GPUs: a workgroup
// stages a run of k of an x tile and a w tile in workgroup memory per step and each
// invocation accumulates a block of y from it in registers: 4 × 4 of a 64 × 64 tile
// (`tiled`), or 8 × 8 of a 128 × 128 one (`tiled128`), whose every value read from
// workgroup memory feeds twice the FMAs, for products with enough tiles to fill a GPU.
// `matmul_subgroup.wgsl` is the fast path on adapters with 8-wide subgroups (lavapipe),
// where barriers are costly.

struct Params {
    rows: u32,      // rows of x (and y) per batch in this window
    k: u32,
    m: u32,
    batches: u32,
    x_batch: u32,   // elements between batches of x, w and y (w: 0 for a Linear)
    w_batch: u32,
    y_batch: u32,
    bias_kind: u32,
    k_split: u32,   // k per split of a split-K `tiled` (else all of k)
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

// y's batch of this invocation, for `store_quad`.
var<private> y_base: u32;

// Row r, columns c..c + 3 of y (those past the end skipped), plus their biases:
// `tiled`'s and `tiled128`'s (tiled.wgsl).
fn store_quad(r: u32, c: u32, v: vec4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        if r < p.rows && c + j < p.m {
            var out = v[j];
            if p.bias_kind != 0u {
                out += load_b(c + j);
            }
            y[y_base + r * p.m + c + j] = out;
        }
    }
}

// What an invocation stages per step, of both kernels: k k of tile rows r + stride·j
// (j < 4) of x (as rows) and of w (as columns). x reads 0 past the last k, which zeroes
// those products; rows and k past the end are clamped.
fn stage(xb: u32, wb: u32, row0: u32, col0: u32, k: u32, r: u32, stride: u32) -> Staged {
    let inside = k < p.k;
    let kc = min(k, p.k - 1u);
    var s: Staged;
    for (var j = 0u; j < 4u; j++) {
        let row = r + stride * j;
        let xv = x[xb + min(row0 + row, p.rows - 1u) * p.k + kc];
        s.rows[j] = select(0.0, xv, inside);
        s.cols[j] = load_w(wb + min(col0 + row, p.m - 1u) * p.k + kc);
    }
    return s;
}

// Workgroup: 16 × 16 invocations on a 64 × 64 tile of y; invocation li takes rows
// 4·(li / 16).. and columns 4·(li % 16).. of it. For staging, invocation li loads k
// k0 + li % 16 of tile rows li / 16 + 16j (j < 4): neighbours read neighbouring k of a
// row; it loads the next step's before this step's FMAs, so their latency hides behind
// them. Rows and columns past the end are skipped on store. Split-K: the grid holds
// every batch's tiles once per split, the workgroups of split s sum k s·k_split.. only
// (k_split is all of k otherwise) and store their raw sums as slice s of y, which the
// host binds to a [splits, batches, rows, m] buffer with no bias (split_k.wgsl adds
// up). Workgroups past the last split leave together, before any barrier.
@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let col_blocks = (p.m + TILE - 1u) / TILE;
    let row_blocks = (p.rows + TILE - 1u) / TILE;
    let flat = flat_workgroup(wg, num);
    let batch = flat / (row_blocks * col_blocks);
    let split = batch / p.batches;
    let k_begin = split * p.k_split;
    if k_begin >= p.k {
        return;
    }
    let k_end = min(k_begin + p.k_split, p.k);
    let b = batch % p.batches;
    let rest = flat % (row_blocks * col_blocks);
    let row0 = (rest / col_blocks) * TILE;
    let col0 = (rest % col_blocks) * TILE;
    let xb = b * p.x_batch;
    let wb = b * p.w_batch;
    let lk = li % STEP;
    let lr = li / STEP;
    let q_rows = li / 16u;
    let q_cols = li % 16u;
    // Where li's staged values go: k lk, rows lr + 16j, so vec4 lr / 4 + 4j.
    let slot = lk * ROW4 + lr / 4u;
    // acc{i}: row 4·q_rows + i, columns 4·q_cols.. of the tile.
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    var next = stage(xb, wb, row0, col0, k_begin + lk, lr, 16u);
    for (var k0 = k_begin; k0 < k_end; k0 += STEP) {
        for (var j = 0u; j < 4u; j++) {
            xs[slot + 4u * j][lr % 4u] = next.rows[j];
            ws[slot + 4u * j][lr % 4u] = next.cols[j];
        }
        workgroupBarrier();
        if k0 + STEP < k_end {
            next = stage(xb, wb, row0, col0, k0 + STEP + lk, lr, 16u);
        }
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
    y_base = batch * p.y_batch;
    let r = row0 + 4u * q_rows;
    let c = col0 + 4u * q_cols;
    store_quad(r, c, acc0);
    store_quad(r + 1u, c, acc1);
    store_quad(r + 2u, c, acc2);
    store_quad(r + 3u, c, acc3);
}

// ---- `tiled128`: 128 × 128 tiles, 8 k per step, 8 × 8 outputs per invocation. Per k an
// invocation reads four vec4s of workgroup memory for 64 FMAs (`tiled`: two for 16),
// so that workgroup memory no longer bounds the FMAs; the next step's values are loaded
// into registers before this step's FMAs, so their latency hides behind them. Never
// split: the host takes it only for grids that fill a GPU on their own.

// A staged k's row in vec4s: 32 of tile rows and one of padding. The 32 invocations of a
// GPU subgroup stage 8 k of 4 rows; 132 floats apart, k's rows start 4 banks apart, so
// those 32 writes fall in 32 banks.
const WIDE_ROW4: u32 = 33u;

var<workgroup> xw: array<vec4<f32>, 264>;
var<workgroup> ww: array<vec4<f32>, 264>;

// Workgroup: 16 × 16 invocations; invocation li takes rows 4·(li / 16) + {0..3} and the
// same 64 further, and columns 4·(li % 16) + {0..3} and 64 further: each of its reads
// of a staged k is one vec4, and a GPU subgroup's reads are broadcasts (x) or
// consecutive vec4s (w). Workgroups past the last batch leave together.
@compute @workgroup_size(256)
fn tiled128(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let col_blocks = (p.m + WIDE - 1u) / WIDE;
    let row_blocks = (p.rows + WIDE - 1u) / WIDE;
    let flat = flat_workgroup(wg, num);
    let b = flat / (row_blocks * col_blocks);
    if b >= p.batches {
        return;
    }
    let rest = flat % (row_blocks * col_blocks);
    let row0 = (rest / col_blocks) * WIDE;
    let col0 = (rest % col_blocks) * WIDE;
    let xb = b * p.x_batch;
    let wb = b * p.w_batch;
    let qr = li / 16u;
    let qc = li % 16u;
    // Where li's staged values go: k li % 8, rows li / 8 + 32j, so vec4 (li / 8) / 4 + 8j.
    let slot = (li % WIDE_STEP) * WIDE_ROW4 + li / 32u;
    let lane = (li / WIDE_STEP) % 4u;
    // Rows 4·qr.. and 64 + 4·qr.., columns 4·qc.. and 64 + 4·qc.. (tiled.wgsl).
    var acc = Block8x8();
    var next = stage(xb, wb, row0, col0, li % WIDE_STEP, li / WIDE_STEP, 32u);
    for (var k0 = 0u; k0 < p.k; k0 += WIDE_STEP) {
        for (var j = 0u; j < 4u; j++) {
            xw[slot + 8u * j][lane] = next.rows[j];
            ww[slot + 8u * j][lane] = next.cols[j];
        }
        workgroupBarrier();
        if k0 + WIDE_STEP < p.k {
            next = stage(xb, wb, row0, col0, k0 + WIDE_STEP + li % WIDE_STEP, li / WIDE_STEP, 32u);
        }
        for (var s = 0u; s < WIDE_STEP; s++) {
            let k_row = s * WIDE_ROW4;
            acc = block_fma(acc, xw[k_row + qr], xw[k_row + 16u + qr], ww[k_row + qc], ww[k_row + 16u + qc]);
        }
        workgroupBarrier();
    }
    y_base = b * p.y_batch;
    block_store(acc, row0 + 4u * qr, col0 + 4u * qc);
}
