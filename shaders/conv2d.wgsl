// 2-D convolution, NCHW (batch 1), weights [cout, cin, kh, kw] as f32 or packed f16.
// Each invocation computes an 8-channel × 4-pixel output tile in registers, with no
// barriers: on lavapipe invocations map to SIMD lanes, and neighbouring lanes take
// neighbouring pixels while sharing (broadcast) the same weights.
// One dispatch covers a window of output channels and one of input channels, so
// tensors larger than a storage binding are done in several accumulating dispatches.

struct Params {
    cin: u32,        // input channels in this window
    h: u32,
    w: u32,
    cout: u32,       // output channels in this window
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_t: u32,
    pad_l: u32,
    w_cin: u32,      // input channels of the whole weight
    oc_base: u32,    // first output channel of the window
    ic_base: u32,    // first input channel of the window
    accumulate: u32, // add to y instead of starting from the bias
    activate: u32,   // last input window: apply ACT
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

override W_F16: bool = false;
override ACT: u32 = 0u; // 0 none, 1 ReLU, 2 SiLU

const OCT: u32 = 8u;
const PXT: u32 = 4u;

fn load_w(i: u32) -> f32 {
    if W_F16 {
        let pair = unpack2x16float(wt[i >> 1u]);
        return select(pair.x, pair.y, (i & 1u) == 1u);
    }
    return bitcast<f32>(wt[i]);
}

fn load_b(i: u32) -> f32 {
    if W_F16 {
        let pair = unpack2x16float(bias[i >> 1u]);
        return select(pair.x, pair.y, (i & 1u) == 1u);
    }
    return bitcast<f32>(bias[i]);
}

fn activation(v: f32) -> f32 {
    switch ACT {
        case 1u: { return max(v, 0.0); }
        case 2u: { return v / (1.0 + exp(-v)); }
        default: { return v; }
    }
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let gid = flat_workgroup(wg, num) * 64u + li;
    let x_groups = (p.ow + PXT - 1u) / PXT;
    let per_group = x_groups * p.oh;
    let oc0 = (gid / per_group) * OCT;
    if oc0 >= p.cout {
        return;
    }
    let rest = gid % per_group;
    let oy = rest / x_groups;
    let ox0 = (rest % x_groups) * PXT;
    let taps = p.kh * p.kw;

    var acc: array<array<f32, 4>, 8>;
    for (var ic = 0u; ic < p.cin; ic++) {
        let x_plane = ic * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad_t);
            if iy < 0 || iy >= i32(p.h) {
                continue;
            }
            let x_row = x_plane + u32(iy) * p.w;
            for (var kx = 0u; kx < p.kw; kx++) {
                var xv: array<f32, 4>;
                for (var t = 0u; t < PXT; t++) {
                    let ix = i32((ox0 + t) * p.stride + kx) - i32(p.pad_l);
                    if ix >= 0 && ix < i32(p.w) {
                        xv[t] = x[x_row + u32(ix)];
                    }
                }
                let tap = ky * p.kw + kx;
                for (var o = 0u; o < OCT; o++) {
                    let oc = min(oc0 + o, p.cout - 1u);
                    let wv = load_w(((p.oc_base + oc) * p.w_cin + p.ic_base + ic) * taps + tap);
                    for (var t = 0u; t < PXT; t++) {
                        acc[o][t] = fma(wv, xv[t], acc[o][t]);
                    }
                }
            }
        }
    }

    for (var o = 0u; o < OCT; o++) {
        let oc = oc0 + o;
        if oc >= p.cout {
            break;
        }
        for (var t = 0u; t < PXT; t++) {
            let ox = ox0 + t;
            if ox >= p.ow {
                break;
            }
            let idx = (oc * p.oh + oy) * p.ow + ox;
            var v = acc[o][t];
            if p.accumulate != 0u {
                v += y[idx];
            } else {
                v += load_b(p.oc_base + oc);
            }
            if p.activate != 0u {
                v = activation(v);
            }
            y[idx] = v;
        }
    }
}
