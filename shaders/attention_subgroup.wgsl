// Multi-head attention, softmax(q·kᵀ/√d)·v, on adapters whose subgroups are exactly 8
// lanes (lavapipe), flash-attention style: keys stream in blocks of 8 with an online
// softmax, so nothing of size nq × nk is stored. As in `matmul_subgroup.wgsl`, lane l
// loads key (value) j0 + l as vec4s and subgroupBroadcast hands every lane all 8 keys,
// so each load feeds all four of a lane's queries. Each lane owns 4 queries (rows li,
// 64 + li, 128 + li and 192 + li of the workgroup's 256) of one head: against 2, each
// loaded and broadcast key or value feeds twice the FMAs (4096 tokens, 5 heads × 64:
// 540 → 420–440 ms on lavapipe, see BENCHMARKS.md).
// The head dim is handled in chunks of up to 64 (D4C vec4s): the output chunk and, for
// a single chunk, the query stay in registers; with several chunks (d = 512) each pass
// computes one output chunk and re-reads the query per key block.
// A dispatch covers a window of query rows and one of key rows; with several key
// windows the running (max, sum) per query and chunk is kept in `state` and the
// unnormalised output in y between dispatches. The host guarantees d % 4 == 0 and
// d ≤ 64 or d % 64 == 0.

struct Params {
    nq: u32,       // query rows in this window
    nk: u32,       // key rows in this window
    heads: u32,
    d: u32,
    row: u32,      // vec4s per token row (heads · d / 4)
    chunks: u32,   // head-dim chunks of D4C vec4s
    q0: u32,       // first query row of the window, for `state`
    flags: u32,    // 1: first key window (fresh state), 2: last key window (normalise)
    scale: f32,    // 1/√d
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> state: array<vec2<f32>>;

// vec4s per head-dim chunk: min(d / 4, 16).
override D4C: u32 = 16u;
// More than one chunk (d > 64). An override, not a test of p.chunks: a CPU driver
// runs both sides of a branch under masks, so the untaken side would still cost.
override MULTI: bool = false;

// A head-dim chunk of one query or output row. Fields rather than an array, so that
// they stay in registers (a dynamically indexed array would go to memory).
struct Chunk {
    v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>, v8: vec4<f32>, v9: vec4<f32>, v10: vec4<f32>, v11: vec4<f32>, v12: vec4<f32>, v13: vec4<f32>, v14: vec4<f32>, v15: vec4<f32>,
}

// The block's scores for the lane's four queries.
struct Scores {
    a: Cols,
    b: Cols,
    c: Cols,
    d: Cols,
}

struct Outputs {
    a: Chunk,
    b: Chunk,
    c: Chunk,
    d: Chunk,
}

// Four dims of q·k for the 8 keys; kv is this lane's key at those dims.
fn qk4(s: Scores, qa: vec4<f32>, qb: vec4<f32>, qc: vec4<f32>, qd: vec4<f32>, kv: vec4<f32>) -> Scores {
    var r = s;
    let kx = bcast(kv.x);
    r.a.lo = fma(vec4<f32>(qa.x), kx.lo, r.a.lo);
    r.a.hi = fma(vec4<f32>(qa.x), kx.hi, r.a.hi);
    r.b.lo = fma(vec4<f32>(qb.x), kx.lo, r.b.lo);
    r.b.hi = fma(vec4<f32>(qb.x), kx.hi, r.b.hi);
    r.c.lo = fma(vec4<f32>(qc.x), kx.lo, r.c.lo);
    r.c.hi = fma(vec4<f32>(qc.x), kx.hi, r.c.hi);
    r.d.lo = fma(vec4<f32>(qd.x), kx.lo, r.d.lo);
    r.d.hi = fma(vec4<f32>(qd.x), kx.hi, r.d.hi);
    let ky = bcast(kv.y);
    r.a.lo = fma(vec4<f32>(qa.y), ky.lo, r.a.lo);
    r.a.hi = fma(vec4<f32>(qa.y), ky.hi, r.a.hi);
    r.b.lo = fma(vec4<f32>(qb.y), ky.lo, r.b.lo);
    r.b.hi = fma(vec4<f32>(qb.y), ky.hi, r.b.hi);
    r.c.lo = fma(vec4<f32>(qc.y), ky.lo, r.c.lo);
    r.c.hi = fma(vec4<f32>(qc.y), ky.hi, r.c.hi);
    r.d.lo = fma(vec4<f32>(qd.y), ky.lo, r.d.lo);
    r.d.hi = fma(vec4<f32>(qd.y), ky.hi, r.d.hi);
    let kz = bcast(kv.z);
    r.a.lo = fma(vec4<f32>(qa.z), kz.lo, r.a.lo);
    r.a.hi = fma(vec4<f32>(qa.z), kz.hi, r.a.hi);
    r.b.lo = fma(vec4<f32>(qb.z), kz.lo, r.b.lo);
    r.b.hi = fma(vec4<f32>(qb.z), kz.hi, r.b.hi);
    r.c.lo = fma(vec4<f32>(qc.z), kz.lo, r.c.lo);
    r.c.hi = fma(vec4<f32>(qc.z), kz.hi, r.c.hi);
    r.d.lo = fma(vec4<f32>(qd.z), kz.lo, r.d.lo);
    r.d.hi = fma(vec4<f32>(qd.z), kz.hi, r.d.hi);
    let kw = bcast(kv.w);
    r.a.lo = fma(vec4<f32>(qa.w), kw.lo, r.a.lo);
    r.a.hi = fma(vec4<f32>(qa.w), kw.hi, r.a.hi);
    r.b.lo = fma(vec4<f32>(qb.w), kw.lo, r.b.lo);
    r.b.hi = fma(vec4<f32>(qb.w), kw.hi, r.b.hi);
    r.c.lo = fma(vec4<f32>(qc.w), kw.lo, r.c.lo);
    r.c.hi = fma(vec4<f32>(qc.w), kw.hi, r.c.hi);
    r.d.lo = fma(vec4<f32>(qd.w), kw.lo, r.d.lo);
    r.d.hi = fma(vec4<f32>(qd.w), kw.hi, r.d.hi);
    return r;
}

// Scores of one head-dim chunk; kb: this lane's key row at the chunk.
fn qk_chunk(s: Scores, qa: Chunk, qb: Chunk, qc: Chunk, qd: Chunk, kb: u32) -> Scores {
    var r = s;
    r = qk4(r, qa.v0, qb.v0, qc.v0, qd.v0, k[kb + 0u]);
    if D4C > 1u { r = qk4(r, qa.v1, qb.v1, qc.v1, qd.v1, k[kb + 1u]); }
    if D4C > 2u { r = qk4(r, qa.v2, qb.v2, qc.v2, qd.v2, k[kb + 2u]); }
    if D4C > 3u { r = qk4(r, qa.v3, qb.v3, qc.v3, qd.v3, k[kb + 3u]); }
    if D4C > 4u { r = qk4(r, qa.v4, qb.v4, qc.v4, qd.v4, k[kb + 4u]); }
    if D4C > 5u { r = qk4(r, qa.v5, qb.v5, qc.v5, qd.v5, k[kb + 5u]); }
    if D4C > 6u { r = qk4(r, qa.v6, qb.v6, qc.v6, qd.v6, k[kb + 6u]); }
    if D4C > 7u { r = qk4(r, qa.v7, qb.v7, qc.v7, qd.v7, k[kb + 7u]); }
    if D4C > 8u { r = qk4(r, qa.v8, qb.v8, qc.v8, qd.v8, k[kb + 8u]); }
    if D4C > 9u { r = qk4(r, qa.v9, qb.v9, qc.v9, qd.v9, k[kb + 9u]); }
    if D4C > 10u { r = qk4(r, qa.v10, qb.v10, qc.v10, qd.v10, k[kb + 10u]); }
    if D4C > 11u { r = qk4(r, qa.v11, qb.v11, qc.v11, qd.v11, k[kb + 11u]); }
    if D4C > 12u { r = qk4(r, qa.v12, qb.v12, qc.v12, qd.v12, k[kb + 12u]); }
    if D4C > 13u { r = qk4(r, qa.v13, qb.v13, qc.v13, qd.v13, k[kb + 13u]); }
    if D4C > 14u { r = qk4(r, qa.v14, qb.v14, qc.v14, qd.v14, k[kb + 14u]); }
    if D4C > 15u { r = qk4(r, qa.v15, qb.v15, qc.v15, qd.v15, k[kb + 15u]); }
    return r;
}

// Four output dims of one query gain Σ_j p_j · v_j; v{x,y,z,w}: the 8 lanes' values.
fn pv1(o: vec4<f32>, p: Cols, vx: Cols, vy: Cols, vz: Cols, vw: Cols) -> vec4<f32> {
    return o + vec4<f32>(dot(p.lo, vx.lo) + dot(p.hi, vx.hi), dot(p.lo, vy.lo) + dot(p.hi, vy.hi), dot(p.lo, vz.lo) + dot(p.hi, vz.hi), dot(p.lo, vw.lo) + dot(p.hi, vw.hi));
}

// Four output dims of the four queries; vv is this lane's value.
fn pv4(o: array<vec4<f32>, 4>, p: Scores, vv: vec4<f32>) -> array<vec4<f32>, 4> {
    let vx = bcast(vv.x);
    let vy = bcast(vv.y);
    let vz = bcast(vv.z);
    let vw = bcast(vv.w);
    return array(pv1(o[0], p.a, vx, vy, vz, vw), pv1(o[1], p.b, vx, vy, vz, vw), pv1(o[2], p.c, vx, vy, vz, vw), pv1(o[3], p.d, vx, vy, vz, vw));
}

// Rescales the running outputs by alpha and adds the block; vb: this lane's value row.
fn pv_chunk(o: Outputs, alpha: vec4<f32>, p: Scores, vb: u32) -> Outputs {
    var r = o;
    var t: array<vec4<f32>, 4>;
    t = pv4(array(r.a.v0 * alpha.x, r.b.v0 * alpha.y, r.c.v0 * alpha.z, r.d.v0 * alpha.w), p, v[vb + 0u]); r.a.v0 = t[0]; r.b.v0 = t[1]; r.c.v0 = t[2]; r.d.v0 = t[3];
    if D4C > 1u { t = pv4(array(r.a.v1 * alpha.x, r.b.v1 * alpha.y, r.c.v1 * alpha.z, r.d.v1 * alpha.w), p, v[vb + 1u]); r.a.v1 = t[0]; r.b.v1 = t[1]; r.c.v1 = t[2]; r.d.v1 = t[3]; }
    if D4C > 2u { t = pv4(array(r.a.v2 * alpha.x, r.b.v2 * alpha.y, r.c.v2 * alpha.z, r.d.v2 * alpha.w), p, v[vb + 2u]); r.a.v2 = t[0]; r.b.v2 = t[1]; r.c.v2 = t[2]; r.d.v2 = t[3]; }
    if D4C > 3u { t = pv4(array(r.a.v3 * alpha.x, r.b.v3 * alpha.y, r.c.v3 * alpha.z, r.d.v3 * alpha.w), p, v[vb + 3u]); r.a.v3 = t[0]; r.b.v3 = t[1]; r.c.v3 = t[2]; r.d.v3 = t[3]; }
    if D4C > 4u { t = pv4(array(r.a.v4 * alpha.x, r.b.v4 * alpha.y, r.c.v4 * alpha.z, r.d.v4 * alpha.w), p, v[vb + 4u]); r.a.v4 = t[0]; r.b.v4 = t[1]; r.c.v4 = t[2]; r.d.v4 = t[3]; }
    if D4C > 5u { t = pv4(array(r.a.v5 * alpha.x, r.b.v5 * alpha.y, r.c.v5 * alpha.z, r.d.v5 * alpha.w), p, v[vb + 5u]); r.a.v5 = t[0]; r.b.v5 = t[1]; r.c.v5 = t[2]; r.d.v5 = t[3]; }
    if D4C > 6u { t = pv4(array(r.a.v6 * alpha.x, r.b.v6 * alpha.y, r.c.v6 * alpha.z, r.d.v6 * alpha.w), p, v[vb + 6u]); r.a.v6 = t[0]; r.b.v6 = t[1]; r.c.v6 = t[2]; r.d.v6 = t[3]; }
    if D4C > 7u { t = pv4(array(r.a.v7 * alpha.x, r.b.v7 * alpha.y, r.c.v7 * alpha.z, r.d.v7 * alpha.w), p, v[vb + 7u]); r.a.v7 = t[0]; r.b.v7 = t[1]; r.c.v7 = t[2]; r.d.v7 = t[3]; }
    if D4C > 8u { t = pv4(array(r.a.v8 * alpha.x, r.b.v8 * alpha.y, r.c.v8 * alpha.z, r.d.v8 * alpha.w), p, v[vb + 8u]); r.a.v8 = t[0]; r.b.v8 = t[1]; r.c.v8 = t[2]; r.d.v8 = t[3]; }
    if D4C > 9u { t = pv4(array(r.a.v9 * alpha.x, r.b.v9 * alpha.y, r.c.v9 * alpha.z, r.d.v9 * alpha.w), p, v[vb + 9u]); r.a.v9 = t[0]; r.b.v9 = t[1]; r.c.v9 = t[2]; r.d.v9 = t[3]; }
    if D4C > 10u { t = pv4(array(r.a.v10 * alpha.x, r.b.v10 * alpha.y, r.c.v10 * alpha.z, r.d.v10 * alpha.w), p, v[vb + 10u]); r.a.v10 = t[0]; r.b.v10 = t[1]; r.c.v10 = t[2]; r.d.v10 = t[3]; }
    if D4C > 11u { t = pv4(array(r.a.v11 * alpha.x, r.b.v11 * alpha.y, r.c.v11 * alpha.z, r.d.v11 * alpha.w), p, v[vb + 11u]); r.a.v11 = t[0]; r.b.v11 = t[1]; r.c.v11 = t[2]; r.d.v11 = t[3]; }
    if D4C > 12u { t = pv4(array(r.a.v12 * alpha.x, r.b.v12 * alpha.y, r.c.v12 * alpha.z, r.d.v12 * alpha.w), p, v[vb + 12u]); r.a.v12 = t[0]; r.b.v12 = t[1]; r.c.v12 = t[2]; r.d.v12 = t[3]; }
    if D4C > 13u { t = pv4(array(r.a.v13 * alpha.x, r.b.v13 * alpha.y, r.c.v13 * alpha.z, r.d.v13 * alpha.w), p, v[vb + 13u]); r.a.v13 = t[0]; r.b.v13 = t[1]; r.c.v13 = t[2]; r.d.v13 = t[3]; }
    if D4C > 14u { t = pv4(array(r.a.v14 * alpha.x, r.b.v14 * alpha.y, r.c.v14 * alpha.z, r.d.v14 * alpha.w), p, v[vb + 14u]); r.a.v14 = t[0]; r.b.v14 = t[1]; r.c.v14 = t[2]; r.d.v14 = t[3]; }
    if D4C > 15u { t = pv4(array(r.a.v15 * alpha.x, r.b.v15 * alpha.y, r.c.v15 * alpha.z, r.d.v15 * alpha.w), p, v[vb + 15u]); r.a.v15 = t[0]; r.b.v15 = t[1]; r.c.v15 = t[2]; r.d.v15 = t[3]; }
    return r;
}

fn load_chunk(base: u32, scale: f32) -> Chunk {
    var c: Chunk;
    c.v0 = q[base + 0u] * scale;
    if D4C > 1u { c.v1 = q[base + 1u] * scale; }
    if D4C > 2u { c.v2 = q[base + 2u] * scale; }
    if D4C > 3u { c.v3 = q[base + 3u] * scale; }
    if D4C > 4u { c.v4 = q[base + 4u] * scale; }
    if D4C > 5u { c.v5 = q[base + 5u] * scale; }
    if D4C > 6u { c.v6 = q[base + 6u] * scale; }
    if D4C > 7u { c.v7 = q[base + 7u] * scale; }
    if D4C > 8u { c.v8 = q[base + 8u] * scale; }
    if D4C > 9u { c.v9 = q[base + 9u] * scale; }
    if D4C > 10u { c.v10 = q[base + 10u] * scale; }
    if D4C > 11u { c.v11 = q[base + 11u] * scale; }
    if D4C > 12u { c.v12 = q[base + 12u] * scale; }
    if D4C > 13u { c.v13 = q[base + 13u] * scale; }
    if D4C > 14u { c.v14 = q[base + 14u] * scale; }
    if D4C > 15u { c.v15 = q[base + 15u] * scale; }
    return c;
}

fn load_out(base: u32) -> Chunk {
    var c: Chunk;
    c.v0 = y[base + 0u];
    if D4C > 1u { c.v1 = y[base + 1u]; }
    if D4C > 2u { c.v2 = y[base + 2u]; }
    if D4C > 3u { c.v3 = y[base + 3u]; }
    if D4C > 4u { c.v4 = y[base + 4u]; }
    if D4C > 5u { c.v5 = y[base + 5u]; }
    if D4C > 6u { c.v6 = y[base + 6u]; }
    if D4C > 7u { c.v7 = y[base + 7u]; }
    if D4C > 8u { c.v8 = y[base + 8u]; }
    if D4C > 9u { c.v9 = y[base + 9u]; }
    if D4C > 10u { c.v10 = y[base + 10u]; }
    if D4C > 11u { c.v11 = y[base + 11u]; }
    if D4C > 12u { c.v12 = y[base + 12u]; }
    if D4C > 13u { c.v13 = y[base + 13u]; }
    if D4C > 14u { c.v14 = y[base + 14u]; }
    if D4C > 15u { c.v15 = y[base + 15u]; }
    return c;
}

fn store_out(base: u32, c: Chunk, scale: f32) {
    y[base + 0u] = c.v0 * scale;
    if D4C > 1u { y[base + 1u] = c.v1 * scale; }
    if D4C > 2u { y[base + 2u] = c.v2 * scale; }
    if D4C > 3u { y[base + 3u] = c.v3 * scale; }
    if D4C > 4u { y[base + 4u] = c.v4 * scale; }
    if D4C > 5u { y[base + 5u] = c.v5 * scale; }
    if D4C > 6u { y[base + 6u] = c.v6 * scale; }
    if D4C > 7u { y[base + 7u] = c.v7 * scale; }
    if D4C > 8u { y[base + 8u] = c.v8 * scale; }
    if D4C > 9u { y[base + 9u] = c.v9 * scale; }
    if D4C > 10u { y[base + 10u] = c.v10 * scale; }
    if D4C > 11u { y[base + 11u] = c.v11 * scale; }
    if D4C > 12u { y[base + 12u] = c.v12 * scale; }
    if D4C > 13u { y[base + 13u] = c.v13 * scale; }
    if D4C > 14u { y[base + 14u] = c.v14 * scale; }
    if D4C > 15u { y[base + 15u] = c.v15 * scale; }
}

// Running softmax state of one query: max and sum of exp(score - max).
struct Softmax {
    m: f32,
    l: f32,
    alpha: f32, // factor that brings the previous output to the new max
    p: Cols,    // this block's weights exp(score - max)
}

fn online(prev_m: f32, prev_l: f32, s: Cols, valid: Cols) -> Softmax {
    let lo = select(vec4<f32>(-3.0e38), s.lo, valid.lo > vec4<f32>(0.0));
    let hi = select(vec4<f32>(-3.0e38), s.hi, valid.hi > vec4<f32>(0.0));
    let mx = max(lo, hi);
    let m = max(prev_m, max(max(mx.x, mx.y), max(mx.z, mx.w)));
    let p = Cols(exp(lo - m) * valid.lo, exp(hi - m) * valid.hi);
    let alpha = exp(prev_m - m);
    return Softmax(m, prev_l * alpha + dot(p.lo, vec4<f32>(1.0)) + dot(p.hi, vec4<f32>(1.0)), alpha, p);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let q_blocks = (p.nq + 255u) / 256u;
    let flat = flat_workgroup(wg, num);
    // Whole workgroups past the end leave together: the subgroups stay uniform.
    let h = flat / q_blocks;
    if h >= p.heads {
        return;
    }
    // The lane's query rows a, b, c, d.
    let r = vec4<u32>((flat % q_blocks) * 256u + li) + vec4<u32>(0u, 64u, 128u, 192u);
    let clamped = min(r, vec4<u32>(p.nq - 1u));
    let d4 = p.d / 4u;
    let head = h * d4;
    let q_row = clamped * p.row + vec4<u32>(head);
    let st = ((vec4<u32>(p.q0) + clamped) * p.heads + vec4<u32>(h)) * p.chunks;
    let first = (p.flags & 1u) != 0u;
    let last = (p.flags & 2u) != 0u;
    let lane_keys = vec4<u32>(0u, 1u, 2u, 3u);

    for (var c = 0u; c < p.chunks; c++) {
        let co = c * D4C;
        var qa = load_chunk(q_row.x, p.scale);
        var qb = load_chunk(q_row.y, p.scale);
        var qc = load_chunk(q_row.z, p.scale);
        var qd = load_chunk(q_row.w, p.scale);
        var o: Outputs;
        var m = vec4<f32>(-3.0e38);
        var l = vec4<f32>(0.0);
        if !first {
            o = Outputs(load_out(q_row.x + co), load_out(q_row.y + co), load_out(q_row.z + co), load_out(q_row.w + co));
            let s0 = state[st.x + c];
            let s1 = state[st.y + c];
            let s2 = state[st.z + c];
            let s3 = state[st.w + c];
            m = vec4<f32>(s0.x, s1.x, s2.x, s3.x);
            l = vec4<f32>(s0.y, s1.y, s2.y, s3.y);
        }
        for (var j0 = 0u; j0 < p.nk; j0 += 8u) {
            let key = min(j0 + lane, p.nk - 1u) * p.row + head;
            let zero = Cols(vec4<f32>(), vec4<f32>());
            var s = Scores(zero, zero, zero, zero);
            if !MULTI {
                s = qk_chunk(s, qa, qb, qc, qd, key);
            } else {
                for (var kc = 0u; kc < p.chunks; kc++) {
                    qa = load_chunk(q_row.x + kc * D4C, p.scale);
                    qb = load_chunk(q_row.y + kc * D4C, p.scale);
                    qc = load_chunk(q_row.z + kc * D4C, p.scale);
                    qd = load_chunk(q_row.w + kc * D4C, p.scale);
                    s = qk_chunk(s, qa, qb, qc, qd, key + kc * D4C);
                }
            }
            let valid = Cols(vec4<f32>(vec4<u32>(j0) + lane_keys < vec4<u32>(p.nk)), vec4<f32>(vec4<u32>(j0 + 4u) + lane_keys < vec4<u32>(p.nk)));
            let sa = online(m.x, l.x, s.a, valid);
            let sb = online(m.y, l.y, s.b, valid);
            let sc = online(m.z, l.z, s.c, valid);
            let sd = online(m.w, l.w, s.d, valid);
            o = pv_chunk(o, vec4<f32>(sa.alpha, sb.alpha, sc.alpha, sd.alpha), Scores(sa.p, sb.p, sc.p, sd.p), key + co);
            m = vec4<f32>(sa.m, sb.m, sc.m, sd.m);
            l = vec4<f32>(sa.l, sb.l, sc.l, sd.l);
        }
        // Rows past the window were computed on a clamped copy; only real rows store.
        let scale = select(vec4<f32>(1.0), 1.0 / l, last);
        if r.x < p.nq {
            store_out(q_row.x + co, o.a, scale.x);
            state[st.x + c] = vec2<f32>(m.x, l.x);
        }
        if r.y < p.nq {
            store_out(q_row.y + co, o.b, scale.y);
            state[st.y + c] = vec2<f32>(m.y, l.y);
        }
        if r.z < p.nq {
            store_out(q_row.z + co, o.c, scale.z);
            state[st.z + c] = vec2<f32>(m.z, l.z);
        }
        if r.w < p.nq {
            store_out(q_row.w + co, o.d, scale.w);
            state[st.w + c] = vec2<f32>(m.w, l.w);
        }
    }
}
