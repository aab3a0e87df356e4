// LayerNorm over the last dimension of x [rows, c]: each invocation normalises one row,
// mean first and then the (biased) variance about it, both in f32, then
// y = (x - mean) / sqrt(var + eps) · gamma + beta, gamma and beta f32 or packed f16.

struct Params {
    @align(16)
    rows: u32,
    c: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<u32>;
@group(0) @binding(3) var<storage, read> beta: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let row = flat_workgroup(wg, num) * 64u + li;
    if row >= p.rows {
        return;
    }
    let base = row * p.c;
    // Summing offsets from the row's first value keeps the f32 sum small, and the mean
    // exact to rounding, even when the row sits far from zero.
    let shift = x[base];
    var sum = 0.0;
    for (var i = 0u; i < p.c; i++) {
        sum += x[base + i] - shift;
    }
    let mean = shift + sum / f32(p.c);
    var sq = 0.0;
    for (var i = 0u; i < p.c; i++) {
        let d = x[base + i] - mean;
        sq = fma(d, d, sq);
    }
    let inv = inverseSqrt(sq / f32(p.c) + p.eps);
    for (var i = 0u; i < p.c; i++) {
        let w = word_of(i);
        y[base + i] = (x[base + i] - mean) * inv * widen(gamma[w], i) + widen(beta[w], i);
    }
}
