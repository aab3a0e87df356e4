// GroupNorm over a [c, h, w] tensor whose groups are contiguous runs of group_len
// elements. `partial`: one workgroup per SLICE-element slice of a group; each thread
// writes (count, mean, M2) of its own elements, a two-pass mean and M2 so that nothing
// cancels in f32. `finalize`: one workgroup per group merges its threads' partials with
// Chan's formula into (mean, 1/sqrt(var + eps)).
// `apply`: y = (x − mean)·rstd·gamma + beta, then SiLU if SILU, over a window of
// whole groups. `partial4` and `apply4` do the same a vec4 at a time where a channel's
// pixels come in fours (CPU drivers load per lane, so one vec4 load beats four).
// Entry points bind different buffers at the same slots (see the Rust side).

struct Params {
    @align(16)
    group_len: u32,  // elements per group
    slices: u32,     // partial slices per group
    groups: u32,     // groups in this dispatch
    group_base: u32, // first group of the window (finalize)
    n: u32,          // elements in the window (apply)
    hw: u32,
    cpg: u32,        // channels per group
    c_base: u32,     // first channel of the window (apply)
    eps: f32,
}


// partial
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> part_out: array<f32>;
// finalize
@group(0) @binding(1) var<storage, read> part_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats_out: array<f32>;
// apply (x at binding 1)
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<u32>;
@group(0) @binding(4) var<storage, read> beta: array<u32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
// partial4 and apply4 (with part_out or stats, gamma, beta as above)
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y4: array<vec4<f32>>;

override SILU: bool = false;

// 64 threads: a CPU driver runs a workgroup with barriers as coroutines, one per
// 8-lane subgroup, so every barrier of a wider workgroup costs more switches.
const WG: u32 = 64u;
const PER: u32 = 64u;
const SLICE: u32 = WG * PER; // 4096, as in the Rust side

var<workgroup> w_count: array<f32, 64>;
var<workgroup> w_mean: array<f32, 64>;
var<workgroup> w_m2: array<f32, 64>;

fn load_gamma(i: u32) -> f32 {
    return widen(gamma[word_of(i)], i);
}

fn load_beta(i: u32) -> f32 {
    return widen(beta[word_of(i)], i);
}

// (count, mean, M2) of two disjoint sets merged (Chan et al.).
fn merge(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    if b.x == 0.0 {
        return a;
    }
    if a.x == 0.0 {
        return b;
    }
    let n = a.x + b.x;
    let delta = b.y - a.y;
    return vec3<f32>(n, a.y + delta * (b.x / n), a.z + b.z + delta * delta * (a.x * (b.x / n)));
}

// Tree-merges the workgroup's (count, mean, M2) triples; thread 0 gets the total.
fn reduce_workgroup(li: u32, mine: vec3<f32>) -> vec3<f32> {
    w_count[li] = mine.x;
    w_mean[li] = mine.y;
    w_m2[li] = mine.z;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if li < stride {
            let a = vec3<f32>(w_count[li], w_mean[li], w_m2[li]);
            let b = vec3<f32>(w_count[li + stride], w_mean[li + stride], w_m2[li + stride]);
            let m = merge(a, b);
            w_count[li] = m.x;
            w_mean[li] = m.y;
            w_m2[li] = m.z;
        }
        workgroupBarrier();
    }
    return vec3<f32>(w_count[0], w_mean[0], w_m2[0]);
}

// The elements [start, end) of the window's slice wid: slice wid % slices of group
// wid / slices.
struct Slice {
    start: u32,
    end: u32,
}

fn slice_of(wid: u32) -> Slice {
    let grp = wid / p.slices;
    let s = wid % p.slices;
    return Slice(grp * p.group_len + s * SLICE, grp * p.group_len + min((s + 1u) * SLICE, p.group_len));
}

// Thread li's (count, mean, M2) of the window's slice wid: a row of 3 floats (the
// partials are windowed with the groups).
fn write_partial(wid: u32, li: u32, mine: vec3<f32>) {
    let row = wid * WG + li;
    part_out[3u * row] = mine.x;
    part_out[3u * row + 1u] = mine.y;
    part_out[3u * row + 2u] = mine.z;
}

@compute @workgroup_size(64)
fn partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let wid = flat_workgroup(wg, num);
    if wid >= p.groups * p.slices {
        return;
    }
    let sl = slice_of(wid);
    var count = 0.0;
    var sum = 0.0;
    for (var i = sl.start + li; i < sl.end; i += WG) {
        sum += x[i];
        count += 1.0;
    }
    let mean = select(0.0, sum / count, count > 0.0);
    var m2 = 0.0;
    for (var i = sl.start + li; i < sl.end; i += WG) {
        let d = x[i] - mean;
        m2 = fma(d, d, m2);
    }
    write_partial(wid, li, vec3<f32>(count, mean, m2));
}

// Vec4 j of a `partial4` thread (`first`: its vec4 0), zeros from the slice's end4 on.
fn slice_vec4(first: u32, j: u32, end4: u32) -> vec4<f32> {
    let i = first + j * WG;
    return select(vec4<f32>(0.0), x4[min(i, end4 - 1u)], i < end4);
}

// Squared deviations of slice_vec4 `v` from `mean`, zeros from the slice's end4 on.
fn dev2(v: vec4<f32>, mean: f32, first: u32, j: u32, end4: u32) -> vec4<f32> {
    let d = v - vec4<f32>(mean);
    return select(vec4<f32>(0.0), d * d, first + j * WG < end4);
}

// `partial` on vec4s (the host guarantees group_len % 4 == 0): a thread's PER / 4 = 16
// vec4s in straight-line code, loaded once and kept for both passes (in a loop, every
// load is a per-lane loop on CPU devices). Each thread writes its own partial: a
// workgroup reduction's barriers took a fifth of the group norm's time there.
@compute @workgroup_size(64)
fn partial4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let wid = flat_workgroup(wg, num);
    if wid >= p.groups * p.slices {
        return;
    }
    let sl = slice_of(wid);
    let first = sl.start / 4u + li;
    let end4 = sl.end / 4u;
    let v = array<vec4<f32>, 16>(
        slice_vec4(first, 0u, end4), slice_vec4(first, 1u, end4), slice_vec4(first, 2u, end4), slice_vec4(first, 3u, end4),
        slice_vec4(first, 4u, end4), slice_vec4(first, 5u, end4), slice_vec4(first, 6u, end4), slice_vec4(first, 7u, end4),
        slice_vec4(first, 8u, end4), slice_vec4(first, 9u, end4), slice_vec4(first, 10u, end4), slice_vec4(first, 11u, end4),
        slice_vec4(first, 12u, end4), slice_vec4(first, 13u, end4), slice_vec4(first, 14u, end4), slice_vec4(first, 15u, end4),
    );
    let loaded = select(0u, min(PER / 4u, (end4 - first + WG - 1u) / WG), first < end4);
    let count = 4.0 * f32(loaded);
    let sum = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))
        + ((v[8] + v[9]) + (v[10] + v[11])) + ((v[12] + v[13]) + (v[14] + v[15]));
    let mean = select(0.0, (sum.x + sum.y + sum.z + sum.w) / count, count > 0.0);
    let m2 = ((dev2(v[0], mean, first, 0u, end4) + dev2(v[1], mean, first, 1u, end4))
        + (dev2(v[2], mean, first, 2u, end4) + dev2(v[3], mean, first, 3u, end4)))
        + ((dev2(v[4], mean, first, 4u, end4) + dev2(v[5], mean, first, 5u, end4))
        + (dev2(v[6], mean, first, 6u, end4) + dev2(v[7], mean, first, 7u, end4)))
        + ((dev2(v[8], mean, first, 8u, end4) + dev2(v[9], mean, first, 9u, end4))
        + (dev2(v[10], mean, first, 10u, end4) + dev2(v[11], mean, first, 11u, end4)))
        + ((dev2(v[12], mean, first, 12u, end4) + dev2(v[13], mean, first, 13u, end4))
        + (dev2(v[14], mean, first, 14u, end4) + dev2(v[15], mean, first, 15u, end4)));
    write_partial(wid, li, vec3<f32>(count, mean, m2.x + m2.y + m2.z + m2.w));
}

// Merges the window's group grp's slices · WG thread partials into the statistics of
// group group_base + grp.
@compute @workgroup_size(64)
fn finalize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let grp = flat_workgroup(wg, num);
    if grp >= p.groups {
        return;
    }
    let rows = p.slices * WG;
    var acc = vec3<f32>(0.0);
    for (var r = li; r < rows; r += WG) {
        let row = grp * rows + r;
        acc = merge(acc, vec3<f32>(part_in[3u * row], part_in[3u * row + 1u], part_in[3u * row + 2u]));
    }
    let total = reduce_workgroup(li, acc);
    if li == 0u {
        let at = 2u * (p.group_base + grp);
        stats_out[at] = total.y;
        stats_out[at + 1u] = 1.0 / sqrt(total.z / total.x + p.eps);
    }
}

// (x − mean)·rstd·gamma + beta for channel c (of the whole tensor), then SiLU if SILU.
fn normalise(v: vec4<f32>, c: u32) -> vec4<f32> {
    let grp = c / p.cpg;
    var out = (v - vec4<f32>(stats[2u * grp])) * (stats[2u * grp + 1u] * load_gamma(c)) + vec4<f32>(load_beta(c));
    if SILU {
        out = out / (vec4<f32>(1.0) + exp(-out));
    }
    return out;
}

@compute @workgroup_size(64)
fn apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = flat_workgroup(wg, num) * WG + li;
    if i >= p.n {
        return;
    }
    y[i] = normalise(vec4<f32>(x[i]), p.c_base + i / p.hw).x;
}

// `apply` on vec4s: the host guarantees hw % 4 == 0, so a vec4 is one channel's. The
// grid's y is the window's channel and x (then z, past the grid's limit) runs over the
// channel's vec4s: no division per vec4 (on CPU devices each is a per-lane loop, and
// the two that found a vec4's channel and group took a fifth of the group norm's time).
@compute @workgroup_size(64)
fn apply4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let hw4 = p.hw / 4u;
    let i = (wg.z * num.x + wg.x) * WG + li;
    if i >= hw4 {
        return;
    }
    let at = wg.y * hw4 + i;
    y4[at] = normalise(x4[at], p.c_base + wg.y);
}
