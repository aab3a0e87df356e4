// y[b, r, c] = Σ_k x[b, r, k] · w[b, c, k] (+ bias[c]): a Linear layer (w [m, k] in
// PyTorch layout, f32 or packed f16) or, with per-batch strides, a batched matmul whose
// right operand was transposed to [m, k]. The portable kernels, for GPUs: a workgroup
// stages a run of k of an x tile and a w tile in workgroup memory per step and each
// invocation accumulates a block of y from it in registers: 4 × 4 of a 64 × 64 tile
// (`tiled`), or 8 × 8 of a 128 × 128 one (`tiled128`), whose every value read from
// workgroup memory feeds twice the FMAs, for products with enough tiles to fill a GPU,
// or 4 × 4 of a 16 × 256 one (`narrow`), for products of very few rows. Where the tiles
// are too few to fill a GPU, the host splits k across workgroups (`tile_at`).
// `matmul_subgroup.wgsl` is the fast path on adapters with 8-wide subgroups (lavapipe),
// where barriers are costly.

struct Params {
    @align(16)
    rows: u32,      // rows of x (and y) per batch in this window
    k: u32,
    m: u32,
    batches: u32,
    x_batch: u32,   // elements between batches of x, w and y (w: 0 for a Linear)
    w_batch: u32,
    y_batch: u32,
    bias_kind: u32,
    x_offset: u32,  // elements of x, w and y before batch 0 (windows start aligned below)
    w_offset: u32,
    y_offset: u32,
    k_split: u32,   // k per split of a split-K product (else all of k; see tile_at)
}

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

// Where workgroup `flat` works, in a grid of tiles of rows_per × cols_per that holds
// every batch's tiles once per split: its batch's starts in x and w, its first row and
// column, and its run of k, k_begin..k_end; it sets y_base for `store_quad`. Split s
// sums k s·k_split.. only (k_split is all of k unless the host split K, binding y to a
// [splits, batches, rows, m] buffer for the raw sums with no bias, which split_k.wgsl
// adds up). Past the last split k_begin is past k: such workgroups leave together,
// before any barrier.
struct TileAt {
    xb: u32,
    wb: u32,
    row0: u32,
    col0: u32,
    k_begin: u32,
    k_end: u32,
}

fn tile_at(flat: u32, rows_per: u32, cols_per: u32) -> TileAt {
    let col_blocks = (p.m + cols_per - 1u) / cols_per;
    let blocks = col_blocks * ((p.rows + rows_per - 1u) / rows_per);
    let batch = flat / blocks;
    let b = batch % p.batches;
    let k_begin = (batch / p.batches) * p.k_split;
    y_base = p.y_offset + batch * p.y_batch;
    let rest = flat % blocks;
    return TileAt(p.x_offset + b * p.x_batch, p.w_offset + b * p.w_batch, (rest / col_blocks) * rows_per, (rest % col_blocks) * cols_per,
        k_begin, min(k_begin + p.k_split, p.k));
}

// What an invocation stages per step, of `tiled` and `tiled128`: k k of tile rows
// r + stride·j (j < 4) of x (as rows) and of w (as columns). x reads 0 past the last k,
// which zeroes those products; rows and k past the end are clamped.
fn stage(t: TileAt, k: u32, r: u32, stride: u32) -> Staged {
    let inside = k < p.k;
    let kc = min(k, p.k - 1u);
    var s: Staged;
    for (var j = 0u; j < 4u; j++) {
        let row = r + stride * j;
        let xv = x[t.xb + min(t.row0 + row, p.rows - 1u) * p.k + kc];
        s.rows[j] = select(0.0, xv, inside);
        s.cols[j] = load_w(t.wb + min(t.col0 + row, p.m - 1u) * p.k + kc);
    }
    return s;
}

// Workgroup: 16 × 16 invocations on a 64 × 64 tile of y; invocation li takes rows
// 4·(li / 16).. and columns 4·(li % 16).. of it. For staging, invocation li loads k
// k0 + li % 16 of tile rows li / 16 + 16j (j < 4): neighbours read neighbouring k of a
// row; it loads the next step's before this step's FMAs, so their latency hides behind
// them. Rows and columns past the end are skipped on store; split-K as `tile_at` says.
@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let t = tile_at(flat_workgroup(wg, num), TILE, TILE);
    if t.k_begin >= p.k {
        return;
    }
    let lk = li % STEP;
    let lr = li / STEP;
    let q_rows = li / 16u;
    let q_cols = li % 16u;
    // Where li's staged values go: k lk, rows lr + 16j, so vec4 lr / 4 + 4j.
    let slot = lk * ROW4 + lr / 4u;
    // Rows 4·q_rows.., columns 4·q_cols.. of the tile (tiled.wgsl).
    var acc = Block4x4();
    var next = stage(t, t.k_begin + lk, lr, 16u);
    for (var k0 = t.k_begin; k0 < t.k_end; k0 += STEP) {
        for (var j = 0u; j < 4u; j++) {
            xs[slot + 4u * j][lr % 4u] = next.rows[j];
            ws[slot + 4u * j][lr % 4u] = next.cols[j];
        }
        workgroupBarrier();
        if k0 + STEP < t.k_end {
            next = stage(t, k0 + STEP + lk, lr, 16u);
        }
        for (var s = 0u; s < STEP; s++) {
            acc = block4_fma(acc, xs[s * ROW4 + q_rows], ws[s * ROW4 + q_cols]);
        }
        workgroupBarrier();
    }
    block4_store(acc, t.row0 + 4u * q_rows, t.col0 + 4u * q_cols);
}

// ---- `tiled128`: 128 × 128 tiles, 8 k per step, 8 × 8 outputs per invocation. Per k an
// invocation reads four vec4s of workgroup memory for 64 FMAs (`tiled`: two for 16),
// so that workgroup memory no longer bounds the FMAs; the next step's values are loaded
// into registers before this step's FMAs, so their latency hides behind them. The host
// takes it only for grids that fill a GPU on their own, so never splits its K.

// A staged k's row in vec4s: 32 of tile rows and one of padding. The 32 invocations of a
// GPU subgroup stage 8 k of 4 rows; 132 floats apart, k's rows start 4 banks apart, so
// those 32 writes fall in 32 banks.
const WIDE_ROW4: u32 = 33u;

var<workgroup> xw: array<vec4<f32>, 264>;
var<workgroup> ww: array<vec4<f32>, 264>;

// Workgroup: 16 × 16 invocations; invocation li takes rows 4·(li / 16) + {0..3} and the
// same 64 further, and columns 4·(li % 16) + {0..3} and 64 further: each of its reads
// of a staged k is one vec4, and a GPU subgroup's reads are broadcasts (x) or
// consecutive vec4s (w).
@compute @workgroup_size(256)
fn tiled128(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let t = tile_at(flat_workgroup(wg, num), WIDE, WIDE);
    if t.k_begin >= p.k {
        return;
    }
    let qr = li / 16u;
    let qc = li % 16u;
    // Where li's staged values go: k li % 8, rows li / 8 + 32j, so vec4 (li / 8) / 4 + 8j.
    let slot = (li % WIDE_STEP) * WIDE_ROW4 + li / 32u;
    let lane = (li / WIDE_STEP) % 4u;
    // Rows 4·qr.. and 64 + 4·qr.., columns 4·qc.. and 64 + 4·qc.. (tiled.wgsl).
    var acc = Block8x8();
    var next = stage(t, t.k_begin + li % WIDE_STEP, li / WIDE_STEP, 32u);
    for (var k0 = t.k_begin; k0 < t.k_end; k0 += WIDE_STEP) {
        for (var j = 0u; j < 4u; j++) {
            xw[slot + 8u * j][lane] = next.rows[j];
            ww[slot + 8u * j][lane] = next.cols[j];
        }
        workgroupBarrier();
        if k0 + WIDE_STEP < t.k_end {
            next = stage(t, k0 + WIDE_STEP + li % WIDE_STEP, li / WIDE_STEP, 32u);
        }
        for (var s = 0u; s < WIDE_STEP; s++) {
            let k_row = s * WIDE_ROW4;
            acc = block_fma(acc, xw[k_row + qr], xw[k_row + 16u + qr], ww[k_row + qc], ww[k_row + 16u + qc]);
        }
        workgroupBarrier();
    }
    block_store(acc, t.row0 + 4u * qr, t.col0 + 4u * qc);
}

// ---- `narrow`: 16 rows × 256 columns per workgroup, 8 k per step, 4 × 4 outputs per
// invocation, for products of so few rows that 64-row tiles would do at least twice
// the work: the UNet's 4×4 level (16 tokens, or 16 pixels of a convolution through
// im2col) and the one-row time-embedding projections.

const NARROW_ROWS: u32 = 16u;
const NARROW_COLS: u32 = 256u;
const NARROW_STEP: u32 = 8u;
// A staged k's columns in vec4s: 64, and one of padding. The 32 invocations of a GPU
// subgroup stage 8 k of 4 columns; 260 floats apart, k's rows start 4 banks apart, so
// those writes fall in 32 banks.
const NARROW_ROW4: u32 = 65u;

// One step, k-major: xn[kk * 4 + q] holds rows 4q..4q+3 of the tile at k kk, wn[kk *
// NARROW_ROW4 + q] columns 4q..4q+3.
var<workgroup> xn: array<vec4<f32>, 32>;
var<workgroup> wn: array<vec4<f32>, 520>;

// What a `narrow` invocation stages per step from k0: k k0 + lk of columns lc + 32j
// (j < 4 in lo, 4 ≤ j < 8 in hi), and k k0 + xk of row xr (its invocations below 128
// only store it). Columns and k past the end are clamped; x reads 0 past the last k,
// which zeroes those products.
struct NarrowStaged {
    lo: vec4<f32>,
    hi: vec4<f32>,
    x: f32,
}

fn stage_narrow(t: TileAt, k0: u32, lk: u32, lc: u32, xr: u32, xk: u32) -> NarrowStaged {
    let kc = min(k0 + lk, p.k - 1u);
    var s: NarrowStaged;
    for (var j = 0u; j < 4u; j++) {
        s.lo[j] = load_w(t.wb + min(t.col0 + lc + 32u * j, p.m - 1u) * p.k + kc);
        s.hi[j] = load_w(t.wb + min(t.col0 + lc + 32u * (j + 4u), p.m - 1u) * p.k + kc);
    }
    let kx = k0 + xk;
    let xv = x[t.xb + min(t.row0 + xr, p.rows - 1u) * p.k + min(kx, p.k - 1u)];
    s.x = select(0.0, xv, kx < p.k);
    return s;
}

// Workgroup: 256 invocations; invocation li takes rows 4·(li / 64).. and columns
// 4·(li % 64).. of the tile, so a GPU subgroup's reads of a staged k are one broadcast
// (x) and consecutive vec4s (w). Staging: invocation li loads k li % 8 of columns
// li / 8 + 32j (j < 8), neighbours reading neighbouring k of a column, and invocations
// below 128 k li / 16 of row li % 16.
@compute @workgroup_size(256)
fn narrow(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let t = tile_at(flat_workgroup(wg, num), NARROW_ROWS, NARROW_COLS);
    if t.k_begin >= p.k {
        return;
    }
    let lk = li % NARROW_STEP;
    let lc = li / NARROW_STEP;
    let xr = li % NARROW_ROWS;
    let xk = li / NARROW_ROWS;
    // Where li's staged values go: column lc + 32j is vec4 lc / 4 + 8j of k lk's row.
    let w_slot = lk * NARROW_ROW4 + lc / 4u;
    let x_slot = xk * 4u + xr / 4u;
    let q_rows = li / 64u;
    let q_cols = li % 64u;
    // Rows 4·q_rows.., columns 4·q_cols.. of the tile (tiled.wgsl).
    var acc = Block4x4();
    var next = stage_narrow(t, t.k_begin, lk, lc, xr, xk);
    for (var k0 = t.k_begin; k0 < t.k_end; k0 += NARROW_STEP) {
        for (var j = 0u; j < 4u; j++) {
            wn[w_slot + 8u * j][lc % 4u] = next.lo[j];
            wn[w_slot + 8u * (j + 4u)][lc % 4u] = next.hi[j];
        }
        if li < NARROW_ROWS * NARROW_STEP {
            xn[x_slot][xr % 4u] = next.x;
        }
        workgroupBarrier();
        if k0 + NARROW_STEP < t.k_end {
            next = stage_narrow(t, k0 + NARROW_STEP, lk, lc, xr, xk);
        }
        for (var s = 0u; s < NARROW_STEP; s++) {
            acc = block4_fma(acc, xn[s * 4u + q_rows], wn[s * NARROW_ROW4 + q_cols]);
        }
        workgroupBarrier();
    }
    block4_store(acc, t.row0 + 4u * q_rows, t.col0 + 4u * q_cols);
}
