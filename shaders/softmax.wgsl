// Softmax along the rows of x [rows, n]: y = exp(scale · (x - max)) / Σ exp(…), the
// max and the sum in f32. One workgroup per row, its 64 invocations striding the row
// (so a long row stays far below the loop cap of CPU drivers), reduced in workgroup
// memory.

struct Params {
    @align(16)
    rows: u32,
    n: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, 64>;

// Every invocation's `v` combined: the max when `take_max`, else the sum.
fn reduce(v: f32, li: u32, take_max: bool) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if li < s {
            let o = partial[li + s];
            partial[li] = select(partial[li] + o, max(partial[li], o), take_max);
        }
        workgroupBarrier();
    }
    let all = partial[0];
    workgroupBarrier();
    return all;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    // Workgroups of a folded grid past the last row compute row 0 again and write
    // nothing: barriers need the whole workgroup, so none may leave early.
    let flat = flat_workgroup(wg, num);
    let live = flat < p.rows;
    let base = select(0u, flat, live) * p.n;
    var m = -3.402823e38;
    for (var i = li; i < p.n; i += 64u) {
        m = max(m, x[base + i]);
    }
    m = reduce(m, li, true);
    var sum = 0.0;
    for (var i = li; i < p.n; i += 64u) {
        sum += exp((x[base + i] - m) * p.scale);
    }
    let inv = 1.0 / reduce(sum, li, false);
    if live {
        for (var i = li; i < p.n; i += 64u) {
            y[base + i] = exp((x[base + i] - m) * p.scale) * inv;
        }
    }
}
