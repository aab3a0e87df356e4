// Nearest 2× upsampling over a window of whole input rows: output element i of the
// window (rows of 2w) copies input (row / 2, column / 2).

struct Params {
    n: u32, // output elements in the window
    w: u32, // input width
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn nearest2x(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, num) * 256u + li;
    if i >= p.n {
        return;
    }
    let out_row = i / (2u * p.w);
    let col = i % (2u * p.w);
    y[i] = x[(out_row / 2u) * p.w + col / 2u];
}
