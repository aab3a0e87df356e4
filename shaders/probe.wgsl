// Device probes for the kernel benchmark: `fma_peak` runs long chains of independent
// FMAs (the arithmetic ceiling kernels are measured against), `copy` and `read_stream`
// stream a large buffer (the memory ceiling: the faster of the two).

struct Params {
    iters: u32,  // fma_peak: loop trips; copy, read_stream: vec4 elements
    seed: f32,   // multiplier, from the host so the chains cannot be folded
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> src: array<vec4<f32>>;

// 12 independent vec4 chains per invocation: enough to cover FMA latency on every
// SIMD unit without spilling the 16 AVX2 registers a CPU driver has.
@compute @workgroup_size(64)
fn fma_peak(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let gid = flat_workgroup(wg, num) * 64u + li;
    let m = vec4<f32>(p.seed);
    let c = vec4<f32>(1e-3);
    let s = f32(gid) * 1e-6;
    var a0 = vec4<f32>(s, s + 1.0, s + 2.0, s + 3.0);
    var a1 = a0 + 4.0;
    var a2 = a0 + 8.0;
    for (var i = 0u; i < p.iters; i++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
    }
    dst[gid] = a0 + a1 + a2;
}

@compute @workgroup_size(64)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, num) * 64u + li;
    if i < p.iters {
        dst[i] = src[i];
    }
}

// Reads without writing back (as kernels that stream weights do, where a copy's stores
// can cost more than its loads): invocation i sums vec4s i, i + n, … of 16 runs of n
// and writes one vec4, so that each run is read in order across invocations.
const READ_RUNS: u32 = 16u;

@compute @workgroup_size(64)
fn read_stream(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, num) * 64u + li;
    let n = p.iters / READ_RUNS;
    if i < n {
        var sum = vec4<f32>(0.0);
        for (var r = 0u; r < READ_RUNS; r++) {
            sum += src[i + r * n];
        }
        dst[i] = sum;
    }
}
