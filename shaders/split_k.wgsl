// The sum of a split-K product's slices: y[i] = act(Σ_s part[s·len + i] + bias), where
// each slice is one split's partial sums over its run of K (the portable `tiled`
// kernels of matmul.wgsl and conv2d.wgsl, when too few tiles would leave a GPU's
// compute units idle). The bias, f32 or packed f16, is bias[(i / inner) % count]: one
// per column of a Linear layer (inner 1), one per channel of a convolution (inner: its
// pixels). Four consecutive outputs per invocation, the activation on them at once.

struct Params {
    @align(16)
    len: u32,       // elements of y, and of each slice
    splits: u32,
    inner: u32,
    count: u32,
    has_bias: u32,
}

@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn load_b(i: u32) -> f32 {
    return widen(bias[word_of(i)], i);
}

@compute @workgroup_size(256)
fn sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i0 = 4u * (flat_workgroup(wg, num) * 256u + li);
    if i0 >= p.len {
        return;
    }
    var v = vec4<f32>();
    for (var j = 0u; j < 4u; j++) {
        // Past the end: the last element again, never stored.
        let i = min(i0 + j, p.len - 1u);
        var total = 0.0;
        for (var s = 0u; s < p.splits; s++) {
            total += part[s * p.len + i];
        }
        if p.has_bias != 0u {
            total += load_b((i / p.inner) % p.count);
        }
        v[j] = total;
    }
    let out = activation(v);
    for (var j = 0u; j < 4u; j++) {
        if i0 + j < p.len {
            y[i0 + j] = out[j];
        }
    }
}
