// The `conv2d.wgsl` convolution on adapters whose subgroups are exactly 8 lanes
// (lavapipe). There every storage load is a loop over the 8 lanes, so loads, not FMAs,
// bound the portable kernel. Here, as in that kernel, a lane computes 4 output rows at
// one column, neighbouring lanes taking neighbouring columns; but lane l loads the
// weight of output channels oc0 + l and oc0 + 8 + l only, and subgroupBroadcast hands
// every lane all 16 channels' weights at register cost: per tap, 4 input and 2 weight
// loads feed 64 FMAs. A workgroup covers LANES such tiles of the same 16 channels.
// The parameters, bindings, ACT, ACCUMULATE and the weight loads: conv2d_interface.wgsl.

// Tiles per workgroup: 64, or one subgroup's 8 where there are few tiles (the UNet's
// deep levels: 8×8 pixels are 4 tiles of `main3`), so that lanes do not idle.
override LANES: u32 = 64u;
// Stride 1: stepping ky moves the lane's 4 input rows down by one, so each step loads
// one new row instead of four. An override, as a CPU driver runs both sides of a branch.
override STRIDE1: bool = false;

// What output y[idx] starts from: its channel's `bias`, or past the first input window
// what the earlier windows left.
fn start(idx: u32, bias: f32) -> f32 {
    if ACCUMULATE {
        return y[idx];
    }
    return bias;
}

// The biases of channels oc0..oc0 + 7 (lo: 0..3, hi: 4..7) for the stores: each lane
// loads one and broadcasts it, where a load per store would cost a per-lane loop each.
fn biases8(oc0: u32, lane: u32) -> Cols {
    return bcast(load_b(p.oc_base + min(oc0 + lane, p.cout - 1u)));
}

// Input value at (row iy, column ix) of a plane, or 0 in the padding; the index is
// clamped so the read stays in bounds either way.
fn tap(plane: u32, iy: i32, ix: i32) -> f32 {
    let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let yy = u32(clamp(iy, 0, i32(p.h) - 1));
    let xx = u32(clamp(ix, 0, i32(p.w) - 1));
    return select(0.0, x[plane + yy * p.w + xx], inside);
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
    (*t).a0 = fma(xv, vec4<f32>(lo.lo[0]), (*t).a0);
    (*t).a1 = fma(xv, vec4<f32>(lo.lo[1]), (*t).a1);
    (*t).a2 = fma(xv, vec4<f32>(lo.lo[2]), (*t).a2);
    (*t).a3 = fma(xv, vec4<f32>(lo.lo[3]), (*t).a3);
    (*t).a4 = fma(xv, vec4<f32>(lo.hi[0]), (*t).a4);
    (*t).a5 = fma(xv, vec4<f32>(lo.hi[1]), (*t).a5);
    (*t).a6 = fma(xv, vec4<f32>(lo.hi[2]), (*t).a6);
    (*t).a7 = fma(xv, vec4<f32>(lo.hi[3]), (*t).a7);
    (*t).a8 = fma(xv, vec4<f32>(hi.lo[0]), (*t).a8);
    (*t).a9 = fma(xv, vec4<f32>(hi.lo[1]), (*t).a9);
    (*t).a10 = fma(xv, vec4<f32>(hi.lo[2]), (*t).a10);
    (*t).a11 = fma(xv, vec4<f32>(hi.lo[3]), (*t).a11);
    (*t).a12 = fma(xv, vec4<f32>(hi.hi[0]), (*t).a12);
    (*t).a13 = fma(xv, vec4<f32>(hi.hi[1]), (*t).a13);
    (*t).a14 = fma(xv, vec4<f32>(hi.hi[2]), (*t).a14);
    (*t).a15 = fma(xv, vec4<f32>(hi.hi[3]), (*t).a15);
}

fn store(oc: u32, oy0: u32, ox: u32, acc: vec4<f32>, bias: f32) {
    if oc >= p.cout {
        return;
    }
    for (var r = 0u; r < 4u; r++) {
        if oy0 + r < p.oh {
            let idx = (oc * p.oh + oy0 + r) * p.ow + ox;
            let base = vec4<f32>(start(idx, bias));
            var out = acc + base;
            if p.activate != 0u {
                out = activation(out);
            }
            y[idx] = out[r];
        }
    }
}

// A workgroup's 16 output channels from oc0 and the lane's tile, out of `tiles` tiles of
// 16 channels each. Channel groups vary fastest, so that the workgroups running at one
// time share one stripe of input in the cache instead of each streaming the whole
// input. `valid` is false for workgroups past the end: whole workgroups leave together,
// so the subgroups stay uniform. Tiles past the end of a valid workgroup compute on
// clamped indices and store nothing.
struct Place {
    valid: bool,
    oc0: u32,
    tile: u32,
}

fn place(wg: vec3<u32>, num: vec3<u32>, li: u32, tiles: u32, oc_tile: u32) -> Place {
    let oc_groups = (p.cout + oc_tile - 1u) / oc_tile;
    let flat = flat_workgroup(wg, num);
    let tile_groups = (tiles + LANES - 1u) / LANES;
    return Place(flat / oc_groups < tile_groups, (flat % oc_groups) * oc_tile, (flat / oc_groups) * LANES + li);
}

@compute @workgroup_size(LANES)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    load_params(num);
    let tiles = ((p.oh + 3u) / 4u) * p.ow;
    let at = place(wg, num, li, tiles, 16u);
    if !at.valid {
        return;
    }
    let oc0 = at.oc0;
    let tile = at.tile;
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
    let b0 = biases8(oc0, lane);
    let b1 = biases8(oc0 + 8u, lane);
    if tile < tiles {
        store(oc0 + 0u, oy0, ox, t.a0, b0.lo[0]);
        store(oc0 + 1u, oy0, ox, t.a1, b0.lo[1]);
        store(oc0 + 2u, oy0, ox, t.a2, b0.lo[2]);
        store(oc0 + 3u, oy0, ox, t.a3, b0.lo[3]);
        store(oc0 + 4u, oy0, ox, t.a4, b0.hi[0]);
        store(oc0 + 5u, oy0, ox, t.a5, b0.hi[1]);
        store(oc0 + 6u, oy0, ox, t.a6, b0.hi[2]);
        store(oc0 + 7u, oy0, ox, t.a7, b0.hi[3]);
        store(oc0 + 8u, oy0, ox, t.a8, b1.lo[0]);
        store(oc0 + 9u, oy0, ox, t.a9, b1.lo[1]);
        store(oc0 + 10u, oy0, ox, t.a10, b1.lo[2]);
        store(oc0 + 11u, oy0, ox, t.a11, b1.lo[3]);
        store(oc0 + 12u, oy0, ox, t.a12, b1.hi[0]);
        store(oc0 + 13u, oy0, ox, t.a13, b1.hi[1]);
        store(oc0 + 14u, oy0, ox, t.a14, b1.hi[2]);
        store(oc0 + 15u, oy0, ox, t.a15, b1.hi[3]);
    }
}

// ---- `main3`: 3×3, stride 1, one column of padding each side, width and input
// channels multiples of 4 (of 8 with f16 weights, whose 8 channels' 72 taps are 9 vec4
// words). A lane computes 4 adjacent columns (one vec4 load of input each) × 4 rows ×
// 32 channels; lane l loads vec4s of consecutive (ic, tap) weights of channels
// oc0 + 8k + l, k = 0..3 (in the [cout, cin, 3, 3] layout, 4 input channels' 36 taps are
// 9 aligned vec4s) and subgroupBroadcast hands them to all lanes. Per 4 input channels:
// 36 weight and 4 · 6 input loads (the columns beside a lane's come from its
// neighbours, see `left_column`) feed 4 · 9 · 512 FMAs per lane (32 channels rather
// than 16 doubled the FMAs per input load: 45 → 50 % of the FMA probe). The
// accumulators do not fit in registers, so each takes all 9 taps of an input channel in
// one go (read and written once per channel, not once per tap).
// Input, weights and output as vec2<u64>, the 16 bytes of a vec4<f32> in half the
// per-lane trips (see subgroup.wgsl).
@group(0) @binding(1) var<storage, read> x4: array<vec2<u64>>;
@group(0) @binding(2) var<storage, read> wt4: array<vec2<u64>>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec2<u64>>;

// Words 0 and 1 (low) or 2 and 3 (high) of a vec2<u64> component, as f32.
fn lo32(v: u64) -> f32 {
    return bitcast<f32>(u32(v & 0xfffffffflu));
}

fn hi32(v: u64) -> f32 {
    return bitcast<f32>(u32(v >> 32u));
}

// An input row under a lane's 4 columns: the column left of them, theirs, the one right.
struct Row {
    l: f32,
    c: vec4<f32>,
    r: f32,
}

// Whether lane - 1 (lane + 1) of the subgroup holds the tile left (right) of this lane's,
// set by `conv3`. Neighbouring lanes take neighbouring tiles, so the input column just
// left of a lane's own is then the last of lane - 1's and the one just right the first
// of lane + 1's: shuffled across, they need a load in the subgroup's first and last
// lanes only, and a load is a per-lane loop that skips inactive lanes (on lavapipe about
// 3 % of `main3`'s and `main3s2`'s time). Where the tiles wrap to another row the column
// is padding, and `row3` / `taps_s2` put 0 there.
var<private> left_is_neighbour: bool;
var<private> right_is_neighbour: bool;

// The input column left of a lane's: lane - 1's `last_of_left`, or the high float of
// input word `word`.
fn left_column(last_of_left: f32, word: u32) -> f32 {
    let shuffled = subgroupShuffleUp(last_of_left, 1u);
    if left_is_neighbour {
        return shuffled;
    }
    return hi32(x4[word].y);
}

// The input column right of a lane's: lane + 1's `first_of_right`, or the low float of
// input word `word`.
fn right_column(first_of_right: f32, word: u32) -> f32 {
    let shuffled = subgroupShuffleDown(first_of_right, 1u);
    if right_is_neighbour {
        return shuffled;
    }
    return lo32(x4[word].x);
}

fn row3(plane4: u32, iy: i32, cg: u32, w4: u32) -> Row {
    let inside = iy >= 0 && iy < i32(p.h);
    let base = plane4 + u32(clamp(iy, 0, i32(p.h) - 1)) * w4;
    let c = f32x4(x4[base + cg]);
    let l = left_column(c.w, base + max(cg, 1u) - 1u);
    let r = right_column(c.x, base + min(cg + 1u, w4 - 1u));
    return Row(select(0.0, l, inside && cg > 0u), select(vec4<f32>(0.0), c, inside), select(0.0, r, inside && cg + 1u < w4));
}

fn sh0(q: Row) -> vec4<f32> {
    return vec4<f32>(q.l, q.c.xyz);
}

fn sh2(q: Row) -> vec4<f32> {
    return vec4<f32>(q.c.yzw, q.r);
}

// Accumulators: row r, channel oc0 + j in a{r}{j}, 4 columns as a vec4.
struct Tile3 {
    a00: vec4<f32>, a01: vec4<f32>, a02: vec4<f32>, a03: vec4<f32>, a04: vec4<f32>, a05: vec4<f32>, a06: vec4<f32>, a07: vec4<f32>,
    a10: vec4<f32>, a11: vec4<f32>, a12: vec4<f32>, a13: vec4<f32>, a14: vec4<f32>, a15: vec4<f32>, a16: vec4<f32>, a17: vec4<f32>,
    a20: vec4<f32>, a21: vec4<f32>, a22: vec4<f32>, a23: vec4<f32>, a24: vec4<f32>, a25: vec4<f32>, a26: vec4<f32>, a27: vec4<f32>,
    a30: vec4<f32>, a31: vec4<f32>, a32: vec4<f32>, a33: vec4<f32>, a34: vec4<f32>, a35: vec4<f32>, a36: vec4<f32>, a37: vec4<f32>,
}

// The input under a lane's tile for one input channel: x{i}{k}, row iy0 + i shifted by
// column k - 1.
struct X6 {
    x00: vec4<f32>, x01: vec4<f32>, x02: vec4<f32>,
    x10: vec4<f32>, x11: vec4<f32>, x12: vec4<f32>,
    x20: vec4<f32>, x21: vec4<f32>, x22: vec4<f32>,
    x30: vec4<f32>, x31: vec4<f32>, x32: vec4<f32>,
    x40: vec4<f32>, x41: vec4<f32>, x42: vec4<f32>,
    x50: vec4<f32>, x51: vec4<f32>, x52: vec4<f32>,
}

fn rows6(plane4: u32, iy0: i32, cg: u32, w4: u32) -> X6 {
    let r0 = row3(plane4, iy0 + 0, cg, w4);
    let r1 = row3(plane4, iy0 + 1, cg, w4);
    let r2 = row3(plane4, iy0 + 2, cg, w4);
    let r3 = row3(plane4, iy0 + 3, cg, w4);
    let r4 = row3(plane4, iy0 + 4, cg, w4);
    let r5 = row3(plane4, iy0 + 5, cg, w4);
    return X6(sh0(r0), r0.c, sh2(r0), sh0(r1), r1.c, sh2(r1), sh0(r2), r2.c, sh2(r2), sh0(r3), r3.c, sh2(r3), sh0(r4), r4.c, sh2(r4), sh0(r5), r5.c, sh2(r5));
}

// One input channel's 9 taps (weights row-major in wa, wb, wc) into 8 channels'
// accumulators, accumulator by accumulator, so that each is read and written once.
fn accum3(t: ptr<function, Tile3>, xs: X6, wa: vec4<f32>, wb: vec4<f32>, wc: f32) {
    let g0 = bcast(wa.x);
    let g1 = bcast(wa.y);
    let g2 = bcast(wa.z);
    let g3 = bcast(wa.w);
    let g4 = bcast(wb.x);
    let g5 = bcast(wb.y);
    let g6 = bcast(wb.z);
    let g7 = bcast(wb.w);
    let g8 = bcast(wc);
    (*t).a00 = fma(xs.x22, vec4<f32>(g8.lo[0]), fma(xs.x21, vec4<f32>(g7.lo[0]), fma(xs.x20, vec4<f32>(g6.lo[0]), fma(xs.x12, vec4<f32>(g5.lo[0]), fma(xs.x11, vec4<f32>(g4.lo[0]), fma(xs.x10, vec4<f32>(g3.lo[0]), fma(xs.x02, vec4<f32>(g2.lo[0]), fma(xs.x01, vec4<f32>(g1.lo[0]), fma(xs.x00, vec4<f32>(g0.lo[0]), (*t).a00)))))))));
    (*t).a01 = fma(xs.x22, vec4<f32>(g8.lo[1]), fma(xs.x21, vec4<f32>(g7.lo[1]), fma(xs.x20, vec4<f32>(g6.lo[1]), fma(xs.x12, vec4<f32>(g5.lo[1]), fma(xs.x11, vec4<f32>(g4.lo[1]), fma(xs.x10, vec4<f32>(g3.lo[1]), fma(xs.x02, vec4<f32>(g2.lo[1]), fma(xs.x01, vec4<f32>(g1.lo[1]), fma(xs.x00, vec4<f32>(g0.lo[1]), (*t).a01)))))))));
    (*t).a02 = fma(xs.x22, vec4<f32>(g8.lo[2]), fma(xs.x21, vec4<f32>(g7.lo[2]), fma(xs.x20, vec4<f32>(g6.lo[2]), fma(xs.x12, vec4<f32>(g5.lo[2]), fma(xs.x11, vec4<f32>(g4.lo[2]), fma(xs.x10, vec4<f32>(g3.lo[2]), fma(xs.x02, vec4<f32>(g2.lo[2]), fma(xs.x01, vec4<f32>(g1.lo[2]), fma(xs.x00, vec4<f32>(g0.lo[2]), (*t).a02)))))))));
    (*t).a03 = fma(xs.x22, vec4<f32>(g8.lo[3]), fma(xs.x21, vec4<f32>(g7.lo[3]), fma(xs.x20, vec4<f32>(g6.lo[3]), fma(xs.x12, vec4<f32>(g5.lo[3]), fma(xs.x11, vec4<f32>(g4.lo[3]), fma(xs.x10, vec4<f32>(g3.lo[3]), fma(xs.x02, vec4<f32>(g2.lo[3]), fma(xs.x01, vec4<f32>(g1.lo[3]), fma(xs.x00, vec4<f32>(g0.lo[3]), (*t).a03)))))))));
    (*t).a04 = fma(xs.x22, vec4<f32>(g8.hi[0]), fma(xs.x21, vec4<f32>(g7.hi[0]), fma(xs.x20, vec4<f32>(g6.hi[0]), fma(xs.x12, vec4<f32>(g5.hi[0]), fma(xs.x11, vec4<f32>(g4.hi[0]), fma(xs.x10, vec4<f32>(g3.hi[0]), fma(xs.x02, vec4<f32>(g2.hi[0]), fma(xs.x01, vec4<f32>(g1.hi[0]), fma(xs.x00, vec4<f32>(g0.hi[0]), (*t).a04)))))))));
    (*t).a05 = fma(xs.x22, vec4<f32>(g8.hi[1]), fma(xs.x21, vec4<f32>(g7.hi[1]), fma(xs.x20, vec4<f32>(g6.hi[1]), fma(xs.x12, vec4<f32>(g5.hi[1]), fma(xs.x11, vec4<f32>(g4.hi[1]), fma(xs.x10, vec4<f32>(g3.hi[1]), fma(xs.x02, vec4<f32>(g2.hi[1]), fma(xs.x01, vec4<f32>(g1.hi[1]), fma(xs.x00, vec4<f32>(g0.hi[1]), (*t).a05)))))))));
    (*t).a06 = fma(xs.x22, vec4<f32>(g8.hi[2]), fma(xs.x21, vec4<f32>(g7.hi[2]), fma(xs.x20, vec4<f32>(g6.hi[2]), fma(xs.x12, vec4<f32>(g5.hi[2]), fma(xs.x11, vec4<f32>(g4.hi[2]), fma(xs.x10, vec4<f32>(g3.hi[2]), fma(xs.x02, vec4<f32>(g2.hi[2]), fma(xs.x01, vec4<f32>(g1.hi[2]), fma(xs.x00, vec4<f32>(g0.hi[2]), (*t).a06)))))))));
    (*t).a07 = fma(xs.x22, vec4<f32>(g8.hi[3]), fma(xs.x21, vec4<f32>(g7.hi[3]), fma(xs.x20, vec4<f32>(g6.hi[3]), fma(xs.x12, vec4<f32>(g5.hi[3]), fma(xs.x11, vec4<f32>(g4.hi[3]), fma(xs.x10, vec4<f32>(g3.hi[3]), fma(xs.x02, vec4<f32>(g2.hi[3]), fma(xs.x01, vec4<f32>(g1.hi[3]), fma(xs.x00, vec4<f32>(g0.hi[3]), (*t).a07)))))))));
    (*t).a10 = fma(xs.x32, vec4<f32>(g8.lo[0]), fma(xs.x31, vec4<f32>(g7.lo[0]), fma(xs.x30, vec4<f32>(g6.lo[0]), fma(xs.x22, vec4<f32>(g5.lo[0]), fma(xs.x21, vec4<f32>(g4.lo[0]), fma(xs.x20, vec4<f32>(g3.lo[0]), fma(xs.x12, vec4<f32>(g2.lo[0]), fma(xs.x11, vec4<f32>(g1.lo[0]), fma(xs.x10, vec4<f32>(g0.lo[0]), (*t).a10)))))))));
    (*t).a11 = fma(xs.x32, vec4<f32>(g8.lo[1]), fma(xs.x31, vec4<f32>(g7.lo[1]), fma(xs.x30, vec4<f32>(g6.lo[1]), fma(xs.x22, vec4<f32>(g5.lo[1]), fma(xs.x21, vec4<f32>(g4.lo[1]), fma(xs.x20, vec4<f32>(g3.lo[1]), fma(xs.x12, vec4<f32>(g2.lo[1]), fma(xs.x11, vec4<f32>(g1.lo[1]), fma(xs.x10, vec4<f32>(g0.lo[1]), (*t).a11)))))))));
    (*t).a12 = fma(xs.x32, vec4<f32>(g8.lo[2]), fma(xs.x31, vec4<f32>(g7.lo[2]), fma(xs.x30, vec4<f32>(g6.lo[2]), fma(xs.x22, vec4<f32>(g5.lo[2]), fma(xs.x21, vec4<f32>(g4.lo[2]), fma(xs.x20, vec4<f32>(g3.lo[2]), fma(xs.x12, vec4<f32>(g2.lo[2]), fma(xs.x11, vec4<f32>(g1.lo[2]), fma(xs.x10, vec4<f32>(g0.lo[2]), (*t).a12)))))))));
    (*t).a13 = fma(xs.x32, vec4<f32>(g8.lo[3]), fma(xs.x31, vec4<f32>(g7.lo[3]), fma(xs.x30, vec4<f32>(g6.lo[3]), fma(xs.x22, vec4<f32>(g5.lo[3]), fma(xs.x21, vec4<f32>(g4.lo[3]), fma(xs.x20, vec4<f32>(g3.lo[3]), fma(xs.x12, vec4<f32>(g2.lo[3]), fma(xs.x11, vec4<f32>(g1.lo[3]), fma(xs.x10, vec4<f32>(g0.lo[3]), (*t).a13)))))))));
    (*t).a14 = fma(xs.x32, vec4<f32>(g8.hi[0]), fma(xs.x31, vec4<f32>(g7.hi[0]), fma(xs.x30, vec4<f32>(g6.hi[0]), fma(xs.x22, vec4<f32>(g5.hi[0]), fma(xs.x21, vec4<f32>(g4.hi[0]), fma(xs.x20, vec4<f32>(g3.hi[0]), fma(xs.x12, vec4<f32>(g2.hi[0]), fma(xs.x11, vec4<f32>(g1.hi[0]), fma(xs.x10, vec4<f32>(g0.hi[0]), (*t).a14)))))))));
    (*t).a15 = fma(xs.x32, vec4<f32>(g8.hi[1]), fma(xs.x31, vec4<f32>(g7.hi[1]), fma(xs.x30, vec4<f32>(g6.hi[1]), fma(xs.x22, vec4<f32>(g5.hi[1]), fma(xs.x21, vec4<f32>(g4.hi[1]), fma(xs.x20, vec4<f32>(g3.hi[1]), fma(xs.x12, vec4<f32>(g2.hi[1]), fma(xs.x11, vec4<f32>(g1.hi[1]), fma(xs.x10, vec4<f32>(g0.hi[1]), (*t).a15)))))))));
    (*t).a16 = fma(xs.x32, vec4<f32>(g8.hi[2]), fma(xs.x31, vec4<f32>(g7.hi[2]), fma(xs.x30, vec4<f32>(g6.hi[2]), fma(xs.x22, vec4<f32>(g5.hi[2]), fma(xs.x21, vec4<f32>(g4.hi[2]), fma(xs.x20, vec4<f32>(g3.hi[2]), fma(xs.x12, vec4<f32>(g2.hi[2]), fma(xs.x11, vec4<f32>(g1.hi[2]), fma(xs.x10, vec4<f32>(g0.hi[2]), (*t).a16)))))))));
    (*t).a17 = fma(xs.x32, vec4<f32>(g8.hi[3]), fma(xs.x31, vec4<f32>(g7.hi[3]), fma(xs.x30, vec4<f32>(g6.hi[3]), fma(xs.x22, vec4<f32>(g5.hi[3]), fma(xs.x21, vec4<f32>(g4.hi[3]), fma(xs.x20, vec4<f32>(g3.hi[3]), fma(xs.x12, vec4<f32>(g2.hi[3]), fma(xs.x11, vec4<f32>(g1.hi[3]), fma(xs.x10, vec4<f32>(g0.hi[3]), (*t).a17)))))))));
    (*t).a20 = fma(xs.x42, vec4<f32>(g8.lo[0]), fma(xs.x41, vec4<f32>(g7.lo[0]), fma(xs.x40, vec4<f32>(g6.lo[0]), fma(xs.x32, vec4<f32>(g5.lo[0]), fma(xs.x31, vec4<f32>(g4.lo[0]), fma(xs.x30, vec4<f32>(g3.lo[0]), fma(xs.x22, vec4<f32>(g2.lo[0]), fma(xs.x21, vec4<f32>(g1.lo[0]), fma(xs.x20, vec4<f32>(g0.lo[0]), (*t).a20)))))))));
    (*t).a21 = fma(xs.x42, vec4<f32>(g8.lo[1]), fma(xs.x41, vec4<f32>(g7.lo[1]), fma(xs.x40, vec4<f32>(g6.lo[1]), fma(xs.x32, vec4<f32>(g5.lo[1]), fma(xs.x31, vec4<f32>(g4.lo[1]), fma(xs.x30, vec4<f32>(g3.lo[1]), fma(xs.x22, vec4<f32>(g2.lo[1]), fma(xs.x21, vec4<f32>(g1.lo[1]), fma(xs.x20, vec4<f32>(g0.lo[1]), (*t).a21)))))))));
    (*t).a22 = fma(xs.x42, vec4<f32>(g8.lo[2]), fma(xs.x41, vec4<f32>(g7.lo[2]), fma(xs.x40, vec4<f32>(g6.lo[2]), fma(xs.x32, vec4<f32>(g5.lo[2]), fma(xs.x31, vec4<f32>(g4.lo[2]), fma(xs.x30, vec4<f32>(g3.lo[2]), fma(xs.x22, vec4<f32>(g2.lo[2]), fma(xs.x21, vec4<f32>(g1.lo[2]), fma(xs.x20, vec4<f32>(g0.lo[2]), (*t).a22)))))))));
    (*t).a23 = fma(xs.x42, vec4<f32>(g8.lo[3]), fma(xs.x41, vec4<f32>(g7.lo[3]), fma(xs.x40, vec4<f32>(g6.lo[3]), fma(xs.x32, vec4<f32>(g5.lo[3]), fma(xs.x31, vec4<f32>(g4.lo[3]), fma(xs.x30, vec4<f32>(g3.lo[3]), fma(xs.x22, vec4<f32>(g2.lo[3]), fma(xs.x21, vec4<f32>(g1.lo[3]), fma(xs.x20, vec4<f32>(g0.lo[3]), (*t).a23)))))))));
    (*t).a24 = fma(xs.x42, vec4<f32>(g8.hi[0]), fma(xs.x41, vec4<f32>(g7.hi[0]), fma(xs.x40, vec4<f32>(g6.hi[0]), fma(xs.x32, vec4<f32>(g5.hi[0]), fma(xs.x31, vec4<f32>(g4.hi[0]), fma(xs.x30, vec4<f32>(g3.hi[0]), fma(xs.x22, vec4<f32>(g2.hi[0]), fma(xs.x21, vec4<f32>(g1.hi[0]), fma(xs.x20, vec4<f32>(g0.hi[0]), (*t).a24)))))))));
    (*t).a25 = fma(xs.x42, vec4<f32>(g8.hi[1]), fma(xs.x41, vec4<f32>(g7.hi[1]), fma(xs.x40, vec4<f32>(g6.hi[1]), fma(xs.x32, vec4<f32>(g5.hi[1]), fma(xs.x31, vec4<f32>(g4.hi[1]), fma(xs.x30, vec4<f32>(g3.hi[1]), fma(xs.x22, vec4<f32>(g2.hi[1]), fma(xs.x21, vec4<f32>(g1.hi[1]), fma(xs.x20, vec4<f32>(g0.hi[1]), (*t).a25)))))))));
    (*t).a26 = fma(xs.x42, vec4<f32>(g8.hi[2]), fma(xs.x41, vec4<f32>(g7.hi[2]), fma(xs.x40, vec4<f32>(g6.hi[2]), fma(xs.x32, vec4<f32>(g5.hi[2]), fma(xs.x31, vec4<f32>(g4.hi[2]), fma(xs.x30, vec4<f32>(g3.hi[2]), fma(xs.x22, vec4<f32>(g2.hi[2]), fma(xs.x21, vec4<f32>(g1.hi[2]), fma(xs.x20, vec4<f32>(g0.hi[2]), (*t).a26)))))))));
    (*t).a27 = fma(xs.x42, vec4<f32>(g8.hi[3]), fma(xs.x41, vec4<f32>(g7.hi[3]), fma(xs.x40, vec4<f32>(g6.hi[3]), fma(xs.x32, vec4<f32>(g5.hi[3]), fma(xs.x31, vec4<f32>(g4.hi[3]), fma(xs.x30, vec4<f32>(g3.hi[3]), fma(xs.x22, vec4<f32>(g2.hi[3]), fma(xs.x21, vec4<f32>(g1.hi[3]), fma(xs.x20, vec4<f32>(g0.hi[3]), (*t).a27)))))))));
    (*t).a30 = fma(xs.x52, vec4<f32>(g8.lo[0]), fma(xs.x51, vec4<f32>(g7.lo[0]), fma(xs.x50, vec4<f32>(g6.lo[0]), fma(xs.x42, vec4<f32>(g5.lo[0]), fma(xs.x41, vec4<f32>(g4.lo[0]), fma(xs.x40, vec4<f32>(g3.lo[0]), fma(xs.x32, vec4<f32>(g2.lo[0]), fma(xs.x31, vec4<f32>(g1.lo[0]), fma(xs.x30, vec4<f32>(g0.lo[0]), (*t).a30)))))))));
    (*t).a31 = fma(xs.x52, vec4<f32>(g8.lo[1]), fma(xs.x51, vec4<f32>(g7.lo[1]), fma(xs.x50, vec4<f32>(g6.lo[1]), fma(xs.x42, vec4<f32>(g5.lo[1]), fma(xs.x41, vec4<f32>(g4.lo[1]), fma(xs.x40, vec4<f32>(g3.lo[1]), fma(xs.x32, vec4<f32>(g2.lo[1]), fma(xs.x31, vec4<f32>(g1.lo[1]), fma(xs.x30, vec4<f32>(g0.lo[1]), (*t).a31)))))))));
    (*t).a32 = fma(xs.x52, vec4<f32>(g8.lo[2]), fma(xs.x51, vec4<f32>(g7.lo[2]), fma(xs.x50, vec4<f32>(g6.lo[2]), fma(xs.x42, vec4<f32>(g5.lo[2]), fma(xs.x41, vec4<f32>(g4.lo[2]), fma(xs.x40, vec4<f32>(g3.lo[2]), fma(xs.x32, vec4<f32>(g2.lo[2]), fma(xs.x31, vec4<f32>(g1.lo[2]), fma(xs.x30, vec4<f32>(g0.lo[2]), (*t).a32)))))))));
    (*t).a33 = fma(xs.x52, vec4<f32>(g8.lo[3]), fma(xs.x51, vec4<f32>(g7.lo[3]), fma(xs.x50, vec4<f32>(g6.lo[3]), fma(xs.x42, vec4<f32>(g5.lo[3]), fma(xs.x41, vec4<f32>(g4.lo[3]), fma(xs.x40, vec4<f32>(g3.lo[3]), fma(xs.x32, vec4<f32>(g2.lo[3]), fma(xs.x31, vec4<f32>(g1.lo[3]), fma(xs.x30, vec4<f32>(g0.lo[3]), (*t).a33)))))))));
    (*t).a34 = fma(xs.x52, vec4<f32>(g8.hi[0]), fma(xs.x51, vec4<f32>(g7.hi[0]), fma(xs.x50, vec4<f32>(g6.hi[0]), fma(xs.x42, vec4<f32>(g5.hi[0]), fma(xs.x41, vec4<f32>(g4.hi[0]), fma(xs.x40, vec4<f32>(g3.hi[0]), fma(xs.x32, vec4<f32>(g2.hi[0]), fma(xs.x31, vec4<f32>(g1.hi[0]), fma(xs.x30, vec4<f32>(g0.hi[0]), (*t).a34)))))))));
    (*t).a35 = fma(xs.x52, vec4<f32>(g8.hi[1]), fma(xs.x51, vec4<f32>(g7.hi[1]), fma(xs.x50, vec4<f32>(g6.hi[1]), fma(xs.x42, vec4<f32>(g5.hi[1]), fma(xs.x41, vec4<f32>(g4.hi[1]), fma(xs.x40, vec4<f32>(g3.hi[1]), fma(xs.x32, vec4<f32>(g2.hi[1]), fma(xs.x31, vec4<f32>(g1.hi[1]), fma(xs.x30, vec4<f32>(g0.hi[1]), (*t).a35)))))))));
    (*t).a36 = fma(xs.x52, vec4<f32>(g8.hi[2]), fma(xs.x51, vec4<f32>(g7.hi[2]), fma(xs.x50, vec4<f32>(g6.hi[2]), fma(xs.x42, vec4<f32>(g5.hi[2]), fma(xs.x41, vec4<f32>(g4.hi[2]), fma(xs.x40, vec4<f32>(g3.hi[2]), fma(xs.x32, vec4<f32>(g2.hi[2]), fma(xs.x31, vec4<f32>(g1.hi[2]), fma(xs.x30, vec4<f32>(g0.hi[2]), (*t).a36)))))))));
    (*t).a37 = fma(xs.x52, vec4<f32>(g8.hi[3]), fma(xs.x51, vec4<f32>(g7.hi[3]), fma(xs.x50, vec4<f32>(g6.hi[3]), fma(xs.x42, vec4<f32>(g5.hi[3]), fma(xs.x41, vec4<f32>(g4.hi[3]), fma(xs.x40, vec4<f32>(g3.hi[3]), fma(xs.x32, vec4<f32>(g2.hi[3]), fma(xs.x31, vec4<f32>(g1.hi[3]), fma(xs.x30, vec4<f32>(g0.hi[3]), (*t).a37)))))))));
}

// 4 input channels' 36 weights of a channel, as in [cout, cin, 3, 3].
struct W9 {
    v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, v4: vec4<f32>,
    v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>, v8: vec4<f32>,
}

// f32 weights: 9 vec4 words from i on.
fn w9_f32(i: u32) -> W9 {
    return W9(f32x4(wt4[i]), f32x4(wt4[i + 1u]), f32x4(wt4[i + 2u]), f32x4(wt4[i + 3u]), f32x4(wt4[i + 4u]),
        f32x4(wt4[i + 5u]), f32x4(wt4[i + 6u]), f32x4(wt4[i + 7u]), f32x4(wt4[i + 8u]));
}

fn hv(a: u32, b: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(a), unpack2x16float(b));
}

// Packed f16 weights: 8 input channels' 72 in 9 vec4 words from i on, of which the
// first 4 channels' 36 (or, `second`, the last 4's, from the middle of word 4 on).
fn w9_f16(i: u32, second: bool) -> W9 {
    let at = i + select(0u, 4u, second);
    let u0 = u32x4(wt4[at]);
    let u1 = u32x4(wt4[at + 1u]);
    let u2 = u32x4(wt4[at + 2u]);
    let u3 = u32x4(wt4[at + 3u]);
    let u4 = u32x4(wt4[at + 4u]);
    if second {
        return W9(hv(u0.z, u0.w), hv(u1.x, u1.y), hv(u1.z, u1.w), hv(u2.x, u2.y), hv(u2.z, u2.w),
            hv(u3.x, u3.y), hv(u3.z, u3.w), hv(u4.x, u4.y), hv(u4.z, u4.w));
    }
    return W9(hv(u0.x, u0.y), hv(u0.z, u0.w), hv(u1.x, u1.y), hv(u1.z, u1.w), hv(u2.x, u2.y),
        hv(u2.z, u2.w), hv(u3.x, u3.y), hv(u3.z, u3.w), hv(u4.x, u4.y));
}

// The 36 weights of input channels 4q..4q + 3 for the output channel whose row starts at
// word `row` (in words of 4 f32 taps; packed f16 rows are half as long).
fn w9(row: u32, q: u32) -> W9 {
    if W_F16 {
        return w9_f16(row / 2u + q / 2u * 9u, (q & 1u) == 1u);
    }
    return w9_f32(row + q * 9u);
}

// One input channel (plane p0) of a lane's tile, at stride 1 or 2: its 9 taps' weights
// for channels oc0 + 8k.. in gk (row-major), into tk. (Passed as four arrays: one struct
// of them made the kernel 10–20 % slower.)
fn channel3(t0: ptr<function, Tile3>, t1: ptr<function, Tile3>, t2: ptr<function, Tile3>, t3: ptr<function, Tile3>, p0: u32, iy0: i32, cg: u32, w4: u32, g0: array<vec4<f32>, 3>, g1: array<vec4<f32>, 3>, g2: array<vec4<f32>, 3>, g3: array<vec4<f32>, 3>, stride2: bool) {
    if stride2 {
        let xs = rows9(p0, iy0, cg, w4);
        accum3s2(t0, xs, g0[0], g0[1], g0[2].x);
        accum3s2(t1, xs, g1[0], g1[1], g1[2].x);
        accum3s2(t2, xs, g2[0], g2[1], g2[2].x);
        accum3s2(t3, xs, g3[0], g3[1], g3[2].x);
    } else {
        let xs = rows6(p0, iy0, cg, w4);
        accum3(t0, xs, g0[0], g0[1], g0[2].x);
        accum3(t1, xs, g1[0], g1[1], g1[2].x);
        accum3(t2, xs, g2[0], g2[1], g2[2].x);
        accum3(t3, xs, g3[0], g3[1], g3[2].x);
    }
}

// Input channel c (0..3) of 4 whose 36 taps lie in the 9 vec4s of w: its 9 start where
// the last one's ended.
fn taps_of(w: W9, c: u32) -> array<vec4<f32>, 3> {
    switch c {
        case 0u: { return array(w.v0, w.v1, w.v2); }
        case 1u: { return array(vec4<f32>(w.v2.yzw, w.v3.x), vec4<f32>(w.v3.yzw, w.v4.x), vec4<f32>(w.v4.y)); }
        case 2u: { return array(vec4<f32>(w.v4.zw, w.v5.xy), vec4<f32>(w.v5.zw, w.v6.xy), vec4<f32>(w.v6.z)); }
        default: { return array(vec4<f32>(w.v6.w, w.v7.xyz), vec4<f32>(w.v7.w, w.v8.xyz), vec4<f32>(w.v8.w)); }
    }
}

// Four input channels from plane p0 on, into the accumulators of channels oc0 + 8k.. in
// tk, with their weights wk.
fn group3(t0: ptr<function, Tile3>, t1: ptr<function, Tile3>, t2: ptr<function, Tile3>, t3: ptr<function, Tile3>, p0: u32, plane: u32, iy0: i32, cg: u32, w4: u32, w0: W9, w1: W9, w2: W9, w3: W9, stride2: bool) {
    channel3(t0, t1, t2, t3, p0, iy0, cg, w4, taps_of(w0, 0u), taps_of(w1, 0u), taps_of(w2, 0u), taps_of(w3, 0u), stride2);
    channel3(t0, t1, t2, t3, p0 + plane, iy0, cg, w4, taps_of(w0, 1u), taps_of(w1, 1u), taps_of(w2, 1u), taps_of(w3, 1u), stride2);
    channel3(t0, t1, t2, t3, p0 + 2u * plane, iy0, cg, w4, taps_of(w0, 2u), taps_of(w1, 2u), taps_of(w2, 2u), taps_of(w3, 2u), stride2);
    channel3(t0, t1, t2, t3, p0 + 3u * plane, iy0, cg, w4, taps_of(w0, 3u), taps_of(w1, 3u), taps_of(w2, 3u), taps_of(w3, 3u), stride2);
}

// Output vec4 `idx`: acc plus its channel's `bias` (or, past the first input window,
// plus what the earlier windows left), activated after the last window.
fn write4(idx: u32, acc: vec4<f32>, bias: f32) {
    var out = acc;
    if ACCUMULATE {
        out += f32x4(y4[idx]);
    } else {
        out += vec4<f32>(bias);
    }
    if p.activate != 0u {
        out = activation(out);
    }
    y4[idx] = u64x2(out);
}

fn store3(oc: u32, oy: u32, cg: u32, w4: u32, acc: vec4<f32>, bias: f32) {
    if oc < p.cout && oy < p.oh {
        write4((oc * p.oh + oy) * w4 + cg, acc, bias);
    }
}

// A lane's whole tile: channels oc0.. in t (biases bt), oc0 + 8.. in u (bu), 4 rows from
// oy0, column group cg of rows w4 vec4s long.
fn store_tile3(t: ptr<function, Tile3>, u: ptr<function, Tile3>, oc0: u32, oy0: u32, cg: u32, w4: u32, bt: Cols, bu: Cols) {
    store3(oc0 + 0u, oy0 + 0u, cg, w4, (*t).a00, bt.lo[0]);
    store3(oc0 + 1u, oy0 + 0u, cg, w4, (*t).a01, bt.lo[1]);
    store3(oc0 + 2u, oy0 + 0u, cg, w4, (*t).a02, bt.lo[2]);
    store3(oc0 + 3u, oy0 + 0u, cg, w4, (*t).a03, bt.lo[3]);
    store3(oc0 + 4u, oy0 + 0u, cg, w4, (*t).a04, bt.hi[0]);
    store3(oc0 + 5u, oy0 + 0u, cg, w4, (*t).a05, bt.hi[1]);
    store3(oc0 + 6u, oy0 + 0u, cg, w4, (*t).a06, bt.hi[2]);
    store3(oc0 + 7u, oy0 + 0u, cg, w4, (*t).a07, bt.hi[3]);
    store3(oc0 + 0u, oy0 + 1u, cg, w4, (*t).a10, bt.lo[0]);
    store3(oc0 + 1u, oy0 + 1u, cg, w4, (*t).a11, bt.lo[1]);
    store3(oc0 + 2u, oy0 + 1u, cg, w4, (*t).a12, bt.lo[2]);
    store3(oc0 + 3u, oy0 + 1u, cg, w4, (*t).a13, bt.lo[3]);
    store3(oc0 + 4u, oy0 + 1u, cg, w4, (*t).a14, bt.hi[0]);
    store3(oc0 + 5u, oy0 + 1u, cg, w4, (*t).a15, bt.hi[1]);
    store3(oc0 + 6u, oy0 + 1u, cg, w4, (*t).a16, bt.hi[2]);
    store3(oc0 + 7u, oy0 + 1u, cg, w4, (*t).a17, bt.hi[3]);
    store3(oc0 + 0u, oy0 + 2u, cg, w4, (*t).a20, bt.lo[0]);
    store3(oc0 + 1u, oy0 + 2u, cg, w4, (*t).a21, bt.lo[1]);
    store3(oc0 + 2u, oy0 + 2u, cg, w4, (*t).a22, bt.lo[2]);
    store3(oc0 + 3u, oy0 + 2u, cg, w4, (*t).a23, bt.lo[3]);
    store3(oc0 + 4u, oy0 + 2u, cg, w4, (*t).a24, bt.hi[0]);
    store3(oc0 + 5u, oy0 + 2u, cg, w4, (*t).a25, bt.hi[1]);
    store3(oc0 + 6u, oy0 + 2u, cg, w4, (*t).a26, bt.hi[2]);
    store3(oc0 + 7u, oy0 + 2u, cg, w4, (*t).a27, bt.hi[3]);
    store3(oc0 + 0u, oy0 + 3u, cg, w4, (*t).a30, bt.lo[0]);
    store3(oc0 + 1u, oy0 + 3u, cg, w4, (*t).a31, bt.lo[1]);
    store3(oc0 + 2u, oy0 + 3u, cg, w4, (*t).a32, bt.lo[2]);
    store3(oc0 + 3u, oy0 + 3u, cg, w4, (*t).a33, bt.lo[3]);
    store3(oc0 + 4u, oy0 + 3u, cg, w4, (*t).a34, bt.hi[0]);
    store3(oc0 + 5u, oy0 + 3u, cg, w4, (*t).a35, bt.hi[1]);
    store3(oc0 + 6u, oy0 + 3u, cg, w4, (*t).a36, bt.hi[2]);
    store3(oc0 + 7u, oy0 + 3u, cg, w4, (*t).a37, bt.hi[3]);
    store3(oc0 + 8u, oy0 + 0u, cg, w4, (*u).a00, bu.lo[0]);
    store3(oc0 + 9u, oy0 + 0u, cg, w4, (*u).a01, bu.lo[1]);
    store3(oc0 + 10u, oy0 + 0u, cg, w4, (*u).a02, bu.lo[2]);
    store3(oc0 + 11u, oy0 + 0u, cg, w4, (*u).a03, bu.lo[3]);
    store3(oc0 + 12u, oy0 + 0u, cg, w4, (*u).a04, bu.hi[0]);
    store3(oc0 + 13u, oy0 + 0u, cg, w4, (*u).a05, bu.hi[1]);
    store3(oc0 + 14u, oy0 + 0u, cg, w4, (*u).a06, bu.hi[2]);
    store3(oc0 + 15u, oy0 + 0u, cg, w4, (*u).a07, bu.hi[3]);
    store3(oc0 + 8u, oy0 + 1u, cg, w4, (*u).a10, bu.lo[0]);
    store3(oc0 + 9u, oy0 + 1u, cg, w4, (*u).a11, bu.lo[1]);
    store3(oc0 + 10u, oy0 + 1u, cg, w4, (*u).a12, bu.lo[2]);
    store3(oc0 + 11u, oy0 + 1u, cg, w4, (*u).a13, bu.lo[3]);
    store3(oc0 + 12u, oy0 + 1u, cg, w4, (*u).a14, bu.hi[0]);
    store3(oc0 + 13u, oy0 + 1u, cg, w4, (*u).a15, bu.hi[1]);
    store3(oc0 + 14u, oy0 + 1u, cg, w4, (*u).a16, bu.hi[2]);
    store3(oc0 + 15u, oy0 + 1u, cg, w4, (*u).a17, bu.hi[3]);
    store3(oc0 + 8u, oy0 + 2u, cg, w4, (*u).a20, bu.lo[0]);
    store3(oc0 + 9u, oy0 + 2u, cg, w4, (*u).a21, bu.lo[1]);
    store3(oc0 + 10u, oy0 + 2u, cg, w4, (*u).a22, bu.lo[2]);
    store3(oc0 + 11u, oy0 + 2u, cg, w4, (*u).a23, bu.lo[3]);
    store3(oc0 + 12u, oy0 + 2u, cg, w4, (*u).a24, bu.hi[0]);
    store3(oc0 + 13u, oy0 + 2u, cg, w4, (*u).a25, bu.hi[1]);
    store3(oc0 + 14u, oy0 + 2u, cg, w4, (*u).a26, bu.hi[2]);
    store3(oc0 + 15u, oy0 + 2u, cg, w4, (*u).a27, bu.hi[3]);
    store3(oc0 + 8u, oy0 + 3u, cg, w4, (*u).a30, bu.lo[0]);
    store3(oc0 + 9u, oy0 + 3u, cg, w4, (*u).a31, bu.lo[1]);
    store3(oc0 + 10u, oy0 + 3u, cg, w4, (*u).a32, bu.lo[2]);
    store3(oc0 + 11u, oy0 + 3u, cg, w4, (*u).a33, bu.lo[3]);
    store3(oc0 + 12u, oy0 + 3u, cg, w4, (*u).a34, bu.hi[0]);
    store3(oc0 + 13u, oy0 + 3u, cg, w4, (*u).a35, bu.hi[1]);
    store3(oc0 + 14u, oy0 + 3u, cg, w4, (*u).a36, bu.hi[2]);
    store3(oc0 + 15u, oy0 + 3u, cg, w4, (*u).a37, bu.hi[3]);
}

// Where channel oc's 3×3 weights for this dispatch's input channels start, in vec4s of
// 4 f32 taps (channels past the last read the last one's).
fn weight_row3(oc: u32) -> u32 {
    return (p.oc_base + min(oc, p.cout - 1u)) * (p.w_cin * 9u / 4u) + p.ic_base * 9u / 4u;
}

// The body of `main3` and `main3s2`: a lane's 4 × 4 × 32 tile, input channels 4 (f32
// weights) or 8 (f16) at a time. `stride2` is a constant at each call, so the compiler
// keeps one side of every branch on it.
fn conv3(wg: vec3<u32>, num: vec3<u32>, li: u32, lane: u32, stride2: bool) {
    // Output row length in vec4s (the stores), input row length (the loads).
    let ow4 = p.ow / 4u;
    let w4 = p.w / 4u;
    let tiles = ((p.oh + 3u) / 4u) * ow4;
    let at = place(wg, num, li, tiles, 32u);
    if !at.valid {
        return;
    }
    let oc0 = at.oc0;
    let tile = at.tile;
    let cg = tile % ow4;
    // Compared, not assumed from `li`: no API promises which invocations share a subgroup.
    left_is_neighbour = lane > 0u && subgroupShuffleUp(tile, 1u) + 1u == tile;
    right_is_neighbour = lane < 7u && subgroupShuffleDown(tile, 1u) == tile + 1u;
    let oy0 = min(tile / ow4, (p.oh - 1u) / 4u) * 4u;
    // The weight rows this lane loads (channels oc0 + 8k + lane), in vec4s of 4 f32 taps.
    let r0 = weight_row3(oc0 + lane);
    let r1 = weight_row3(oc0 + 8u + lane);
    let r2 = weight_row3(oc0 + 16u + lane);
    let r3 = weight_row3(oc0 + 24u + lane);
    let iy0 = select(1, 2, stride2) * i32(oy0) - i32(p.pad_t);
    let plane = p.h * w4;
    // Accumulators of channels oc0 + 8k .. oc0 + 8k + 7 in tk.
    var t0: Tile3;
    var t1: Tile3;
    var t2: Tile3;
    var t3: Tile3;
    // Input channels 4 at a time whatever the weights' format: one loop per format made
    // Mesa compile both (it drops the override's dead side only after inlining), half
    // of the time it took to create a `main3` pipeline.
    for (var q = 0u; q < p.cin / 4u; q++) {
        group3(&t0, &t1, &t2, &t3, 4u * q * plane, plane, iy0, cg, w4, w9(r0, q), w9(r1, q), w9(r2, q), w9(r3, q), stride2);
    }
    let b0 = biases8(oc0, lane);
    let b1 = biases8(oc0 + 8u, lane);
    let b2 = biases8(oc0 + 16u, lane);
    let b3 = biases8(oc0 + 24u, lane);
    if tile < tiles {
        store_tile3(&t0, &t1, oc0, oy0, cg, ow4, b0, b1);
        store_tile3(&t2, &t3, oc0 + 16u, oy0, cg, ow4, b2, b3);
    }
}

@compute @workgroup_size(LANES)
fn main3(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    load_params(num);
    conv3(wg, num, li, lane, false);
}

// ---- `main1`: 1×1, stride 1, no padding, pixels a multiple of 4, input channels as
// for `main3`. The picture is one row of pixels: a lane takes 16 consecutive pixels
// (4 vec4 loads per input channel) × 16 channels, lanes broadcasting weights as in
// `main3`, and every accumulator takes 4 input channels in one chain. Per 4 input
// channels: 16 input and 2 weight loads feed 1024 FMAs per lane.

// A lane's 16 pixels of one input channel, 4 per vec4.
struct X4 {
    q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>,
}

fn pixels16(plane4: u32, quad0: u32, last: u32) -> X4 {
    return X4(f32x4(x4[plane4 + min(quad0, last)]), f32x4(x4[plane4 + min(quad0 + 1u, last)]), f32x4(x4[plane4 + min(quad0 + 2u, last)]), f32x4(x4[plane4 + min(quad0 + 3u, last)]));
}

// Four input channels a..d (pixels xa..xd, the lane's weights wv: one per channel)
// into 8 channels' accumulators t.a{r}{j}: pixel quad r, channel j.
fn accum1(t: ptr<function, Tile3>, xa: X4, xb: X4, xc: X4, xd: X4, wv: vec4<f32>) {
    let ga = bcast(wv.x);
    let gb = bcast(wv.y);
    let gc = bcast(wv.z);
    let gd = bcast(wv.w);
    (*t).a00 = fma(xd.q0, vec4<f32>(gd.lo[0]), fma(xc.q0, vec4<f32>(gc.lo[0]), fma(xb.q0, vec4<f32>(gb.lo[0]), fma(xa.q0, vec4<f32>(ga.lo[0]), (*t).a00))));
    (*t).a01 = fma(xd.q0, vec4<f32>(gd.lo[1]), fma(xc.q0, vec4<f32>(gc.lo[1]), fma(xb.q0, vec4<f32>(gb.lo[1]), fma(xa.q0, vec4<f32>(ga.lo[1]), (*t).a01))));
    (*t).a02 = fma(xd.q0, vec4<f32>(gd.lo[2]), fma(xc.q0, vec4<f32>(gc.lo[2]), fma(xb.q0, vec4<f32>(gb.lo[2]), fma(xa.q0, vec4<f32>(ga.lo[2]), (*t).a02))));
    (*t).a03 = fma(xd.q0, vec4<f32>(gd.lo[3]), fma(xc.q0, vec4<f32>(gc.lo[3]), fma(xb.q0, vec4<f32>(gb.lo[3]), fma(xa.q0, vec4<f32>(ga.lo[3]), (*t).a03))));
    (*t).a04 = fma(xd.q0, vec4<f32>(gd.hi[0]), fma(xc.q0, vec4<f32>(gc.hi[0]), fma(xb.q0, vec4<f32>(gb.hi[0]), fma(xa.q0, vec4<f32>(ga.hi[0]), (*t).a04))));
    (*t).a05 = fma(xd.q0, vec4<f32>(gd.hi[1]), fma(xc.q0, vec4<f32>(gc.hi[1]), fma(xb.q0, vec4<f32>(gb.hi[1]), fma(xa.q0, vec4<f32>(ga.hi[1]), (*t).a05))));
    (*t).a06 = fma(xd.q0, vec4<f32>(gd.hi[2]), fma(xc.q0, vec4<f32>(gc.hi[2]), fma(xb.q0, vec4<f32>(gb.hi[2]), fma(xa.q0, vec4<f32>(ga.hi[2]), (*t).a06))));
    (*t).a07 = fma(xd.q0, vec4<f32>(gd.hi[3]), fma(xc.q0, vec4<f32>(gc.hi[3]), fma(xb.q0, vec4<f32>(gb.hi[3]), fma(xa.q0, vec4<f32>(ga.hi[3]), (*t).a07))));
    (*t).a10 = fma(xd.q1, vec4<f32>(gd.lo[0]), fma(xc.q1, vec4<f32>(gc.lo[0]), fma(xb.q1, vec4<f32>(gb.lo[0]), fma(xa.q1, vec4<f32>(ga.lo[0]), (*t).a10))));
    (*t).a11 = fma(xd.q1, vec4<f32>(gd.lo[1]), fma(xc.q1, vec4<f32>(gc.lo[1]), fma(xb.q1, vec4<f32>(gb.lo[1]), fma(xa.q1, vec4<f32>(ga.lo[1]), (*t).a11))));
    (*t).a12 = fma(xd.q1, vec4<f32>(gd.lo[2]), fma(xc.q1, vec4<f32>(gc.lo[2]), fma(xb.q1, vec4<f32>(gb.lo[2]), fma(xa.q1, vec4<f32>(ga.lo[2]), (*t).a12))));
    (*t).a13 = fma(xd.q1, vec4<f32>(gd.lo[3]), fma(xc.q1, vec4<f32>(gc.lo[3]), fma(xb.q1, vec4<f32>(gb.lo[3]), fma(xa.q1, vec4<f32>(ga.lo[3]), (*t).a13))));
    (*t).a14 = fma(xd.q1, vec4<f32>(gd.hi[0]), fma(xc.q1, vec4<f32>(gc.hi[0]), fma(xb.q1, vec4<f32>(gb.hi[0]), fma(xa.q1, vec4<f32>(ga.hi[0]), (*t).a14))));
    (*t).a15 = fma(xd.q1, vec4<f32>(gd.hi[1]), fma(xc.q1, vec4<f32>(gc.hi[1]), fma(xb.q1, vec4<f32>(gb.hi[1]), fma(xa.q1, vec4<f32>(ga.hi[1]), (*t).a15))));
    (*t).a16 = fma(xd.q1, vec4<f32>(gd.hi[2]), fma(xc.q1, vec4<f32>(gc.hi[2]), fma(xb.q1, vec4<f32>(gb.hi[2]), fma(xa.q1, vec4<f32>(ga.hi[2]), (*t).a16))));
    (*t).a17 = fma(xd.q1, vec4<f32>(gd.hi[3]), fma(xc.q1, vec4<f32>(gc.hi[3]), fma(xb.q1, vec4<f32>(gb.hi[3]), fma(xa.q1, vec4<f32>(ga.hi[3]), (*t).a17))));
    (*t).a20 = fma(xd.q2, vec4<f32>(gd.lo[0]), fma(xc.q2, vec4<f32>(gc.lo[0]), fma(xb.q2, vec4<f32>(gb.lo[0]), fma(xa.q2, vec4<f32>(ga.lo[0]), (*t).a20))));
    (*t).a21 = fma(xd.q2, vec4<f32>(gd.lo[1]), fma(xc.q2, vec4<f32>(gc.lo[1]), fma(xb.q2, vec4<f32>(gb.lo[1]), fma(xa.q2, vec4<f32>(ga.lo[1]), (*t).a21))));
    (*t).a22 = fma(xd.q2, vec4<f32>(gd.lo[2]), fma(xc.q2, vec4<f32>(gc.lo[2]), fma(xb.q2, vec4<f32>(gb.lo[2]), fma(xa.q2, vec4<f32>(ga.lo[2]), (*t).a22))));
    (*t).a23 = fma(xd.q2, vec4<f32>(gd.lo[3]), fma(xc.q2, vec4<f32>(gc.lo[3]), fma(xb.q2, vec4<f32>(gb.lo[3]), fma(xa.q2, vec4<f32>(ga.lo[3]), (*t).a23))));
    (*t).a24 = fma(xd.q2, vec4<f32>(gd.hi[0]), fma(xc.q2, vec4<f32>(gc.hi[0]), fma(xb.q2, vec4<f32>(gb.hi[0]), fma(xa.q2, vec4<f32>(ga.hi[0]), (*t).a24))));
    (*t).a25 = fma(xd.q2, vec4<f32>(gd.hi[1]), fma(xc.q2, vec4<f32>(gc.hi[1]), fma(xb.q2, vec4<f32>(gb.hi[1]), fma(xa.q2, vec4<f32>(ga.hi[1]), (*t).a25))));
    (*t).a26 = fma(xd.q2, vec4<f32>(gd.hi[2]), fma(xc.q2, vec4<f32>(gc.hi[2]), fma(xb.q2, vec4<f32>(gb.hi[2]), fma(xa.q2, vec4<f32>(ga.hi[2]), (*t).a26))));
    (*t).a27 = fma(xd.q2, vec4<f32>(gd.hi[3]), fma(xc.q2, vec4<f32>(gc.hi[3]), fma(xb.q2, vec4<f32>(gb.hi[3]), fma(xa.q2, vec4<f32>(ga.hi[3]), (*t).a27))));
    (*t).a30 = fma(xd.q3, vec4<f32>(gd.lo[0]), fma(xc.q3, vec4<f32>(gc.lo[0]), fma(xb.q3, vec4<f32>(gb.lo[0]), fma(xa.q3, vec4<f32>(ga.lo[0]), (*t).a30))));
    (*t).a31 = fma(xd.q3, vec4<f32>(gd.lo[1]), fma(xc.q3, vec4<f32>(gc.lo[1]), fma(xb.q3, vec4<f32>(gb.lo[1]), fma(xa.q3, vec4<f32>(ga.lo[1]), (*t).a31))));
    (*t).a32 = fma(xd.q3, vec4<f32>(gd.lo[2]), fma(xc.q3, vec4<f32>(gc.lo[2]), fma(xb.q3, vec4<f32>(gb.lo[2]), fma(xa.q3, vec4<f32>(ga.lo[2]), (*t).a32))));
    (*t).a33 = fma(xd.q3, vec4<f32>(gd.lo[3]), fma(xc.q3, vec4<f32>(gc.lo[3]), fma(xb.q3, vec4<f32>(gb.lo[3]), fma(xa.q3, vec4<f32>(ga.lo[3]), (*t).a33))));
    (*t).a34 = fma(xd.q3, vec4<f32>(gd.hi[0]), fma(xc.q3, vec4<f32>(gc.hi[0]), fma(xb.q3, vec4<f32>(gb.hi[0]), fma(xa.q3, vec4<f32>(ga.hi[0]), (*t).a34))));
    (*t).a35 = fma(xd.q3, vec4<f32>(gd.hi[1]), fma(xc.q3, vec4<f32>(gc.hi[1]), fma(xb.q3, vec4<f32>(gb.hi[1]), fma(xa.q3, vec4<f32>(ga.hi[1]), (*t).a35))));
    (*t).a36 = fma(xd.q3, vec4<f32>(gd.hi[2]), fma(xc.q3, vec4<f32>(gc.hi[2]), fma(xb.q3, vec4<f32>(gb.hi[2]), fma(xa.q3, vec4<f32>(ga.hi[2]), (*t).a36))));
    (*t).a37 = fma(xd.q3, vec4<f32>(gd.hi[3]), fma(xc.q3, vec4<f32>(gc.hi[3]), fma(xb.q3, vec4<f32>(gb.hi[3]), fma(xa.q3, vec4<f32>(ga.hi[3]), (*t).a37))));
}

fn store1(oc: u32, quad: u32, quads: u32, acc: vec4<f32>, bias: f32) {
    if oc < p.cout && quad < quads {
        write4(oc * quads + quad, acc, bias);
    }
}

@compute @workgroup_size(LANES)
fn main1(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    load_params(num);
    let quads = p.h * p.w / 4u;
    let at = place(wg, num, li, (quads + 3u) / 4u, 16u);
    if !at.valid {
        return;
    }
    let oc0 = at.oc0;
    let quad0 = at.tile * 4u;
    // vec4s per weight row ([cout, cin]) and the window's first
    let w_row4 = p.w_cin / 4u;
    let wl = (p.oc_base + min(oc0 + lane, p.cout - 1u)) * w_row4 + p.ic_base / 4u;
    let wh = (p.oc_base + min(oc0 + 8u + lane, p.cout - 1u)) * w_row4 + p.ic_base / 4u;
    var t: Tile3;
    var u: Tile3;
    for (var q = 0u; q < p.cin / 4u; q++) {
        let plane = 4u * q * quads;
        let xa = pixels16(plane, quad0, quads - 1u);
        let xb = pixels16(plane + quads, quad0, quads - 1u);
        let xc = pixels16(plane + 2u * quads, quad0, quads - 1u);
        let xd = pixels16(plane + 3u * quads, quad0, quads - 1u);
        var lo: vec4<f32>;
        var hi: vec4<f32>;
        if W_F16 {
            // 8 input channels per word: this q's 4 are its first or second half.
            let a = u32x4(wt4[(wl + q) / 2u]);
            let b = u32x4(wt4[(wh + q) / 2u]);
            let second = (q & 1u) == 1u;
            lo = select(hv(a.x, a.y), hv(a.z, a.w), second);
            hi = select(hv(b.x, b.y), hv(b.z, b.w), second);
        } else {
            lo = f32x4(wt4[wl + q]);
            hi = f32x4(wt4[wh + q]);
        }
        accum1(&t, xa, xb, xc, xd, lo);
        accum1(&u, xa, xb, xc, xd, hi);
    }
    let b0 = biases8(oc0, lane);
    let b1 = biases8(oc0 + 8u, lane);
    store1(oc0 + 0u + 0u, quad0 + 0u, quads, t.a00, b0.lo[0]);
    store1(oc0 + 0u + 1u, quad0 + 0u, quads, t.a01, b0.lo[1]);
    store1(oc0 + 0u + 2u, quad0 + 0u, quads, t.a02, b0.lo[2]);
    store1(oc0 + 0u + 3u, quad0 + 0u, quads, t.a03, b0.lo[3]);
    store1(oc0 + 0u + 4u, quad0 + 0u, quads, t.a04, b0.hi[0]);
    store1(oc0 + 0u + 5u, quad0 + 0u, quads, t.a05, b0.hi[1]);
    store1(oc0 + 0u + 6u, quad0 + 0u, quads, t.a06, b0.hi[2]);
    store1(oc0 + 0u + 7u, quad0 + 0u, quads, t.a07, b0.hi[3]);
    store1(oc0 + 0u + 0u, quad0 + 1u, quads, t.a10, b0.lo[0]);
    store1(oc0 + 0u + 1u, quad0 + 1u, quads, t.a11, b0.lo[1]);
    store1(oc0 + 0u + 2u, quad0 + 1u, quads, t.a12, b0.lo[2]);
    store1(oc0 + 0u + 3u, quad0 + 1u, quads, t.a13, b0.lo[3]);
    store1(oc0 + 0u + 4u, quad0 + 1u, quads, t.a14, b0.hi[0]);
    store1(oc0 + 0u + 5u, quad0 + 1u, quads, t.a15, b0.hi[1]);
    store1(oc0 + 0u + 6u, quad0 + 1u, quads, t.a16, b0.hi[2]);
    store1(oc0 + 0u + 7u, quad0 + 1u, quads, t.a17, b0.hi[3]);
    store1(oc0 + 0u + 0u, quad0 + 2u, quads, t.a20, b0.lo[0]);
    store1(oc0 + 0u + 1u, quad0 + 2u, quads, t.a21, b0.lo[1]);
    store1(oc0 + 0u + 2u, quad0 + 2u, quads, t.a22, b0.lo[2]);
    store1(oc0 + 0u + 3u, quad0 + 2u, quads, t.a23, b0.lo[3]);
    store1(oc0 + 0u + 4u, quad0 + 2u, quads, t.a24, b0.hi[0]);
    store1(oc0 + 0u + 5u, quad0 + 2u, quads, t.a25, b0.hi[1]);
    store1(oc0 + 0u + 6u, quad0 + 2u, quads, t.a26, b0.hi[2]);
    store1(oc0 + 0u + 7u, quad0 + 2u, quads, t.a27, b0.hi[3]);
    store1(oc0 + 0u + 0u, quad0 + 3u, quads, t.a30, b0.lo[0]);
    store1(oc0 + 0u + 1u, quad0 + 3u, quads, t.a31, b0.lo[1]);
    store1(oc0 + 0u + 2u, quad0 + 3u, quads, t.a32, b0.lo[2]);
    store1(oc0 + 0u + 3u, quad0 + 3u, quads, t.a33, b0.lo[3]);
    store1(oc0 + 0u + 4u, quad0 + 3u, quads, t.a34, b0.hi[0]);
    store1(oc0 + 0u + 5u, quad0 + 3u, quads, t.a35, b0.hi[1]);
    store1(oc0 + 0u + 6u, quad0 + 3u, quads, t.a36, b0.hi[2]);
    store1(oc0 + 0u + 7u, quad0 + 3u, quads, t.a37, b0.hi[3]);
    store1(oc0 + 8u + 0u, quad0 + 0u, quads, u.a00, b1.lo[0]);
    store1(oc0 + 8u + 1u, quad0 + 0u, quads, u.a01, b1.lo[1]);
    store1(oc0 + 8u + 2u, quad0 + 0u, quads, u.a02, b1.lo[2]);
    store1(oc0 + 8u + 3u, quad0 + 0u, quads, u.a03, b1.lo[3]);
    store1(oc0 + 8u + 4u, quad0 + 0u, quads, u.a04, b1.hi[0]);
    store1(oc0 + 8u + 5u, quad0 + 0u, quads, u.a05, b1.hi[1]);
    store1(oc0 + 8u + 6u, quad0 + 0u, quads, u.a06, b1.hi[2]);
    store1(oc0 + 8u + 7u, quad0 + 0u, quads, u.a07, b1.hi[3]);
    store1(oc0 + 8u + 0u, quad0 + 1u, quads, u.a10, b1.lo[0]);
    store1(oc0 + 8u + 1u, quad0 + 1u, quads, u.a11, b1.lo[1]);
    store1(oc0 + 8u + 2u, quad0 + 1u, quads, u.a12, b1.lo[2]);
    store1(oc0 + 8u + 3u, quad0 + 1u, quads, u.a13, b1.lo[3]);
    store1(oc0 + 8u + 4u, quad0 + 1u, quads, u.a14, b1.hi[0]);
    store1(oc0 + 8u + 5u, quad0 + 1u, quads, u.a15, b1.hi[1]);
    store1(oc0 + 8u + 6u, quad0 + 1u, quads, u.a16, b1.hi[2]);
    store1(oc0 + 8u + 7u, quad0 + 1u, quads, u.a17, b1.hi[3]);
    store1(oc0 + 8u + 0u, quad0 + 2u, quads, u.a20, b1.lo[0]);
    store1(oc0 + 8u + 1u, quad0 + 2u, quads, u.a21, b1.lo[1]);
    store1(oc0 + 8u + 2u, quad0 + 2u, quads, u.a22, b1.lo[2]);
    store1(oc0 + 8u + 3u, quad0 + 2u, quads, u.a23, b1.lo[3]);
    store1(oc0 + 8u + 4u, quad0 + 2u, quads, u.a24, b1.hi[0]);
    store1(oc0 + 8u + 5u, quad0 + 2u, quads, u.a25, b1.hi[1]);
    store1(oc0 + 8u + 6u, quad0 + 2u, quads, u.a26, b1.hi[2]);
    store1(oc0 + 8u + 7u, quad0 + 2u, quads, u.a27, b1.hi[3]);
    store1(oc0 + 8u + 0u, quad0 + 3u, quads, u.a30, b1.lo[0]);
    store1(oc0 + 8u + 1u, quad0 + 3u, quads, u.a31, b1.lo[1]);
    store1(oc0 + 8u + 2u, quad0 + 3u, quads, u.a32, b1.lo[2]);
    store1(oc0 + 8u + 3u, quad0 + 3u, quads, u.a33, b1.lo[3]);
    store1(oc0 + 8u + 4u, quad0 + 3u, quads, u.a34, b1.hi[0]);
    store1(oc0 + 8u + 5u, quad0 + 3u, quads, u.a35, b1.hi[1]);
    store1(oc0 + 8u + 6u, quad0 + 3u, quads, u.a36, b1.hi[2]);
    store1(oc0 + 8u + 7u, quad0 + 3u, quads, u.a37, b1.hi[3]);
}

// ---- `main3s2`: 3×3, stride 2 (the downsamplers), left padding 0 or 1, input width a
// multiple of 8 and output width half of it, input channels as for `main3`. As `main3`
// (4 output columns × 4 rows × 32 channels per lane, all 9 taps of an input channel in
// one chain per accumulator), over the 9 input rows under the lane's 4 output rows and
// every other input column: the kernel the general one was (11 GFLOP/s there, a sixth of
// a 256² encode).

// Left padding 1 (the UNet's downsamplers) rather than 0 (the VAE's, padded right).
override PAD_L1: bool = false;

// An input row under a lane's 4 output columns: what horizontal tap k reads, in tk.
struct Taps {
    t0: vec4<f32>,
    t1: vec4<f32>,
    t2: vec4<f32>,
}

// Input columns 8·cg − pad_l + 2j + k for output column j and tap k; 0 in the padding.
fn taps_s2(plane4: u32, iy: i32, cg: u32, w4: u32) -> Taps {
    let base = plane4 + u32(clamp(iy, 0, i32(p.h) - 1)) * w4;
    let a = f32x4(x4[base + 2u * cg]);
    let b = f32x4(x4[base + 2u * cg + 1u]);
    var r: Taps;
    if PAD_L1 {
        let l = select(0.0, left_column(b.w, base + max(2u * cg, 1u) - 1u), cg > 0u);
        r = Taps(vec4<f32>(l, a.y, a.w, b.y), vec4<f32>(a.x, a.z, b.x, b.z), vec4<f32>(a.y, a.w, b.y, b.w));
    } else {
        let c = select(0.0, right_column(a.x, base + min(2u * cg + 2u, w4 - 1u)), 2u * cg + 2u < w4);
        r = Taps(vec4<f32>(a.x, a.z, b.x, b.z), vec4<f32>(a.y, a.w, b.y, b.w), vec4<f32>(a.z, b.x, b.z, c));
    }
    let inside = iy >= 0 && iy < i32(p.h);
    let zero = vec4<f32>(0.0);
    return Taps(select(zero, r.t0, inside), select(zero, r.t1, inside), select(zero, r.t2, inside));
}

// The 9 input rows under a lane's 4 output rows, from iy0.
struct X9 {
    r0: Taps, r1: Taps, r2: Taps, r3: Taps, r4: Taps, r5: Taps, r6: Taps, r7: Taps, r8: Taps,
}

fn rows9(plane4: u32, iy0: i32, cg: u32, w4: u32) -> X9 {
    return X9(taps_s2(plane4, iy0 + 0, cg, w4), taps_s2(plane4, iy0 + 1, cg, w4), taps_s2(plane4, iy0 + 2, cg, w4), taps_s2(plane4, iy0 + 3, cg, w4), taps_s2(plane4, iy0 + 4, cg, w4), taps_s2(plane4, iy0 + 5, cg, w4), taps_s2(plane4, iy0 + 6, cg, w4), taps_s2(plane4, iy0 + 7, cg, w4), taps_s2(plane4, iy0 + 8, cg, w4));
}

// acc + the 9 taps of rows a, b, c (weights g, row-major) in one chain.
fn chain9(acc: vec4<f32>, a: Taps, b: Taps, c: Taps, g: array<f32, 9>) -> vec4<f32> {
    let s = fma(a.t2, vec4<f32>(g[2]), fma(a.t1, vec4<f32>(g[1]), fma(a.t0, vec4<f32>(g[0]), acc)));
    let m = fma(b.t2, vec4<f32>(g[5]), fma(b.t1, vec4<f32>(g[4]), fma(b.t0, vec4<f32>(g[3]), s)));
    return fma(c.t2, vec4<f32>(g[8]), fma(c.t1, vec4<f32>(g[7]), fma(c.t0, vec4<f32>(g[6]), m)));
}

// One input channel's 9 taps (weights row-major in wa, wb, wc) into 8 channels'
// accumulators; output row r reads input rows 2r, 2r + 1, 2r + 2.
fn accum3s2(t: ptr<function, Tile3>, xs: X9, wa: vec4<f32>, wb: vec4<f32>, wc: f32) {
    let g0 = bcast(wa.x);
    let g1 = bcast(wa.y);
    let g2 = bcast(wa.z);
    let g3 = bcast(wa.w);
    let g4 = bcast(wb.x);
    let g5 = bcast(wb.y);
    let g6 = bcast(wb.z);
    let g7 = bcast(wb.w);
    let g8 = bcast(wc);
    (*t).a00 = chain9((*t).a00, xs.r0, xs.r1, xs.r2, array(g0.lo[0], g1.lo[0], g2.lo[0], g3.lo[0], g4.lo[0], g5.lo[0], g6.lo[0], g7.lo[0], g8.lo[0]));
    (*t).a01 = chain9((*t).a01, xs.r0, xs.r1, xs.r2, array(g0.lo[1], g1.lo[1], g2.lo[1], g3.lo[1], g4.lo[1], g5.lo[1], g6.lo[1], g7.lo[1], g8.lo[1]));
    (*t).a02 = chain9((*t).a02, xs.r0, xs.r1, xs.r2, array(g0.lo[2], g1.lo[2], g2.lo[2], g3.lo[2], g4.lo[2], g5.lo[2], g6.lo[2], g7.lo[2], g8.lo[2]));
    (*t).a03 = chain9((*t).a03, xs.r0, xs.r1, xs.r2, array(g0.lo[3], g1.lo[3], g2.lo[3], g3.lo[3], g4.lo[3], g5.lo[3], g6.lo[3], g7.lo[3], g8.lo[3]));
    (*t).a04 = chain9((*t).a04, xs.r0, xs.r1, xs.r2, array(g0.hi[0], g1.hi[0], g2.hi[0], g3.hi[0], g4.hi[0], g5.hi[0], g6.hi[0], g7.hi[0], g8.hi[0]));
    (*t).a05 = chain9((*t).a05, xs.r0, xs.r1, xs.r2, array(g0.hi[1], g1.hi[1], g2.hi[1], g3.hi[1], g4.hi[1], g5.hi[1], g6.hi[1], g7.hi[1], g8.hi[1]));
    (*t).a06 = chain9((*t).a06, xs.r0, xs.r1, xs.r2, array(g0.hi[2], g1.hi[2], g2.hi[2], g3.hi[2], g4.hi[2], g5.hi[2], g6.hi[2], g7.hi[2], g8.hi[2]));
    (*t).a07 = chain9((*t).a07, xs.r0, xs.r1, xs.r2, array(g0.hi[3], g1.hi[3], g2.hi[3], g3.hi[3], g4.hi[3], g5.hi[3], g6.hi[3], g7.hi[3], g8.hi[3]));
    (*t).a10 = chain9((*t).a10, xs.r2, xs.r3, xs.r4, array(g0.lo[0], g1.lo[0], g2.lo[0], g3.lo[0], g4.lo[0], g5.lo[0], g6.lo[0], g7.lo[0], g8.lo[0]));
    (*t).a11 = chain9((*t).a11, xs.r2, xs.r3, xs.r4, array(g0.lo[1], g1.lo[1], g2.lo[1], g3.lo[1], g4.lo[1], g5.lo[1], g6.lo[1], g7.lo[1], g8.lo[1]));
    (*t).a12 = chain9((*t).a12, xs.r2, xs.r3, xs.r4, array(g0.lo[2], g1.lo[2], g2.lo[2], g3.lo[2], g4.lo[2], g5.lo[2], g6.lo[2], g7.lo[2], g8.lo[2]));
    (*t).a13 = chain9((*t).a13, xs.r2, xs.r3, xs.r4, array(g0.lo[3], g1.lo[3], g2.lo[3], g3.lo[3], g4.lo[3], g5.lo[3], g6.lo[3], g7.lo[3], g8.lo[3]));
    (*t).a14 = chain9((*t).a14, xs.r2, xs.r3, xs.r4, array(g0.hi[0], g1.hi[0], g2.hi[0], g3.hi[0], g4.hi[0], g5.hi[0], g6.hi[0], g7.hi[0], g8.hi[0]));
    (*t).a15 = chain9((*t).a15, xs.r2, xs.r3, xs.r4, array(g0.hi[1], g1.hi[1], g2.hi[1], g3.hi[1], g4.hi[1], g5.hi[1], g6.hi[1], g7.hi[1], g8.hi[1]));
    (*t).a16 = chain9((*t).a16, xs.r2, xs.r3, xs.r4, array(g0.hi[2], g1.hi[2], g2.hi[2], g3.hi[2], g4.hi[2], g5.hi[2], g6.hi[2], g7.hi[2], g8.hi[2]));
    (*t).a17 = chain9((*t).a17, xs.r2, xs.r3, xs.r4, array(g0.hi[3], g1.hi[3], g2.hi[3], g3.hi[3], g4.hi[3], g5.hi[3], g6.hi[3], g7.hi[3], g8.hi[3]));
    (*t).a20 = chain9((*t).a20, xs.r4, xs.r5, xs.r6, array(g0.lo[0], g1.lo[0], g2.lo[0], g3.lo[0], g4.lo[0], g5.lo[0], g6.lo[0], g7.lo[0], g8.lo[0]));
    (*t).a21 = chain9((*t).a21, xs.r4, xs.r5, xs.r6, array(g0.lo[1], g1.lo[1], g2.lo[1], g3.lo[1], g4.lo[1], g5.lo[1], g6.lo[1], g7.lo[1], g8.lo[1]));
    (*t).a22 = chain9((*t).a22, xs.r4, xs.r5, xs.r6, array(g0.lo[2], g1.lo[2], g2.lo[2], g3.lo[2], g4.lo[2], g5.lo[2], g6.lo[2], g7.lo[2], g8.lo[2]));
    (*t).a23 = chain9((*t).a23, xs.r4, xs.r5, xs.r6, array(g0.lo[3], g1.lo[3], g2.lo[3], g3.lo[3], g4.lo[3], g5.lo[3], g6.lo[3], g7.lo[3], g8.lo[3]));
    (*t).a24 = chain9((*t).a24, xs.r4, xs.r5, xs.r6, array(g0.hi[0], g1.hi[0], g2.hi[0], g3.hi[0], g4.hi[0], g5.hi[0], g6.hi[0], g7.hi[0], g8.hi[0]));
    (*t).a25 = chain9((*t).a25, xs.r4, xs.r5, xs.r6, array(g0.hi[1], g1.hi[1], g2.hi[1], g3.hi[1], g4.hi[1], g5.hi[1], g6.hi[1], g7.hi[1], g8.hi[1]));
    (*t).a26 = chain9((*t).a26, xs.r4, xs.r5, xs.r6, array(g0.hi[2], g1.hi[2], g2.hi[2], g3.hi[2], g4.hi[2], g5.hi[2], g6.hi[2], g7.hi[2], g8.hi[2]));
    (*t).a27 = chain9((*t).a27, xs.r4, xs.r5, xs.r6, array(g0.hi[3], g1.hi[3], g2.hi[3], g3.hi[3], g4.hi[3], g5.hi[3], g6.hi[3], g7.hi[3], g8.hi[3]));
    (*t).a30 = chain9((*t).a30, xs.r6, xs.r7, xs.r8, array(g0.lo[0], g1.lo[0], g2.lo[0], g3.lo[0], g4.lo[0], g5.lo[0], g6.lo[0], g7.lo[0], g8.lo[0]));
    (*t).a31 = chain9((*t).a31, xs.r6, xs.r7, xs.r8, array(g0.lo[1], g1.lo[1], g2.lo[1], g3.lo[1], g4.lo[1], g5.lo[1], g6.lo[1], g7.lo[1], g8.lo[1]));
    (*t).a32 = chain9((*t).a32, xs.r6, xs.r7, xs.r8, array(g0.lo[2], g1.lo[2], g2.lo[2], g3.lo[2], g4.lo[2], g5.lo[2], g6.lo[2], g7.lo[2], g8.lo[2]));
    (*t).a33 = chain9((*t).a33, xs.r6, xs.r7, xs.r8, array(g0.lo[3], g1.lo[3], g2.lo[3], g3.lo[3], g4.lo[3], g5.lo[3], g6.lo[3], g7.lo[3], g8.lo[3]));
    (*t).a34 = chain9((*t).a34, xs.r6, xs.r7, xs.r8, array(g0.hi[0], g1.hi[0], g2.hi[0], g3.hi[0], g4.hi[0], g5.hi[0], g6.hi[0], g7.hi[0], g8.hi[0]));
    (*t).a35 = chain9((*t).a35, xs.r6, xs.r7, xs.r8, array(g0.hi[1], g1.hi[1], g2.hi[1], g3.hi[1], g4.hi[1], g5.hi[1], g6.hi[1], g7.hi[1], g8.hi[1]));
    (*t).a36 = chain9((*t).a36, xs.r6, xs.r7, xs.r8, array(g0.hi[2], g1.hi[2], g2.hi[2], g3.hi[2], g4.hi[2], g5.hi[2], g6.hi[2], g7.hi[2], g8.hi[2]));
    (*t).a37 = chain9((*t).a37, xs.r6, xs.r7, xs.r8, array(g0.hi[3], g1.hi[3], g2.hi[3], g3.hi[3], g4.hi[3], g5.hi[3], g6.hi[3], g7.hi[3], g8.hi[3]));
}

@compute @workgroup_size(LANES)
fn main3s2(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    load_params(num);
    conv3(wg, num, li, lane, true);
}
