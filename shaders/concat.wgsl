// Copies n elements: y[dst_off + i] = x[src_off + i]. The offsets are what is left of
// an operand's start after aligning its binding down.

struct Params {
    @align(16)
    n: u32,
    src_off: u32,
    dst_off: u32,
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = flat_workgroup(wg, num) * 256u + li;
    if i >= p.n {
        return;
    }
    y[p.dst_off + i] = x[p.src_off + i];
}
