// Transposed 2-D convolution, NCHW (batch 1), weights [cin, cout, kh, kw] as f32 or
// packed f16, as a gather: y[oc, oy, ox] = bias + Σ x[ic, iy, ix]·w[ic, oc, ky, kx]
// over oy = iy·stride + ky − pad, ox = ix·stride + kx − pad. Each invocation computes
// 8 channels × 4 pixels of one row in registers; the 4 pixels are `stride` apart
// (one phase ox mod stride), so they need the same taps and adjacent input pixels.
// One dispatch covers a window of output and one of input channels, accumulating.

struct Params {
    @align(16)
    cin: u32,        // input channels in this window
    h: u32,
    w: u32,
    cout: u32,       // output channels in this window
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    w_cout: u32,     // output channels of the whole weight
    oc_base: u32,    // first output channel of the window
    ic_base: u32,    // first input channel of the window
    accumulate: u32, // add to y instead of starting from the bias
    x_tiles: u32,    // pixel tiles per phase and row
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const OCT: u32 = 8u;
const PXT: u32 = 4u;

fn load_w(i: u32) -> f32 {
    return widen(wt[word_of(i)], i);
}

fn load_b(i: u32) -> f32 {
    return widen(bias[word_of(i)], i);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    load_params(num);
    let gid = flat_workgroup(wg, num) * 64u + li;
    let per_row = p.stride * p.x_tiles;
    let per_group = per_row * p.oh;
    let oc0 = (gid / per_group) * OCT;
    if oc0 >= p.cout {
        return;
    }
    let rest = gid % per_group;
    let oy = rest / per_row;
    let phase = (rest % per_row) / p.x_tiles;
    let ox0 = phase + (rest % p.x_tiles) * PXT * p.stride;
    if ox0 >= p.ow {
        return;
    }
    let taps = p.kh * p.kw;
    let s = i32(p.stride);

    var acc: array<array<f32, 4>, 8>;
    for (var ic = 0u; ic < p.cin; ic++) {
        let x_plane = ic * p.h * p.w;
        // Taps with ky ≡ oy + pad (mod stride) reach this row; iy falls as ky grows.
        for (var ky = (oy + p.pad) % p.stride; ky < p.kh; ky += p.stride) {
            let iy_s = i32(oy + p.pad) - i32(ky);
            if iy_s < 0 {
                break;
            }
            let iy = u32(iy_s / s);
            if iy >= p.h {
                continue;
            }
            let x_row = x_plane + iy * p.w;
            for (var kx = (phase + p.pad) % p.stride; kx < p.kw; kx += p.stride) {
                // Exact division: ox0 + pad − kx is a multiple of stride.
                let ix0 = (i32(ox0 + p.pad) - i32(kx)) / s;
                var xv: array<f32, 4>;
                for (var t = 0u; t < PXT; t++) {
                    let ix = ix0 + i32(t);
                    if ix >= 0 && ix < i32(p.w) {
                        xv[t] = x[x_row + u32(ix)];
                    }
                }
                let tap = ky * p.kw + kx;
                for (var o = 0u; o < OCT; o++) {
                    let oc = min(oc0 + o, p.cout - 1u);
                    let wv = load_w(((p.ic_base + ic) * p.w_cout + p.oc_base + oc) * taps + tap);
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
            let ox = ox0 + t * p.stride;
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
            y[idx] = v;
        }
    }
}
