// Multi-head attention, softmax(q·kᵀ/√d)·v with an online softmax (nothing of size
// nq × nk is stored), portable kernels: `main`, one invocation per (query, head), keys
// one at a time, the head dim processed in output chunks of 64 (scores always span the
// whole head); `tiled` below, for GPUs and heads of up to 64 dims.
// `attention_subgroup.wgsl` is the fast path on 8-lane subgroups.
// A dispatch covers a window of query rows and one of key rows; with several key
// windows the running (max, sum) per query and chunk is kept in `state` and the
// unnormalised output in y between dispatches.

struct Params {
    @align(16)
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

@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<vec2<f32>>;

const CHUNK: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
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

// ---- `tiled`: the same online softmax for GPUs, heads of at most 64 dims (SD's are 64).
// A workgroup takes 64 queries of one head and walks the keys in blocks of 32, staged
// with their values in workgroup memory (16 KiB, what every adapter grants). Each
// invocation keeps its query and its output in registers, scores a whole block, then
// rescales its output once per block rather than once per key. Invocations past the
// last query compute on a clamped one and store nothing; they must reach the barriers.

override D4: u32 = 16u; // head dim / 4, at most 16
const QUERIES: u32 = 64u;
const KEYS: u32 = 32u;

var<workgroup> kb: array<vec4<f32>, 512>; // [KEYS][16]
var<workgroup> vb: array<vec4<f32>, 512>;

// Four consecutive elements of q, k, v or y from element i (rows are vec4-aligned).
fn q4(i: u32) -> vec4<f32> {
    return vec4<f32>(q[i], q[i + 1u], q[i + 2u], q[i + 3u]);
}

fn k4(i: u32) -> vec4<f32> {
    return vec4<f32>(k[i], k[i + 1u], k[i + 2u], k[i + 3u]);
}

fn v4(i: u32) -> vec4<f32> {
    return vec4<f32>(v[i], v[i + 1u], v[i + 2u], v[i + 3u]);
}

fn y4(i: u32) -> vec4<f32> {
    return vec4<f32>(y[i], y[i + 1u], y[i + 2u], y[i + 3u]);
}

@compute @workgroup_size(64)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let q_blocks = (p.nq + QUERIES - 1u) / QUERIES;
    let flat = flat_workgroup(wg, num);
    let h = flat / q_blocks;
    if h >= p.heads {
        return;
    }
    let i = (flat % q_blocks) * QUERIES + li;
    let qi = min(i, p.nq - 1u);
    let q_row = qi * p.row + h * p.d;
    let st = (p.q0 + qi) * p.heads + h;
    // The query pre-scaled by 1/√d, and the output so far.
    var qv: array<vec4<f32>, 16>;
    var o: array<vec4<f32>, 16>;
    for (var e = 0u; e < D4; e++) {
        qv[e] = q4(q_row + 4u * e) * p.scale;
    }
    var m = -3.0e38;
    var l = 0.0;
    if (p.flags & 1u) == 0u {
        for (var e = 0u; e < D4; e++) {
            o[e] = y4(q_row + 4u * e);
        }
        m = state[st].x;
        l = state[st].y;
    }
    for (var j0 = 0u; j0 < p.nk; j0 += KEYS) {
        for (var t = li; t < KEYS * D4; t += QUERIES) {
            let at = min(j0 + t / D4, p.nk - 1u) * p.row + h * p.d + 4u * (t % D4);
            kb[(t / D4) * 16u + t % D4] = k4(at);
            vb[(t / D4) * 16u + t % D4] = v4(at);
        }
        workgroupBarrier();
        // Scores of the block (keys past the end score -3e38, weighing 0), then one rescale.
        var s: array<f32, KEYS>;
        var block_max = -3.0e38;
        for (var j = 0u; j < KEYS; j++) {
            var dot4 = vec4<f32>();
            for (var e = 0u; e < D4; e++) {
                dot4 = fma(qv[e], kb[j * 16u + e], dot4);
            }
            s[j] = select(-3.0e38, dot4.x + dot4.y + dot4.z + dot4.w, j0 + j < p.nk);
            block_max = max(block_max, s[j]);
        }
        let m_new = max(m, block_max);
        let alpha = exp(m - m_new);
        l *= alpha;
        for (var e = 0u; e < D4; e++) {
            o[e] *= alpha;
        }
        for (var j = 0u; j < KEYS; j++) {
            let pj = exp(s[j] - m_new);
            l += pj;
            for (var e = 0u; e < D4; e++) {
                o[e] = fma(vec4<f32>(pj), vb[j * 16u + e], o[e]);
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    if i < p.nq {
        let out_scale = select(1.0, 1.0 / l, (p.flags & 2u) != 0u);
        for (var e = 0u; e < D4; e++) {
            let r = o[e] * out_scale;
            y[q_row + 4u * e] = r.x;
            y[q_row + 4u * e + 1u] = r.y;
            y[q_row + 4u * e + 2u] = r.z;
            y[q_row + 4u * e + 3u] = r.w;
        }
        state[st] = vec2<f32>(m, l);
    }
}
