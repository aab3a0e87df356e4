// Multi-head attention, softmax(q·kᵀ/√d)·v, on adapters whose subgroups are exactly 8
// lanes (lavapipe), flash-attention style: keys stream in blocks of 8 with an online
// softmax, so nothing of size nq × nk is stored. As in `matmul_subgroup.wgsl`, lane l
// loads key (value) j0 + l as vec4s and subgroupBroadcast hands every lane all 8 keys,
// so each load feeds all eight of a lane's queries. Each lane owns 8 queries (rows
// li + 64i of the workgroup's 512, i = 0..7) of one head: against 4, each loaded and
// broadcast key or value feeds twice the FMAs (4096 tokens, 5 heads × 64: 2 → 4 queries
// took 540 → 420–440 ms, 4 → 8 a further fifth; see BENCHMARKS.md).
// The head dim is handled in chunks of up to 64 (D4C vec4s): the output chunk and, for
// a single chunk, the query stay in registers; with several chunks (d = 512) each pass
// computes one output chunk and re-reads the query per key block.
// A dispatch covers a window of query rows and one of key rows; with several key
// windows the running (max, sum) per query and chunk is kept in `state` and the
// unnormalised output in y between dispatches. The host guarantees d % 4 == 0 and
// d ≤ 64 or d % 64 == 0.

struct Params {
    @align(16)
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

// Queries, keys, values and output as vec2<u64>, the 16 bytes of a vec4<f32> in half
// the per-lane trips (see subgroup.wgsl).
@group(0) @binding(1) var<storage, read> q: array<vec2<u64>>;
@group(0) @binding(2) var<storage, read> k: array<vec2<u64>>;
@group(0) @binding(3) var<storage, read> v: array<vec2<u64>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec2<u64>>;
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

// The block's scores for the lane's eight queries.
struct Scores {
    a: Cols,
    b: Cols,
    c: Cols,
    d: Cols,
    e: Cols,
    f: Cols,
    g: Cols,
    h: Cols,
}

struct Outputs {
    a: Chunk,
    b: Chunk,
    c: Chunk,
    d: Chunk,
    e: Chunk,
    f: Chunk,
    g: Chunk,
    h: Chunk,
}

// Four dims of q·k for the 8 keys; kv is this lane's key at those dims.
fn qk4(s: Scores, qa: vec4<f32>, qb: vec4<f32>, qc: vec4<f32>, qd: vec4<f32>, qe: vec4<f32>, qf: vec4<f32>, qg: vec4<f32>, qh: vec4<f32>, kv: vec4<f32>) -> Scores {
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
    r.e.lo = fma(vec4<f32>(qe.x), kx.lo, r.e.lo);
    r.e.hi = fma(vec4<f32>(qe.x), kx.hi, r.e.hi);
    r.f.lo = fma(vec4<f32>(qf.x), kx.lo, r.f.lo);
    r.f.hi = fma(vec4<f32>(qf.x), kx.hi, r.f.hi);
    r.g.lo = fma(vec4<f32>(qg.x), kx.lo, r.g.lo);
    r.g.hi = fma(vec4<f32>(qg.x), kx.hi, r.g.hi);
    r.h.lo = fma(vec4<f32>(qh.x), kx.lo, r.h.lo);
    r.h.hi = fma(vec4<f32>(qh.x), kx.hi, r.h.hi);
    let ky = bcast(kv.y);
    r.a.lo = fma(vec4<f32>(qa.y), ky.lo, r.a.lo);
    r.a.hi = fma(vec4<f32>(qa.y), ky.hi, r.a.hi);
    r.b.lo = fma(vec4<f32>(qb.y), ky.lo, r.b.lo);
    r.b.hi = fma(vec4<f32>(qb.y), ky.hi, r.b.hi);
    r.c.lo = fma(vec4<f32>(qc.y), ky.lo, r.c.lo);
    r.c.hi = fma(vec4<f32>(qc.y), ky.hi, r.c.hi);
    r.d.lo = fma(vec4<f32>(qd.y), ky.lo, r.d.lo);
    r.d.hi = fma(vec4<f32>(qd.y), ky.hi, r.d.hi);
    r.e.lo = fma(vec4<f32>(qe.y), ky.lo, r.e.lo);
    r.e.hi = fma(vec4<f32>(qe.y), ky.hi, r.e.hi);
    r.f.lo = fma(vec4<f32>(qf.y), ky.lo, r.f.lo);
    r.f.hi = fma(vec4<f32>(qf.y), ky.hi, r.f.hi);
    r.g.lo = fma(vec4<f32>(qg.y), ky.lo, r.g.lo);
    r.g.hi = fma(vec4<f32>(qg.y), ky.hi, r.g.hi);
    r.h.lo = fma(vec4<f32>(qh.y), ky.lo, r.h.lo);
    r.h.hi = fma(vec4<f32>(qh.y), ky.hi, r.h.hi);
    let kz = bcast(kv.z);
    r.a.lo = fma(vec4<f32>(qa.z), kz.lo, r.a.lo);
    r.a.hi = fma(vec4<f32>(qa.z), kz.hi, r.a.hi);
    r.b.lo = fma(vec4<f32>(qb.z), kz.lo, r.b.lo);
    r.b.hi = fma(vec4<f32>(qb.z), kz.hi, r.b.hi);
    r.c.lo = fma(vec4<f32>(qc.z), kz.lo, r.c.lo);
    r.c.hi = fma(vec4<f32>(qc.z), kz.hi, r.c.hi);
    r.d.lo = fma(vec4<f32>(qd.z), kz.lo, r.d.lo);
    r.d.hi = fma(vec4<f32>(qd.z), kz.hi, r.d.hi);
    r.e.lo = fma(vec4<f32>(qe.z), kz.lo, r.e.lo);
    r.e.hi = fma(vec4<f32>(qe.z), kz.hi, r.e.hi);
    r.f.lo = fma(vec4<f32>(qf.z), kz.lo, r.f.lo);
    r.f.hi = fma(vec4<f32>(qf.z), kz.hi, r.f.hi);
    r.g.lo = fma(vec4<f32>(qg.z), kz.lo, r.g.lo);
    r.g.hi = fma(vec4<f32>(qg.z), kz.hi, r.g.hi);
    r.h.lo = fma(vec4<f32>(qh.z), kz.lo, r.h.lo);
    r.h.hi = fma(vec4<f32>(qh.z), kz.hi, r.h.hi);
    let kw = bcast(kv.w);
    r.a.lo = fma(vec4<f32>(qa.w), kw.lo, r.a.lo);
    r.a.hi = fma(vec4<f32>(qa.w), kw.hi, r.a.hi);
    r.b.lo = fma(vec4<f32>(qb.w), kw.lo, r.b.lo);
    r.b.hi = fma(vec4<f32>(qb.w), kw.hi, r.b.hi);
    r.c.lo = fma(vec4<f32>(qc.w), kw.lo, r.c.lo);
    r.c.hi = fma(vec4<f32>(qc.w), kw.hi, r.c.hi);
    r.d.lo = fma(vec4<f32>(qd.w), kw.lo, r.d.lo);
    r.d.hi = fma(vec4<f32>(qd.w), kw.hi, r.d.hi);
    r.e.lo = fma(vec4<f32>(qe.w), kw.lo, r.e.lo);
    r.e.hi = fma(vec4<f32>(qe.w), kw.hi, r.e.hi);
    r.f.lo = fma(vec4<f32>(qf.w), kw.lo, r.f.lo);
    r.f.hi = fma(vec4<f32>(qf.w), kw.hi, r.f.hi);
    r.g.lo = fma(vec4<f32>(qg.w), kw.lo, r.g.lo);
    r.g.hi = fma(vec4<f32>(qg.w), kw.hi, r.g.hi);
    r.h.lo = fma(vec4<f32>(qh.w), kw.lo, r.h.lo);
    r.h.hi = fma(vec4<f32>(qh.w), kw.hi, r.h.hi);
    return r;
}

// Scores of one head-dim chunk; kb: this lane's key row at the chunk.
fn qk_chunk(s: Scores, q: array<Chunk, 8>, kb: u32) -> Scores {
    var r = s;
    r = qk4(r, q[0].v0, q[1].v0, q[2].v0, q[3].v0, q[4].v0, q[5].v0, q[6].v0, q[7].v0, f32x4(k[kb + 0u]));
    if D4C > 1u { r = qk4(r, q[0].v1, q[1].v1, q[2].v1, q[3].v1, q[4].v1, q[5].v1, q[6].v1, q[7].v1, f32x4(k[kb + 1u])); }
    if D4C > 2u { r = qk4(r, q[0].v2, q[1].v2, q[2].v2, q[3].v2, q[4].v2, q[5].v2, q[6].v2, q[7].v2, f32x4(k[kb + 2u])); }
    if D4C > 3u { r = qk4(r, q[0].v3, q[1].v3, q[2].v3, q[3].v3, q[4].v3, q[5].v3, q[6].v3, q[7].v3, f32x4(k[kb + 3u])); }
    if D4C > 4u { r = qk4(r, q[0].v4, q[1].v4, q[2].v4, q[3].v4, q[4].v4, q[5].v4, q[6].v4, q[7].v4, f32x4(k[kb + 4u])); }
    if D4C > 5u { r = qk4(r, q[0].v5, q[1].v5, q[2].v5, q[3].v5, q[4].v5, q[5].v5, q[6].v5, q[7].v5, f32x4(k[kb + 5u])); }
    if D4C > 6u { r = qk4(r, q[0].v6, q[1].v6, q[2].v6, q[3].v6, q[4].v6, q[5].v6, q[6].v6, q[7].v6, f32x4(k[kb + 6u])); }
    if D4C > 7u { r = qk4(r, q[0].v7, q[1].v7, q[2].v7, q[3].v7, q[4].v7, q[5].v7, q[6].v7, q[7].v7, f32x4(k[kb + 7u])); }
    if D4C > 8u { r = qk4(r, q[0].v8, q[1].v8, q[2].v8, q[3].v8, q[4].v8, q[5].v8, q[6].v8, q[7].v8, f32x4(k[kb + 8u])); }
    if D4C > 9u { r = qk4(r, q[0].v9, q[1].v9, q[2].v9, q[3].v9, q[4].v9, q[5].v9, q[6].v9, q[7].v9, f32x4(k[kb + 9u])); }
    if D4C > 10u { r = qk4(r, q[0].v10, q[1].v10, q[2].v10, q[3].v10, q[4].v10, q[5].v10, q[6].v10, q[7].v10, f32x4(k[kb + 10u])); }
    if D4C > 11u { r = qk4(r, q[0].v11, q[1].v11, q[2].v11, q[3].v11, q[4].v11, q[5].v11, q[6].v11, q[7].v11, f32x4(k[kb + 11u])); }
    if D4C > 12u { r = qk4(r, q[0].v12, q[1].v12, q[2].v12, q[3].v12, q[4].v12, q[5].v12, q[6].v12, q[7].v12, f32x4(k[kb + 12u])); }
    if D4C > 13u { r = qk4(r, q[0].v13, q[1].v13, q[2].v13, q[3].v13, q[4].v13, q[5].v13, q[6].v13, q[7].v13, f32x4(k[kb + 13u])); }
    if D4C > 14u { r = qk4(r, q[0].v14, q[1].v14, q[2].v14, q[3].v14, q[4].v14, q[5].v14, q[6].v14, q[7].v14, f32x4(k[kb + 14u])); }
    if D4C > 15u { r = qk4(r, q[0].v15, q[1].v15, q[2].v15, q[3].v15, q[4].v15, q[5].v15, q[6].v15, q[7].v15, f32x4(k[kb + 15u])); }
    return r;
}

// Four output dims of one query gain Σ_j p_j · v_j; v{x,y,z,w}: the 8 lanes' values.
fn pv1(o: vec4<f32>, p: Cols, vx: Cols, vy: Cols, vz: Cols, vw: Cols) -> vec4<f32> {
    return o + vec4<f32>(dot(p.lo, vx.lo) + dot(p.hi, vx.hi), dot(p.lo, vy.lo) + dot(p.hi, vy.hi), dot(p.lo, vz.lo) + dot(p.hi, vz.hi), dot(p.lo, vw.lo) + dot(p.hi, vw.hi));
}

// Four output dims of the eight queries; vv is this lane's value.
fn pv4(o: array<vec4<f32>, 8>, p: Scores, vv: vec4<f32>) -> array<vec4<f32>, 8> {
    let vx = bcast(vv.x);
    let vy = bcast(vv.y);
    let vz = bcast(vv.z);
    let vw = bcast(vv.w);
    return array(pv1(o[0], p.a, vx, vy, vz, vw), pv1(o[1], p.b, vx, vy, vz, vw), pv1(o[2], p.c, vx, vy, vz, vw), pv1(o[3], p.d, vx, vy, vz, vw), pv1(o[4], p.e, vx, vy, vz, vw), pv1(o[5], p.f, vx, vy, vz, vw), pv1(o[6], p.g, vx, vy, vz, vw), pv1(o[7], p.h, vx, vy, vz, vw));
}

// Rescales the running outputs by alpha and adds the block; vb: this lane's value row.
fn pv_chunk(o: Outputs, alpha: array<f32, 8>, p: Scores, vb: u32) -> Outputs {
    var r = o;
    var t: array<vec4<f32>, 8>;
    t = pv4(array(r.a.v0 * alpha[0], r.b.v0 * alpha[1], r.c.v0 * alpha[2], r.d.v0 * alpha[3], r.e.v0 * alpha[4], r.f.v0 * alpha[5], r.g.v0 * alpha[6], r.h.v0 * alpha[7]), p, f32x4(v[vb + 0u])); r.a.v0 = t[0]; r.b.v0 = t[1]; r.c.v0 = t[2]; r.d.v0 = t[3]; r.e.v0 = t[4]; r.f.v0 = t[5]; r.g.v0 = t[6]; r.h.v0 = t[7];
    if D4C > 1u { t = pv4(array(r.a.v1 * alpha[0], r.b.v1 * alpha[1], r.c.v1 * alpha[2], r.d.v1 * alpha[3], r.e.v1 * alpha[4], r.f.v1 * alpha[5], r.g.v1 * alpha[6], r.h.v1 * alpha[7]), p, f32x4(v[vb + 1u])); r.a.v1 = t[0]; r.b.v1 = t[1]; r.c.v1 = t[2]; r.d.v1 = t[3]; r.e.v1 = t[4]; r.f.v1 = t[5]; r.g.v1 = t[6]; r.h.v1 = t[7]; }
    if D4C > 2u { t = pv4(array(r.a.v2 * alpha[0], r.b.v2 * alpha[1], r.c.v2 * alpha[2], r.d.v2 * alpha[3], r.e.v2 * alpha[4], r.f.v2 * alpha[5], r.g.v2 * alpha[6], r.h.v2 * alpha[7]), p, f32x4(v[vb + 2u])); r.a.v2 = t[0]; r.b.v2 = t[1]; r.c.v2 = t[2]; r.d.v2 = t[3]; r.e.v2 = t[4]; r.f.v2 = t[5]; r.g.v2 = t[6]; r.h.v2 = t[7]; }
    if D4C > 3u { t = pv4(array(r.a.v3 * alpha[0], r.b.v3 * alpha[1], r.c.v3 * alpha[2], r.d.v3 * alpha[3], r.e.v3 * alpha[4], r.f.v3 * alpha[5], r.g.v3 * alpha[6], r.h.v3 * alpha[7]), p, f32x4(v[vb + 3u])); r.a.v3 = t[0]; r.b.v3 = t[1]; r.c.v3 = t[2]; r.d.v3 = t[3]; r.e.v3 = t[4]; r.f.v3 = t[5]; r.g.v3 = t[6]; r.h.v3 = t[7]; }
    if D4C > 4u { t = pv4(array(r.a.v4 * alpha[0], r.b.v4 * alpha[1], r.c.v4 * alpha[2], r.d.v4 * alpha[3], r.e.v4 * alpha[4], r.f.v4 * alpha[5], r.g.v4 * alpha[6], r.h.v4 * alpha[7]), p, f32x4(v[vb + 4u])); r.a.v4 = t[0]; r.b.v4 = t[1]; r.c.v4 = t[2]; r.d.v4 = t[3]; r.e.v4 = t[4]; r.f.v4 = t[5]; r.g.v4 = t[6]; r.h.v4 = t[7]; }
    if D4C > 5u { t = pv4(array(r.a.v5 * alpha[0], r.b.v5 * alpha[1], r.c.v5 * alpha[2], r.d.v5 * alpha[3], r.e.v5 * alpha[4], r.f.v5 * alpha[5], r.g.v5 * alpha[6], r.h.v5 * alpha[7]), p, f32x4(v[vb + 5u])); r.a.v5 = t[0]; r.b.v5 = t[1]; r.c.v5 = t[2]; r.d.v5 = t[3]; r.e.v5 = t[4]; r.f.v5 = t[5]; r.g.v5 = t[6]; r.h.v5 = t[7]; }
    if D4C > 6u { t = pv4(array(r.a.v6 * alpha[0], r.b.v6 * alpha[1], r.c.v6 * alpha[2], r.d.v6 * alpha[3], r.e.v6 * alpha[4], r.f.v6 * alpha[5], r.g.v6 * alpha[6], r.h.v6 * alpha[7]), p, f32x4(v[vb + 6u])); r.a.v6 = t[0]; r.b.v6 = t[1]; r.c.v6 = t[2]; r.d.v6 = t[3]; r.e.v6 = t[4]; r.f.v6 = t[5]; r.g.v6 = t[6]; r.h.v6 = t[7]; }
    if D4C > 7u { t = pv4(array(r.a.v7 * alpha[0], r.b.v7 * alpha[1], r.c.v7 * alpha[2], r.d.v7 * alpha[3], r.e.v7 * alpha[4], r.f.v7 * alpha[5], r.g.v7 * alpha[6], r.h.v7 * alpha[7]), p, f32x4(v[vb + 7u])); r.a.v7 = t[0]; r.b.v7 = t[1]; r.c.v7 = t[2]; r.d.v7 = t[3]; r.e.v7 = t[4]; r.f.v7 = t[5]; r.g.v7 = t[6]; r.h.v7 = t[7]; }
    if D4C > 8u { t = pv4(array(r.a.v8 * alpha[0], r.b.v8 * alpha[1], r.c.v8 * alpha[2], r.d.v8 * alpha[3], r.e.v8 * alpha[4], r.f.v8 * alpha[5], r.g.v8 * alpha[6], r.h.v8 * alpha[7]), p, f32x4(v[vb + 8u])); r.a.v8 = t[0]; r.b.v8 = t[1]; r.c.v8 = t[2]; r.d.v8 = t[3]; r.e.v8 = t[4]; r.f.v8 = t[5]; r.g.v8 = t[6]; r.h.v8 = t[7]; }
    if D4C > 9u { t = pv4(array(r.a.v9 * alpha[0], r.b.v9 * alpha[1], r.c.v9 * alpha[2], r.d.v9 * alpha[3], r.e.v9 * alpha[4], r.f.v9 * alpha[5], r.g.v9 * alpha[6], r.h.v9 * alpha[7]), p, f32x4(v[vb + 9u])); r.a.v9 = t[0]; r.b.v9 = t[1]; r.c.v9 = t[2]; r.d.v9 = t[3]; r.e.v9 = t[4]; r.f.v9 = t[5]; r.g.v9 = t[6]; r.h.v9 = t[7]; }
    if D4C > 10u { t = pv4(array(r.a.v10 * alpha[0], r.b.v10 * alpha[1], r.c.v10 * alpha[2], r.d.v10 * alpha[3], r.e.v10 * alpha[4], r.f.v10 * alpha[5], r.g.v10 * alpha[6], r.h.v10 * alpha[7]), p, f32x4(v[vb + 10u])); r.a.v10 = t[0]; r.b.v10 = t[1]; r.c.v10 = t[2]; r.d.v10 = t[3]; r.e.v10 = t[4]; r.f.v10 = t[5]; r.g.v10 = t[6]; r.h.v10 = t[7]; }
    if D4C > 11u { t = pv4(array(r.a.v11 * alpha[0], r.b.v11 * alpha[1], r.c.v11 * alpha[2], r.d.v11 * alpha[3], r.e.v11 * alpha[4], r.f.v11 * alpha[5], r.g.v11 * alpha[6], r.h.v11 * alpha[7]), p, f32x4(v[vb + 11u])); r.a.v11 = t[0]; r.b.v11 = t[1]; r.c.v11 = t[2]; r.d.v11 = t[3]; r.e.v11 = t[4]; r.f.v11 = t[5]; r.g.v11 = t[6]; r.h.v11 = t[7]; }
    if D4C > 12u { t = pv4(array(r.a.v12 * alpha[0], r.b.v12 * alpha[1], r.c.v12 * alpha[2], r.d.v12 * alpha[3], r.e.v12 * alpha[4], r.f.v12 * alpha[5], r.g.v12 * alpha[6], r.h.v12 * alpha[7]), p, f32x4(v[vb + 12u])); r.a.v12 = t[0]; r.b.v12 = t[1]; r.c.v12 = t[2]; r.d.v12 = t[3]; r.e.v12 = t[4]; r.f.v12 = t[5]; r.g.v12 = t[6]; r.h.v12 = t[7]; }
    if D4C > 13u { t = pv4(array(r.a.v13 * alpha[0], r.b.v13 * alpha[1], r.c.v13 * alpha[2], r.d.v13 * alpha[3], r.e.v13 * alpha[4], r.f.v13 * alpha[5], r.g.v13 * alpha[6], r.h.v13 * alpha[7]), p, f32x4(v[vb + 13u])); r.a.v13 = t[0]; r.b.v13 = t[1]; r.c.v13 = t[2]; r.d.v13 = t[3]; r.e.v13 = t[4]; r.f.v13 = t[5]; r.g.v13 = t[6]; r.h.v13 = t[7]; }
    if D4C > 14u { t = pv4(array(r.a.v14 * alpha[0], r.b.v14 * alpha[1], r.c.v14 * alpha[2], r.d.v14 * alpha[3], r.e.v14 * alpha[4], r.f.v14 * alpha[5], r.g.v14 * alpha[6], r.h.v14 * alpha[7]), p, f32x4(v[vb + 14u])); r.a.v14 = t[0]; r.b.v14 = t[1]; r.c.v14 = t[2]; r.d.v14 = t[3]; r.e.v14 = t[4]; r.f.v14 = t[5]; r.g.v14 = t[6]; r.h.v14 = t[7]; }
    if D4C > 15u { t = pv4(array(r.a.v15 * alpha[0], r.b.v15 * alpha[1], r.c.v15 * alpha[2], r.d.v15 * alpha[3], r.e.v15 * alpha[4], r.f.v15 * alpha[5], r.g.v15 * alpha[6], r.h.v15 * alpha[7]), p, f32x4(v[vb + 15u])); r.a.v15 = t[0]; r.b.v15 = t[1]; r.c.v15 = t[2]; r.d.v15 = t[3]; r.e.v15 = t[4]; r.f.v15 = t[5]; r.g.v15 = t[6]; r.h.v15 = t[7]; }
    return r;
}

fn load_chunk(base: u32, scale: f32) -> Chunk {
    var c: Chunk;
    c.v0 = f32x4(q[base + 0u]) * scale;
    if D4C > 1u { c.v1 = f32x4(q[base + 1u]) * scale; }
    if D4C > 2u { c.v2 = f32x4(q[base + 2u]) * scale; }
    if D4C > 3u { c.v3 = f32x4(q[base + 3u]) * scale; }
    if D4C > 4u { c.v4 = f32x4(q[base + 4u]) * scale; }
    if D4C > 5u { c.v5 = f32x4(q[base + 5u]) * scale; }
    if D4C > 6u { c.v6 = f32x4(q[base + 6u]) * scale; }
    if D4C > 7u { c.v7 = f32x4(q[base + 7u]) * scale; }
    if D4C > 8u { c.v8 = f32x4(q[base + 8u]) * scale; }
    if D4C > 9u { c.v9 = f32x4(q[base + 9u]) * scale; }
    if D4C > 10u { c.v10 = f32x4(q[base + 10u]) * scale; }
    if D4C > 11u { c.v11 = f32x4(q[base + 11u]) * scale; }
    if D4C > 12u { c.v12 = f32x4(q[base + 12u]) * scale; }
    if D4C > 13u { c.v13 = f32x4(q[base + 13u]) * scale; }
    if D4C > 14u { c.v14 = f32x4(q[base + 14u]) * scale; }
    if D4C > 15u { c.v15 = f32x4(q[base + 15u]) * scale; }
    return c;
}

fn load_out(base: u32) -> Chunk {
    var c: Chunk;
    c.v0 = f32x4(y[base + 0u]);
    if D4C > 1u { c.v1 = f32x4(y[base + 1u]); }
    if D4C > 2u { c.v2 = f32x4(y[base + 2u]); }
    if D4C > 3u { c.v3 = f32x4(y[base + 3u]); }
    if D4C > 4u { c.v4 = f32x4(y[base + 4u]); }
    if D4C > 5u { c.v5 = f32x4(y[base + 5u]); }
    if D4C > 6u { c.v6 = f32x4(y[base + 6u]); }
    if D4C > 7u { c.v7 = f32x4(y[base + 7u]); }
    if D4C > 8u { c.v8 = f32x4(y[base + 8u]); }
    if D4C > 9u { c.v9 = f32x4(y[base + 9u]); }
    if D4C > 10u { c.v10 = f32x4(y[base + 10u]); }
    if D4C > 11u { c.v11 = f32x4(y[base + 11u]); }
    if D4C > 12u { c.v12 = f32x4(y[base + 12u]); }
    if D4C > 13u { c.v13 = f32x4(y[base + 13u]); }
    if D4C > 14u { c.v14 = f32x4(y[base + 14u]); }
    if D4C > 15u { c.v15 = f32x4(y[base + 15u]); }
    return c;
}

fn store_out(base: u32, c: Chunk, scale: f32) {
    y[base + 0u] = u64x2(c.v0 * scale);
    if D4C > 1u { y[base + 1u] = u64x2(c.v1 * scale); }
    if D4C > 2u { y[base + 2u] = u64x2(c.v2 * scale); }
    if D4C > 3u { y[base + 3u] = u64x2(c.v3 * scale); }
    if D4C > 4u { y[base + 4u] = u64x2(c.v4 * scale); }
    if D4C > 5u { y[base + 5u] = u64x2(c.v5 * scale); }
    if D4C > 6u { y[base + 6u] = u64x2(c.v6 * scale); }
    if D4C > 7u { y[base + 7u] = u64x2(c.v7 * scale); }
    if D4C > 8u { y[base + 8u] = u64x2(c.v8 * scale); }
    if D4C > 9u { y[base + 9u] = u64x2(c.v9 * scale); }
    if D4C > 10u { y[base + 10u] = u64x2(c.v10 * scale); }
    if D4C > 11u { y[base + 11u] = u64x2(c.v11 * scale); }
    if D4C > 12u { y[base + 12u] = u64x2(c.v12 * scale); }
    if D4C > 13u { y[base + 13u] = u64x2(c.v13 * scale); }
    if D4C > 14u { y[base + 14u] = u64x2(c.v14 * scale); }
    if D4C > 15u { y[base + 15u] = u64x2(c.v15 * scale); }
}

// Ends one query's chunk: its output (normalised after the last key window) and its
// softmax state. Rows past the window were computed on a clamped copy and store nothing.
fn finish(row: u32, base: u32, slot: u32, out: Chunk, m: f32, l: f32, last: bool) {
    if row < p.nq {
        store_out(base, out, select(1.0, 1.0 / l, last));
        state[slot] = vec2<f32>(m, l);
    }
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
    load_params(num);
    let q_blocks = (p.nq + 511u) / 512u;
    let flat = flat_workgroup(wg, num);
    // Whole workgroups past the end leave together: the subgroups stay uniform.
    let h = flat / q_blocks;
    if h >= p.heads {
        return;
    }
    let d4 = p.d / 4u;
    let head = h * d4;
    // The lane's query rows (clamped to the window for loads) and their state slots.
    var rows: array<u32, 8>;
    var q_row: array<u32, 8>;
    var st: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        rows[i] = (flat % q_blocks) * 512u + li + 64u * i;
        let clamped = min(rows[i], p.nq - 1u);
        q_row[i] = clamped * p.row + head;
        st[i] = ((p.q0 + clamped) * p.heads + h) * p.chunks;
    }
    let first = (p.flags & 1u) != 0u;
    let last = (p.flags & 2u) != 0u;
    let lane_keys = vec4<u32>(0u, 1u, 2u, 3u);
    for (var c = 0u; c < p.chunks; c++) {
        let co = c * D4C;
        var q = array(load_chunk(q_row[0], p.scale), load_chunk(q_row[1], p.scale), load_chunk(q_row[2], p.scale), load_chunk(q_row[3], p.scale), load_chunk(q_row[4], p.scale), load_chunk(q_row[5], p.scale), load_chunk(q_row[6], p.scale), load_chunk(q_row[7], p.scale));
        var o: Outputs;
        var m = array<f32, 8>(-3.0e38, -3.0e38, -3.0e38, -3.0e38, -3.0e38, -3.0e38, -3.0e38, -3.0e38);
        var l = array<f32, 8>();
        if !first {
            o = Outputs(load_out(q_row[0] + co), load_out(q_row[1] + co), load_out(q_row[2] + co), load_out(q_row[3] + co), load_out(q_row[4] + co), load_out(q_row[5] + co), load_out(q_row[6] + co), load_out(q_row[7] + co));
            for (var i = 0u; i < 8u; i++) {
                let running = state[st[i] + c];
                m[i] = running.x;
                l[i] = running.y;
            }
        }
        for (var j0 = 0u; j0 < p.nk; j0 += 8u) {
            let key = min(j0 + lane, p.nk - 1u) * p.row + head;
            let zero = Cols(vec4<f32>(), vec4<f32>());
            var s = Scores(zero, zero, zero, zero, zero, zero, zero, zero);
            if !MULTI {
                s = qk_chunk(s, q, key);
            } else {
                for (var kc = 0u; kc < p.chunks; kc++) {
                    q = array(load_chunk(q_row[0] + kc * D4C, p.scale), load_chunk(q_row[1] + kc * D4C, p.scale), load_chunk(q_row[2] + kc * D4C, p.scale), load_chunk(q_row[3] + kc * D4C, p.scale), load_chunk(q_row[4] + kc * D4C, p.scale), load_chunk(q_row[5] + kc * D4C, p.scale), load_chunk(q_row[6] + kc * D4C, p.scale), load_chunk(q_row[7] + kc * D4C, p.scale));
                    s = qk_chunk(s, q, key + kc * D4C);
                }
            }
            let valid = Cols(vec4<f32>(vec4<u32>(j0) + lane_keys < vec4<u32>(p.nk)), vec4<f32>(vec4<u32>(j0 + 4u) + lane_keys < vec4<u32>(p.nk)));
            let sa = online(m[0], l[0], s.a, valid);
            let sb = online(m[1], l[1], s.b, valid);
            let sc = online(m[2], l[2], s.c, valid);
            let sd = online(m[3], l[3], s.d, valid);
            let se = online(m[4], l[4], s.e, valid);
            let sf = online(m[5], l[5], s.f, valid);
            let sg = online(m[6], l[6], s.g, valid);
            let sh = online(m[7], l[7], s.h, valid);
            o = pv_chunk(o, array(sa.alpha, sb.alpha, sc.alpha, sd.alpha, se.alpha, sf.alpha, sg.alpha, sh.alpha), Scores(sa.p, sb.p, sc.p, sd.p, se.p, sf.p, sg.p, sh.p), key + co);
            m = array(sa.m, sb.m, sc.m, sd.m, se.m, sf.m, sg.m, sh.m);
            l = array(sa.l, sb.l, sc.l, sd.l, se.l, sf.l, sg.l, sh.l);
        }
        finish(rows[0], q_row[0] + co, st[0] + c, o.a, m[0], l[0], last);
        finish(rows[1], q_row[1] + co, st[1] + c, o.b, m[1], l[1], last);
        finish(rows[2], q_row[2] + co, st[2] + c, o.c, m[2], l[2], last);
        finish(rows[3], q_row[3] + co, st[3] + c, o.d, m[3], l[3], last);
        finish(rows[4], q_row[4] + co, st[4] + c, o.e, m[4], l[4], last);
        finish(rows[5], q_row[5] + co, st[5] + c, o.f, m[5], l[5], last);
        finish(rows[6], q_row[6] + co, st[6] + c, o.g, m[6], l[6], last);
        finish(rows[7], q_row[7] + co, st[7] + c, o.h, m[7], l[7], last);
    }
}
