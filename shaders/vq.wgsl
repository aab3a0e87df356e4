// Cosine VQ. `normalize`: zn = z / max(‖z‖, 1e-12) per token, as F.normalize.
// `argmax`: per token, the first codebook row with the largest zn·e (f32 fma in index
// order, strict >, so ties keep the lowest index); k where no score is a number (NaN
// features), which the encoder refuses. `gather`: y[t, :] = table[min(idx[t], k−1), :].
// Entry points bind different buffers at the same slots (see the Rust side).

struct Params {
    @align(16)
    n: u32, // tokens (gather: output elements)
    d: u32,
    k: u32, // codebook / table rows
    j0: u32, // argmax: codebook rows j0..j1 in this dispatch; the running best is
    j1: u32, // carried in best_out / best_score between dispatches
}

// normalize
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> zn_out: array<f32>;
// argmax
@group(0) @binding(1) var<storage, read> zn: array<f32>;
@group(0) @binding(2) var<storage, read> codebook: array<u32>;
@group(0) @binding(3) var<storage, read_write> best_out: array<u32>;
@group(0) @binding(4) var<storage, read_write> best_score_io: array<f32>;
// gather
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> rows_out: array<f32>;

fn index(wg: vec3<u32>, num: vec3<u32>, li: u32) -> u32 {
    return flat_workgroup(wg, num) * 64u + li;
}

@compute @workgroup_size(64)
fn normalize(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let t = index(wg, num, li);
    if t >= p.n {
        return;
    }
    let row = t * p.d;
    var ss = 0.0;
    for (var i = 0u; i < p.d; i++) {
        ss = fma(z[row + i], z[row + i], ss);
    }
    let norm = max(sqrt(ss), 1e-12);
    for (var i = 0u; i < p.d; i++) {
        zn_out[row + i] = z[row + i] / norm;
    }
}

@compute @workgroup_size(64)
fn argmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let t = index(wg, num, li);
    if t >= p.n {
        return;
    }
    let row = t * p.d;
    var best = p.k;
    var best_score = -3.40282347e38; // the lowest finite f32
    if p.j0 > 0u {
        best = best_out[t];
        best_score = best_score_io[t];
    }
    for (var j = p.j0; j < p.j1; j++) {
        var s = 0.0;
        for (var i = 0u; i < p.d; i++) {
            let e = j * p.d + i;
            s = fma(zn[row + i], widen(codebook[word_of(e)], e), s);
        }
        if s > best_score {
            best = j;
            best_score = s;
        }
    }
    best_out[t] = best;
    best_score_io[t] = best_score;
}

@compute @workgroup_size(64)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = index(wg, num, li);
    if i >= p.n {
        return;
    }
    let r = min(ids[i / p.d], p.k - 1u);
    let e = r * p.d + i % p.d;
    rows_out[i] = widen(table[word_of(e)], e);
}
