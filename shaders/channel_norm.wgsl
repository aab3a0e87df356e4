// `norms`: one workgroup per channel plane of hw elements; each thread sums squares of
// a strided subset with Kahan compensation, then the workgroup adds the partial sums
// in a tree. `rescale`: y = x · (target[c] / norm[c]) over a window of whole channels.

struct Params {
    @align(16)
    hw: u32,
    channels: u32, // channels in the window
    c_base: u32,   // first channel of the window
    n: u32,        // elements in the window (rescale)
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
// norms
@group(0) @binding(2) var<storage, read_write> norms_out: array<f32>;
// rescale (x at binding 1)
@group(0) @binding(2) var<storage, read> norm: array<f32>;
@group(0) @binding(3) var<storage, read> target_norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn norms(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let c = flat_workgroup(wg, num);
    if c >= p.channels {
        return;
    }
    let base = c * p.hw;
    var sum = 0.0;
    var comp = 0.0;
    for (var i = li; i < p.hw; i += WG) {
        let v = x[base + i];
        let term = fma(v, v, -comp);
        let next = sum + term;
        // max(sum, 0.0) is sum (a sum of squares), but keeps a compiler from folding
        // (sum + term) - sum to term, which for inexact floats Mesa's does: the plain
        // form lost the compensation on lavapipe (tests/ops_misc.rs shows the dropped
        // squares).
        comp = (next - max(sum, 0.0)) - term;
        sum = next;
    }
    partial[li] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if li < stride {
            partial[li] += partial[li + stride];
        }
        workgroupBarrier();
    }
    if li == 0u {
        norms_out[p.c_base + c] = sqrt(partial[0]);
    }
}

@compute @workgroup_size(256)
fn rescale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = flat_workgroup(wg, num) * WG + li;
    if i >= p.n {
        return;
    }
    let c = p.c_base + i / p.hw;
    y[i] = x[i] * (target_norm[c] / norm[c]);
}
