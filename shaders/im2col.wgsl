// Patches of a convolution's input, one row per weight column: y[K, pixel] with
// K = (input channel, ky, kx) in the weight's [cout, cin, kh, kw] order and pixel the
// output pixel in row-major order, 0 in the padding. The convolution is then the
// product weight [cout, K] · y [K, pixels] (used for small pictures, where a direct
// kernel's tiles leave most lanes idle).

struct Params {
    @align(16)
    cin: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_t: u32,
    pad_l: u32,
    _pad: vec2<u32>,
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// One invocation per (input channel, output pixel), writing that pixel's kh·kw taps:
// its divisions (vector integer division is a per-lane loop on CPU devices) happen once
// per kh·kw elements instead of several times per element.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let pixels = p.oh * p.ow;
    let i = flat_workgroup(wg, num) * 256u + li;
    if i >= p.cin * pixels {
        return;
    }
    let ic = i / pixels;
    let pixel = i - ic * pixels;
    let oy = pixel / p.ow;
    let iy0 = i32(oy * p.stride) - i32(p.pad_t);
    let ix0 = i32((pixel - oy * p.ow) * p.stride) - i32(p.pad_l);
    let taps = p.kh * p.kw;
    var at = ic * taps * pixels + pixel;
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = iy0 + i32(ky);
        let row = (ic * p.h + u32(clamp(iy, 0, i32(p.h) - 1))) * p.w;
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = ix0 + i32(kx);
            let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
            y[at] = select(0.0, x[row + u32(clamp(ix, 0, i32(p.w) - 1))], inside);
            at += pixels;
        }
    }
}
