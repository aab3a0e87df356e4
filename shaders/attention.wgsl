// Multi-head attention, softmax(q·kᵀ/√d)·v with an online softmax (nothing of size
// nq × nk is stored): the portable kernel, one invocation per (query, head), keys one
// at a time. `attention_subgroup.wgsl` is the fast path on 8-lane subgroups. The head
// dim is processed in output chunks of 64; scores always span the whole head.
// A dispatch covers a window of query rows and one of key rows; with several key
// windows the running (max, sum) per query and chunk is kept in `state` and the
// unnormalised output in y between dispatches.

struct Params {
    nq: u32,       // query rows in this window
    nk: u32,       // key rows in this window
    heads: u32,
    d: u32,
    row: u32,      // elements per token row (heads · d)
    chunks: u32,   // ceil(d / 64)
    q0: u32,       // first query row of the window, for `state`
    flags: u32,    // 1: first key window (fresh state), 2: last key window (normalise)
    scale: f32,    // 1/√d
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<vec2<f32>>;

const CHUNK: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let gid = flat_workgroup(wg, num) * 64u + li;
    let i = gid / p.heads;
    let h = gid % p.heads;
    if i >= p.nq {
        return;
    }
    let q_row = i * p.row + h * p.d;
    let st = ((p.q0 + i) * p.heads + h) * p.chunks;
    for (var c = 0u; c < p.chunks; c++) {
        let e0 = c * CHUNK;
        let dc = min(CHUNK, p.d - e0);
        var o: array<f32, CHUNK>;
        var m = -3.0e38;
        var l = 0.0;
        if (p.flags & 1u) == 0u {
            for (var e = 0u; e < dc; e++) {
                o[e] = y[q_row + e0 + e];
            }
            m = state[st + c].x;
            l = state[st + c].y;
        }
        for (var j = 0u; j < p.nk; j++) {
            let k_row = j * p.row + h * p.d;
            var s = 0.0;
            for (var e = 0u; e < p.d; e++) {
                s = fma(q[q_row + e], k[k_row + e], s);
            }
            s *= p.scale;
            let m_new = max(m, s);
            let alpha = exp(m - m_new);
            let pj = exp(s - m_new);
            l = l * alpha + pj;
            for (var e = 0u; e < dc; e++) {
                o[e] = fma(pj, v[k_row + e0 + e], o[e] * alpha);
            }
            m = m_new;
        }
        let out_scale = select(1.0, 1.0 / l, (p.flags & 2u) != 0u);
        for (var e = 0u; e < dc; e++) {
            y[q_row + e0 + e] = o[e] * out_scale;
        }
        state[st + c] = vec2<f32>(m, l);
    }
}
