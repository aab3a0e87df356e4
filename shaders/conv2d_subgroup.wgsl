// The `conv2d.wgsl` convolution on adapters whose subgroups are exactly 8 lanes
// (lavapipe). There every storage load is a loop over the 8 lanes, so loads, not FMAs,
// bound the portable kernel. Here, as in that kernel, a lane computes 4 output rows at
// one column, neighbouring lanes taking neighbouring columns; but lane l loads the
// weight of output channels oc0 + l and oc0 + 8 + l only, and subgroupBroadcast hands
// every lane all 16 channels' weights at register cost: per tap, 4 input and 2 weight
// loads feed 64 FMAs. A workgroup covers 64 such tiles of the same 16 channels.

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

override ACT: u32 = 0u; // 0 none, 1 ReLU, 2 SiLU
// Stride 1: stepping ky moves the lane's 4 input rows down by one, so each step loads
// one new row instead of four. An override, as a CPU driver runs both sides of a branch.
override STRIDE1: bool = false;

fn load_w(i: u32) -> f32 {
    return widen(wt[word_of(i)], i);
}

fn load_b(i: u32) -> f32 {
    return widen(bias[word_of(i)], i);
}

fn activation(v: vec4<f32>) -> vec4<f32> {
    switch ACT {
        case 1u: { return max(v, vec4<f32>(0.0)); }
        case 2u: { return v / (vec4<f32>(1.0) + exp(-v)); }
        default: { return v; }
    }
}

// Input value at (row iy, column ix) of a plane, or 0 in the padding; the index is
// clamped so the read stays in bounds either way.
fn tap(plane: u32, iy: i32, ix: i32) -> f32 {
    let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let yy = u32(clamp(iy, 0, i32(p.h) - 1));
    let xx = u32(clamp(ix, 0, i32(p.w) - 1));
    return select(0.0, x[plane + yy * p.w + xx], inside);
}

// Lane j's `v` to every lane, channels j = 0..3 in a, 4..7 in b.
struct Eight {
    a: vec4<f32>,
    b: vec4<f32>,
}

fn bcast(v: f32) -> Eight {
    return Eight(
        vec4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)),
        vec4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u)),
    );
}

// The lane's accumulators: channel oc0 + j in a{j}, its 4 rows as a vec4. Fields, not
// an array: a dynamically indexed array would live in memory, not registers.
struct Tile {
    a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
    a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>,
    a8: vec4<f32>, a9: vec4<f32>, a10: vec4<f32>, a11: vec4<f32>,
    a12: vec4<f32>, a13: vec4<f32>, a14: vec4<f32>, a15: vec4<f32>,
}

// One tap: xv holds the input under the lane's 4 rows; w_lo / w_hi the lane's weights
// of channels oc0 + lane and oc0 + 8 + lane.
fn tap_fma(t: ptr<function, Tile>, xv: vec4<f32>, w_lo: f32, w_hi: f32) {
    let lo = bcast(w_lo);
    let hi = bcast(w_hi);
    (*t).a0 = fma(xv, vec4<f32>(lo.a[0]), (*t).a0);
    (*t).a1 = fma(xv, vec4<f32>(lo.a[1]), (*t).a1);
    (*t).a2 = fma(xv, vec4<f32>(lo.a[2]), (*t).a2);
    (*t).a3 = fma(xv, vec4<f32>(lo.a[3]), (*t).a3);
    (*t).a4 = fma(xv, vec4<f32>(lo.b[0]), (*t).a4);
    (*t).a5 = fma(xv, vec4<f32>(lo.b[1]), (*t).a5);
    (*t).a6 = fma(xv, vec4<f32>(lo.b[2]), (*t).a6);
    (*t).a7 = fma(xv, vec4<f32>(lo.b[3]), (*t).a7);
    (*t).a8 = fma(xv, vec4<f32>(hi.a[0]), (*t).a8);
    (*t).a9 = fma(xv, vec4<f32>(hi.a[1]), (*t).a9);
    (*t).a10 = fma(xv, vec4<f32>(hi.a[2]), (*t).a10);
    (*t).a11 = fma(xv, vec4<f32>(hi.a[3]), (*t).a11);
    (*t).a12 = fma(xv, vec4<f32>(hi.b[0]), (*t).a12);
    (*t).a13 = fma(xv, vec4<f32>(hi.b[1]), (*t).a13);
    (*t).a14 = fma(xv, vec4<f32>(hi.b[2]), (*t).a14);
    (*t).a15 = fma(xv, vec4<f32>(hi.b[3]), (*t).a15);
}

fn store(oc: u32, oy0: u32, ox: u32, acc: vec4<f32>) {
    if oc >= p.cout {
        return;
    }
    for (var r = 0u; r < 4u; r++) {
        if oy0 + r < p.oh {
            let idx = (oc * p.oh + oy0 + r) * p.ow + ox;
            let base = select(vec4<f32>(load_b(p.oc_base + oc)), vec4<f32>(y[idx]), p.accumulate != 0u);
            var out = acc + base;
            if p.activate != 0u {
                out = activation(out);
            }
            y[idx] = out[r];
        }
    }
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let tiles = ((p.oh + 3u) / 4u) * p.ow;
    let tile_groups = (tiles + 63u) / 64u;
    let flat = flat_workgroup(wg, num);
    // Whole workgroups past the end leave together: the subgroups stay uniform.
    let oc0 = (flat / tile_groups) * 16u;
    if oc0 >= p.cout {
        return;
    }
    // Tiles past the end compute on clamped indices and store nothing.
    let tile = (flat % tile_groups) * 64u + li;
    let ox = tile % p.ow;
    let oy0 = min(tile / p.ow, (p.oh - 1u) / 4u) * 4u;
    let taps = p.kh * p.kw;
    let w_row = p.w_cin * taps;
    let last = p.cout - 1u;
    let w_lo = (p.oc_base + min(oc0 + lane, last)) * w_row + p.ic_base * taps;
    let w_hi = (p.oc_base + min(oc0 + 8u + lane, last)) * w_row + p.ic_base * taps;
    var t: Tile;
    let s = i32(p.stride);
    let iy0 = i32(oy0) * s - i32(p.pad_t);
    let ix0 = i32(ox) * s - i32(p.pad_l);
    for (var ic = 0u; ic < p.cin; ic++) {
        let plane = ic * p.h * p.w;
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = ix0 + i32(kx);
            // Rows iy0 - 1 .. iy0 + 2: the first step shifts in row iy0 + 3.
            var xv = vec4<f32>(0.0, tap(plane, iy0, ix), tap(plane, iy0 + 1, ix), tap(plane, iy0 + 2, ix));
            for (var ky = 0u; ky < p.kh; ky++) {
                let iy = iy0 + i32(ky);
                if STRIDE1 {
                    xv = vec4<f32>(xv.yzw, tap(plane, iy + 3, ix));
                } else {
                    xv = vec4<f32>(tap(plane, iy, ix), tap(plane, iy + s, ix), tap(plane, iy + 2 * s, ix), tap(plane, iy + 3 * s, ix));
                }
                let k = ic * taps + ky * p.kw + kx;
                tap_fma(&t, xv, load_w(w_lo + k), load_w(w_hi + k));
            }
        }
    }
    if tile < tiles {
        store(oc0 + 0u, oy0, ox, t.a0);
        store(oc0 + 1u, oy0, ox, t.a1);
        store(oc0 + 2u, oy0, ox, t.a2);
        store(oc0 + 3u, oy0, ox, t.a3);
        store(oc0 + 4u, oy0, ox, t.a4);
        store(oc0 + 5u, oy0, ox, t.a5);
        store(oc0 + 6u, oy0, ox, t.a6);
        store(oc0 + 7u, oy0, ox, t.a7);
        store(oc0 + 8u, oy0, ox, t.a8);
        store(oc0 + 9u, oy0, ox, t.a9);
        store(oc0 + 10u, oy0, ox, t.a10);
        store(oc0 + 11u, oy0, ox, t.a11);
        store(oc0 + 12u, oy0, ox, t.a12);
        store(oc0 + 13u, oy0, ox, t.a13);
        store(oc0 + 14u, oy0, ox, t.a14);
        store(oc0 + 15u, oy0, ox, t.a15);
    }
}
