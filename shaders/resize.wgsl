// Nearest 2× upsampling over a window of whole input rows: output element i of the
// window (rows of 2w) copies input (row / 2, column / 2). `nearest2x4`, for rows a
// multiple of 4 long, reads an input vec4 and writes its 2 × 2 copies (four vec4s):
// one division per 16 outputs instead of two per output.

struct Params {
    @align(16)
    n: u32, // output elements in the window
    w: u32, // input width
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn nearest2x(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = flat_workgroup(wg, num) * 256u + li;
    if i >= p.n {
        return;
    }
    let out_row = i / (2u * p.w);
    let col = i % (2u * p.w);
    y[i] = x[(out_row / 2u) * p.w + col / 2u];
}

@compute @workgroup_size(256)
fn nearest2x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = flat_workgroup(wg, num) * 256u + li;
    if i >= p.n / 16u {
        return;
    }
    let w4 = p.w / 4u;
    let row = i / w4;
    let v = x4[i];
    // Output row 2·row starts at vec4 (2·row)·(2·w4); the input vec4's columns at 2·(i − row·w4).
    let at = 4u * row * w4 + 2u * (i - row * w4);
    let lo = v.xxyy;
    let hi = v.zzww;
    y4[at] = lo;
    y4[at + 1u] = hi;
    y4[at + 2u * w4] = lo;
    y4[at + 2u * w4 + 1u] = hi;
}
