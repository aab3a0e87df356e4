// Sinusoidal timestep embedding: y = [sin(t·f), cos(t·f)] (or [cos, sin] when flip),
// zero-padded past 2·half. sin/cos are Cephes' sinf/cosf: Cody–Waite reduction by
// π/2 with a three-part constant (exact for |x| < 8192), then minimax polynomials on
// [−π/4, π/4], which holds about 1e-7 absolute error where WGSL's builtins promise
// only 2⁻¹¹ and only on [−π, π].

struct Params {
    @align(16)
    t: f32,
    half: u32,
    dim: u32,
    flip: u32,
}

@group(0) @binding(1) var<storage, read> freqs: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const DP1: f32 = 0.78515625;
const DP2: f32 = 2.4187564849853515625e-4;
const DP3: f32 = 3.77489497744594108e-8;
const FOUR_OVER_PI: f32 = 1.27323954473516;

// (sin x, cos x)
fn sincos(x: f32) -> vec2<f32> {
    let ax = abs(x);
    var j = u32(ax * FOUR_OVER_PI);
    j += j & 1u; // nearest even multiple of π/4, i.e. a multiple of π/2
    let k = f32(j);
    let z = fma(-k, DP3, fma(-k, DP2, fma(-k, DP1, ax)));
    let zz = z * z;
    let s = fma(fma(fma(-1.9515295891e-4, zz, 8.3321608736e-3), zz, -1.6666654611e-1) * zz, z, z);
    let c = fma(fma(fma(2.443315711809948e-5, zz, -1.388731625493765e-3), zz, 4.166664568298827e-2) * zz, zz, fma(-0.5, zz, 1.0));
    var r: vec2<f32>;
    switch (j >> 1u) & 3u {
        case 0u: { r = vec2<f32>(s, c); }
        case 1u: { r = vec2<f32>(c, -s); }
        case 2u: { r = vec2<f32>(-s, -c); }
        default: { r = vec2<f32>(-c, s); }
    }
    return vec2<f32>(select(r.x, -r.x, x < 0.0), r.y);
}

@compute @workgroup_size(64)
fn embed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let i = flat_workgroup(wg, num) * 64u + li;
    if i >= p.dim {
        return;
    }
    if i >= 2u * p.half {
        y[i] = 0.0;
        return;
    }
    let second = i >= p.half;
    let sc = sincos(p.t * freqs[i - select(0u, p.half, second)]);
    // Unflipped: sin first. Flipped: cos first.
    y[i] = select(sc.x, sc.y, second != (p.flip != 0u));
}
