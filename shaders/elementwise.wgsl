// Elementwise ops over a window of `n` elements. `unary` and `binary` pick their
// operation with the OP override; `binary` broadcasts b over blocks of `inner`
// elements (b index = ((base + i) / inner) % b_len), which covers same-shape,
// per-channel and scalar operands. `geglu` halves rows of 2·cols: h · GELU(gate);
// `geglu4` does it a vec4 at a time where cols % 4 == 0.

struct Params {
    @align(16)
    n: u32,
    b_len: u32,
    inner: u32,
    base: u32,   // index of the window's first element in the whole tensor
    alpha: f32,
    beta: f32,
    cols: u32,   // geglu: output columns
    _pad: u32,
}

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// One-operand entry points write their result at binding 2.
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// `binary4`'s view of the bindings: same-shape operands, four elements per invocation.
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y4: array<vec4<f32>>;
// `geglu4`'s output.
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<f32>>;

// unary: 0 SiLU, 1 ReLU, 2 GELU (erf), 3 sigmoid, 4 alpha·x + beta
// binary: 0 alpha·a + beta·b, 1 a·b, 2 a·sigmoid(b)
override OP: u32 = 0u;

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

// WGSL has no erf: Numerical Recipes' erfc fit (fractional error below 1.2e-7), exact
// enough that GELU matches PyTorch's erf GELU to f32 rounding.
fn erf(v: f32) -> f32 {
    let z = abs(v);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277)))))))));
    return sign(v) * (1.0 - r);
}

fn gelu(v: f32) -> f32 {
    return 0.5 * v * (1.0 + erf(v * 0.70710678118654752));
}

fn index(wg: vec3<u32>, num: vec3<u32>, li: u32) -> u32 {
    return flat_workgroup(wg, num) * 256u + li;
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = index(wg, num, li);
    if i >= p.n {
        return;
    }
    let v = a[i];
    var r: f32;
    switch OP {
        case 0u: { r = v * sigmoid(v); }
        case 1u: { r = max(v, 0.0); }
        case 2u: { r = gelu(v); }
        case 3u: { r = sigmoid(v); }
        default: { r = p.alpha * v + p.beta; }
    }
    out[i] = r;
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = index(wg, num, li);
    if i >= p.n {
        return;
    }
    let u = a[i];
    let v = b[((p.base + i) / p.inner) % p.b_len];
    var r: f32;
    switch OP {
        case 0u: { r = p.alpha * u + p.beta * v; }
        case 1u: { r = u * v; }
        default: { r = u * sigmoid(v); }
    }
    y[i] = r;
}

// `binary` for same-shape operands whose length is a multiple of 4 (p.n of them): no
// broadcast index (a division and a remainder per element, each a per-lane loop on CPU
// devices) and a quarter of the invocations. The residual additions are these.
@compute @workgroup_size(256)
fn binary4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = index(wg, num, li);
    if i >= p.n / 4u {
        return;
    }
    let u = a4[i];
    let v = b4[i];
    var r: vec4<f32>;
    switch OP {
        case 0u: { r = p.alpha * u + p.beta * v; }
        case 1u: { r = u * v; }
        default: { r = u / (1.0 + exp(-v)); }
    }
    y4[i] = r;
}

@compute @workgroup_size(256)
fn geglu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = index(wg, num, li);
    if i >= p.n {
        return;
    }
    let row = i / p.cols;
    let col = i % p.cols;
    let h = a[row * 2u * p.cols + col];
    let gate = a[row * 2u * p.cols + p.cols + col];
    out[i] = h * gelu(gate);
}

// One division per output vec4 instead of a division and a remainder per element.
@compute @workgroup_size(256)
fn geglu4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = index(wg, num, li);
    if i >= p.n / 4u {
        return;
    }
    let cols4 = p.cols / 4u;
    let row = i / cols4;
    let at = row * 2u * cols4 + (i - row * cols4);
    let gate = a4[at + cols4];
    out4[i] = a4[at] * vec4<f32>(gelu(gate.x), gelu(gate.y), gelu(gate.z), gelu(gate.w));
}
