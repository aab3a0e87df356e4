// The `matmul.wgsl` product on adapters whose subgroups are exactly 8 lanes (lavapipe).
// There every storage load is a loop over the 8 lanes, so loads, not FMAs, bound a
// plain register-tiled kernel. Here lane l loads a vec4 of weight row c0 + l (4 k, or
// 8 packed f16) and subgroupBroadcast hands all lanes the 8 rows' values at register
// cost, so each weight load feeds 4 rows × 8 columns × 4 k FMAs per lane.
// Workgroup: 64 lanes × 4 rows each (lane li: rows 64·i + li) × 16 columns.
// The host guarantees k % 4 == 0 (f32 weights) or k % 8 == 0 (f16).

struct Params {
    rows: u32,
    k: u32,
    m: u32,
    batches: u32,
    x_batch: u32,
    w_batch: u32,
    y_batch: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn load_b(i: u32) -> f32 {
    return widen(bias[word_of(i)], i);
}

// The 4 × 16 accumulators of a lane: row i, columns 4j..4j+3 in a{i}{j}. Fields, not
// an array: a dynamically indexed array would live in memory, not registers.
struct Tile {
    a00: vec4<f32>, a01: vec4<f32>, a02: vec4<f32>, a03: vec4<f32>,
    a10: vec4<f32>, a11: vec4<f32>, a12: vec4<f32>, a13: vec4<f32>,
    a20: vec4<f32>, a21: vec4<f32>, a22: vec4<f32>, a23: vec4<f32>,
    a30: vec4<f32>, a31: vec4<f32>, a32: vec4<f32>, a33: vec4<f32>,
}

// One k: row i gains xs[i] · (the 16 columns), whose weights at k are lane-held in
// lo (columns 0..7) and hi (8..15).
fn rank1(t: ptr<function, Tile>, xs: vec4<f32>, lo: f32, hi: f32) {
    let g0 = bcast(lo);
    let g1 = bcast(hi);
    (*t).a00 = fma(vec4<f32>(xs.x), g0.lo, (*t).a00);
    (*t).a01 = fma(vec4<f32>(xs.x), g0.hi, (*t).a01);
    (*t).a02 = fma(vec4<f32>(xs.x), g1.lo, (*t).a02);
    (*t).a03 = fma(vec4<f32>(xs.x), g1.hi, (*t).a03);
    (*t).a10 = fma(vec4<f32>(xs.y), g0.lo, (*t).a10);
    (*t).a11 = fma(vec4<f32>(xs.y), g0.hi, (*t).a11);
    (*t).a12 = fma(vec4<f32>(xs.y), g1.lo, (*t).a12);
    (*t).a13 = fma(vec4<f32>(xs.y), g1.hi, (*t).a13);
    (*t).a20 = fma(vec4<f32>(xs.z), g0.lo, (*t).a20);
    (*t).a21 = fma(vec4<f32>(xs.z), g0.hi, (*t).a21);
    (*t).a22 = fma(vec4<f32>(xs.z), g1.lo, (*t).a22);
    (*t).a23 = fma(vec4<f32>(xs.z), g1.hi, (*t).a23);
    (*t).a30 = fma(vec4<f32>(xs.w), g0.lo, (*t).a30);
    (*t).a31 = fma(vec4<f32>(xs.w), g0.hi, (*t).a31);
    (*t).a32 = fma(vec4<f32>(xs.w), g1.lo, (*t).a32);
    (*t).a33 = fma(vec4<f32>(xs.w), g1.hi, (*t).a33);
}

// Four k from x vec4 `kq` of each row (xr: the rows' first vec4), weights w0 / w1.
fn step4(t: ptr<function, Tile>, xr: vec4<u32>, kq: u32, w0: vec4<f32>, w1: vec4<f32>) {
    let x0 = x[xr.x + kq];
    let x1 = x[xr.y + kq];
    let x2 = x[xr.z + kq];
    let x3 = x[xr.w + kq];
    rank1(t, vec4<f32>(x0.x, x1.x, x2.x, x3.x), w0.x, w1.x);
    rank1(t, vec4<f32>(x0.y, x1.y, x2.y, x3.y), w0.y, w1.y);
    rank1(t, vec4<f32>(x0.z, x1.z, x2.z, x3.z), w0.z, w1.z);
    rank1(t, vec4<f32>(x0.w, x1.w, x2.w, x3.w), w0.w, w1.w);
}

// Row r's 16 columns from c0, plus the bias, skipping columns past m.
fn store_row(yb: u32, r: u32, c0: u32, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>) {
    if r >= p.rows {
        return;
    }
    for (var j = 0u; j < 16u; j++) {
        let c = c0 + j;
        if c >= p.m {
            break;
        }
        let q = select(select(q0, q1, j >= 4u), select(q2, q3, j >= 12u), j >= 8u);
        var v = q[j % 4u];
        if p.has_bias != 0u {
            v += load_b(c);
        }
        y[yb + r * p.m + c] = v;
    }
}

fn halves(a: u32, b: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(a), unpack2x16float(b));
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let col_blocks = (p.m + 15u) / 16u;
    let row_blocks = (p.rows + 255u) / 256u;
    let flat = flat_workgroup(wg, num);
    // Whole workgroups past the end leave together: the subgroups stay uniform.
    let b = flat / (row_blocks * col_blocks);
    if b >= p.batches {
        return;
    }
    let rest = flat % (row_blocks * col_blocks);
    let r0 = (rest / col_blocks) * 256u + li;
    let c0 = (rest % col_blocks) * 16u;
    let k4 = p.k / 4u;
    let xb = b * (p.x_batch / 4u);
    let xr = vec4<u32>(
        xb + min(r0, p.rows - 1u) * k4,
        xb + min(r0 + 64u, p.rows - 1u) * k4,
        xb + min(r0 + 128u, p.rows - 1u) * k4,
        xb + min(r0 + 192u, p.rows - 1u) * k4,
    );
    // vec4<u32> words per weight row: 4 f32 or 8 f16 weights each.
    let w_row = select(k4, p.k / 8u, W_F16);
    let wb = b * (p.w_batch / 4u);
    let wr0 = wb + min(c0 + lane, p.m - 1u) * w_row;
    let wr1 = wb + min(c0 + 8u + lane, p.m - 1u) * w_row;

    var t: Tile;
    for (var s = 0u; s < w_row; s++) {
        let w0 = wt[wr0 + s];
        let w1 = wt[wr1 + s];
        if W_F16 {
            step4(&t, xr, 2u * s, halves(w0.x, w0.y), halves(w1.x, w1.y));
            step4(&t, xr, 2u * s + 1u, halves(w0.z, w0.w), halves(w1.z, w1.w));
        } else {
            step4(&t, xr, s, bitcast<vec4<f32>>(w0), bitcast<vec4<f32>>(w1));
        }
    }

    let yb = b * p.y_batch;
    store_row(yb, r0, c0, t.a00, t.a01, t.a02, t.a03);
    store_row(yb, r0 + 64u, c0, t.a10, t.a11, t.a12, t.a13);
    store_row(yb, r0 + 128u, c0, t.a20, t.a21, t.a22, t.a23);
    store_row(yb, r0 + 192u, c0, t.a30, t.a31, t.a32, t.a33);
}
