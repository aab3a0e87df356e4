// 2-D convolution, NCHW (batch 1), weights [cout, cin, kh, kw] as f32 or packed f16.
// Each invocation computes 8 output channels × 4 output rows at one column, in named
// vec4 registers (no dynamically indexed private arrays: llvmpipe spills those to
// memory) and with no barriers. Neighbouring invocations take neighbouring columns, so
// on lavapipe, where invocations are SIMD lanes, input loads are contiguous vectors and
// weight loads are uniform broadcasts.
// One dispatch covers a window of output channels and one of input channels, so
// tensors larger than a storage binding are done in several accumulating dispatches.
// The parameters, bindings, ACT, ACCUMULATE and the weight loads: conv2d_interface.wgsl.

const OCT: u32 = 8u;
const ROWS: u32 = 4u;

// What output y[idx] of channel oc starts from: its bias, or past the first input window
// what the earlier windows left. A branch, not a select, which would load both.
fn start(oc: u32, idx: u32) -> f32 {
    if ACCUMULATE {
        return y[idx];
    }
    return load_b(p.oc_base + oc);
}

// Input value at (row iy, column ix) of a plane, or 0 in the padding. The index is
// clamped so the read stays in bounds either way (branch-free on SIMD lanes).
fn tap(plane: u32, iy: i32, ix: i32) -> f32 {
    let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let y = u32(clamp(iy, 0, i32(p.h) - 1));
    let x_ = u32(clamp(ix, 0, i32(p.w) - 1));
    return select(0.0, x[plane + y * p.w + x_], inside);
}

fn store(oc: u32, oy0: u32, ox: u32, acc: vec4<f32>) {
    if oc >= p.cout {
        return;
    }
    var v = acc;
    for (var r = 0u; r < ROWS; r++) {
        if oy0 + r < p.oh {
            let idx = (oc * p.oh + oy0 + r) * p.ow + ox;
            let base = vec4<f32>(start(oc, idx));
            var out = v + base;
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
) {
    load_params(num);
    let gid = flat_workgroup(wg, num) * 64u + li;
    let tiles = ((p.oh + ROWS - 1u) / ROWS) * p.ow;
    let oc0 = (gid / tiles) * OCT;
    if oc0 >= p.cout {
        return;
    }
    let tile = gid % tiles;
    let ox = tile % p.ow;
    let oy0 = (tile / p.ow) * ROWS;
    let taps = p.kh * p.kw;
    let w_row = p.w_cin * taps;
    // Weight rows of the 8 channels (clamped: channels past cout compute junk, never stored).
    let last = p.cout - 1u;
    let w0 = (p.oc_base + min(oc0, last)) * w_row + p.ic_base * taps;
    let w1 = (p.oc_base + min(oc0 + 1u, last)) * w_row + p.ic_base * taps;
    let w2 = (p.oc_base + min(oc0 + 2u, last)) * w_row + p.ic_base * taps;
    let w3 = (p.oc_base + min(oc0 + 3u, last)) * w_row + p.ic_base * taps;
    let w4 = (p.oc_base + min(oc0 + 4u, last)) * w_row + p.ic_base * taps;
    let w5 = (p.oc_base + min(oc0 + 5u, last)) * w_row + p.ic_base * taps;
    let w6 = (p.oc_base + min(oc0 + 6u, last)) * w_row + p.ic_base * taps;
    let w7 = (p.oc_base + min(oc0 + 7u, last)) * w_row + p.ic_base * taps;
    var a0 = vec4<f32>();
    var a1 = vec4<f32>();
    var a2 = vec4<f32>();
    var a3 = vec4<f32>();
    var a4 = vec4<f32>();
    var a5 = vec4<f32>();
    var a6 = vec4<f32>();
    var a7 = vec4<f32>();
    let s = i32(p.stride);
    let iy0 = i32(oy0) * s - i32(p.pad_t);
    let ix0 = i32(ox) * s - i32(p.pad_l);
    for (var ic = 0u; ic < p.cin; ic++) {
        let plane = ic * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = iy0 + i32(ky);
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = ix0 + i32(kx);
                let xv = vec4<f32>(tap(plane, iy, ix), tap(plane, iy + s, ix), tap(plane, iy + 2 * s, ix), tap(plane, iy + 3 * s, ix));
                let t = ic * taps + ky * p.kw + kx;
                a0 = fma(vec4<f32>(load_w(w0 + t)), xv, a0);
                a1 = fma(vec4<f32>(load_w(w1 + t)), xv, a1);
                a2 = fma(vec4<f32>(load_w(w2 + t)), xv, a2);
                a3 = fma(vec4<f32>(load_w(w3 + t)), xv, a3);
                a4 = fma(vec4<f32>(load_w(w4 + t)), xv, a4);
                a5 = fma(vec4<f32>(load_w(w5 + t)), xv, a5);
                a6 = fma(vec4<f32>(load_w(w6 + t)), xv, a6);
                a7 = fma(vec4<f32>(load_w(w7 + t)), xv, a7);
            }
        }
    }
    store(oc0, oy0, ox, a0);
    store(oc0 + 1u, oy0, ox, a1);
    store(oc0 + 2u, oy0, ox, a2);
    store(oc0 + 3u, oy0, ox, a3);
    store(oc0 + 4u, oy0, ox, a4);
    store(oc0 + 5u, oy0, ox, a5);
    store(oc0 + 6u, oy0, ox, a6);
    store(oc0 + 7u, oy0, ox, a7);
}

// ---- `tiled`: the convolution as a product, for GPUs: y[oc, pixel] = Σ_K w[oc, K] ·
// patch[K, pixel] with K = (input channel, ky, kx) in the weight's own order, the patches
// gathered on the fly (no im2col buffer). A workgroup stages 16 K of a 64-channel weight
// tile and of a 64-pixel patch tile in workgroup memory per step; each invocation
// accumulates 4 channels × 4 pixels from them in registers, so every value loaded from
// memory feeds 64 FMAs (`main` loads one weight per 4 FMAs). Pixels are output pixels
// in row-major order, so a tile may span output rows. `tiled128` below does the same on
// 128 × 128 tiles, for convolutions with enough of them to fill a GPU.

const TILE: u32 = 64u;
const STEP: u32 = 16u;
// The weight tile's rows (one per K) in vec4s: 16 of channels and one of padding. The
// 16 invocations staging one channel write 16 K of it; unpadded, those lie 64 floats
// apart, all in one bank of a GPU's workgroup memory (32 banks of 4 bytes), and the
// writes serialise 16-fold. 68 floats apart they fall in 8 banks, 2 to a bank.
const W_ROW4: u32 = 17u;

// The kernel's size, for `tiled`: as constants, splitting K into (input channel, ky, kx)
// for every staged patch value is multiplies and shifts, where divisions by a uniform
// (GPUs have no integer divider) would cost more than the step's FMAs.
override KH: u32 = 1u;
override KW: u32 = 1u;

// One step, K-major: ws[kk * W_ROW4 + q] holds channels 4q..4q+3 of the tile at K kk,
// xs[kk * 16 + q] pixels 4q..4q+3.
var<workgroup> ws: array<vec4<f32>, 272>;
var<workgroup> xs: array<vec4<f32>, 256>;

// Input (row, column) of the first tap of output pixel px, clamped to the last pixel
// (pixels past the end compute junk, never stored): what `tiled` and `tiled128` stage.
fn first_tap(px: u32) -> vec2<i32> {
    let q = min(px, p.oh * p.ow - 1u);
    return vec2<i32>(i32((q / p.ow) * p.stride) - i32(p.pad_t), i32((q % p.ow) * p.stride) - i32(p.pad_l));
}

// Patch value K of the output pixel whose first tap is input tap0 (0 in the
// padding or past the last K, which zeroes the products of the clamped weights there).
fn patch_at(k: u32, tap0: vec2<i32>) -> f32 {
    let ic = k / (KH * KW);
    let t = k - ic * (KH * KW);
    let ky = t / KW;
    let iy = tap0.x + i32(ky);
    let ix = tap0.y + i32(t - ky * KW);
    let inside = k < p.cin * KH * KW && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let i = (min(ic, p.cin - 1u) * p.h + u32(clamp(iy, 0, i32(p.h) - 1))) * p.w + u32(clamp(ix, 0, i32(p.w) - 1));
    return select(0.0, x[i], inside);
}

// Where a split-K `tiled` workgroup's slice of y starts, for `store_quad`.
var<private> slice_base: u32;

// Four outputs of channel oc from pixel px on (those past the last skipped): `tiled`'s
// and `tiled128`'s (tiled.wgsl). Split-K slices take the raw sums.
fn store_quad(oc: u32, px: u32, acc: vec4<f32>) {
    let pixels = p.oh * p.ow;
    if oc >= p.cout {
        return;
    }
    if SPLIT_K {
        for (var j = 0u; j < 4u; j++) {
            if px + j < pixels {
                y[slice_base + oc * pixels + px + j] = acc[j];
            }
        }
        return;
    }
    var out = acc;
    for (var j = 0u; j < 4u; j++) {
        if px + j < pixels {
            out[j] += start(oc, oc * pixels + px + j);
        }
    }
    if p.activate != 0u {
        out = activation(out);
    }
    for (var j = 0u; j < 4u; j++) {
        if px + j < pixels {
            y[oc * pixels + px + j] = out[j];
        }
    }
}

// What an invocation stages per step, of both kernels: K wk of the tile's channels
// oc + stride·j (j < 4, as rows), and K pk + pk_stride·j of the output pixel whose first
// tap is input tap0 (as columns). Channels and K past the end are clamped, and
// patch values past the last K are 0, which zeroes those products.
fn stage(oc0: u32, wk: u32, oc: u32, stride: u32, pk: u32, pk_stride: u32, tap0: vec2<i32>) -> Staged {
    let k_len = p.cin * KH * KW;
    let w_first = p.ic_base * KH * KW + min(wk, k_len - 1u);
    var s: Staged;
    for (var j = 0u; j < 4u; j++) {
        let c = p.oc_base + min(oc0 + oc + stride * j, p.cout - 1u);
        s.rows[j] = load_w(c * p.w_cin * KH * KW + w_first);
        s.cols[j] = patch_at(pk + pk_stride * j, tap0);
    }
    return s;
}

// Workgroup: 256 invocations on 64 channels × 64 pixels; invocation li takes channels
// 4·(li / 16).. and pixels 4·(li % 16).. of them. Staging: invocation li loads K
// k0 + li % 16 of the weight rows li / 16 + 16j, and pixel li % 64 of the patch rows
// li / 64 + 4j (j < 4), so neighbours read neighbouring memory; its pixel's position is
// worked out once, and it loads the next step's values before this step's FMAs, so
// their latency hides behind them. Channel tiles vary fastest, as in
// `conv2d_subgroup.wgsl`. Split-K (SPLIT_K): the grid holds every tile once per split,
// and the workgroups of split s sum K s·k_split.. only (k_split is all of K otherwise).
// Workgroups past the end leave together.
@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let pixels = p.oh * p.ow;
    let oc_tiles = (p.cout + TILE - 1u) / TILE;
    let tiles = oc_tiles * ((pixels + TILE - 1u) / TILE);
    let flat = flat_workgroup(wg, num);
    let k_len = p.cin * KH * KW;
    let split = flat / tiles;
    let k_begin = split * p.k_split;
    if k_begin >= k_len {
        return;
    }
    let k_end = min(k_begin + p.k_split, k_len);
    let oc0 = (flat % tiles % oc_tiles) * TILE;
    let px0 = (flat % tiles / oc_tiles) * TILE;
    let q_oc = li / 16u;
    let q_px = li % 16u;
    // The staged pixel's first tap.
    let xp = li % TILE;
    let tap0 = first_tap(px0 + xp);
    // Where li's staged values go: weights at K li % 16, channels li / 16 + 16j (vec4
    // li / 64 + 4j); its pixel at K rows li / 64 + 4j.
    let lk = li % STEP;
    let w_slot = lk * W_ROW4 + li / 64u;
    let w_lane = (li / STEP) % 4u;
    let x_slot = (li / TILE) * 16u + xp / 4u;
    // Channels oc0 + 4·q_oc.., pixels px0 + 4·q_px.. (tiled.wgsl).
    var acc = Block4x4();
    var next = stage(oc0, k_begin + lk, li / STEP, 16u, k_begin + li / TILE, 4u, tap0);
    for (var k0 = k_begin; k0 < k_end; k0 += STEP) {
        for (var j = 0u; j < 4u; j++) {
            ws[w_slot + 4u * j][w_lane] = next.rows[j];
            xs[x_slot + 64u * j][xp % 4u] = next.cols[j];
        }
        workgroupBarrier();
        let k1 = k0 + STEP;
        if k1 < k_end {
            next = stage(oc0, k1 + lk, li / STEP, 16u, k1 + li / TILE, 4u, tap0);
        }
        for (var s = 0u; s < STEP; s++) {
            acc = block4_fma(acc, ws[s * W_ROW4 + q_oc], xs[s * 16u + q_px]);
        }
        workgroupBarrier();
    }
    slice_base = split * p.cout * pixels;
    block4_store(acc, oc0 + 4u * q_oc, px0 + 4u * q_px);
}

// ---- `tiled128`: 128 channels × 128 pixels per workgroup, 8 K per step, 8 × 8 outputs
// per invocation: per K an invocation reads four vec4s of workgroup memory for 64 FMAs
// (`tiled`: two for 16), and the next step's values are loaded into registers before
// this step's FMAs, so their latency hides behind them. Never split: the host takes it
// only for grids that fill a GPU on their own.

// The weight tile's rows (one per K) in vec4s: 32 of channels and one of padding. The 32
// invocations of a GPU subgroup stage 8 K of 4 channels; 132 floats apart, K's rows
// start 4 banks apart, so those writes fall in 32 banks. Patch rows are written along
// their pixels and need no padding.
const WIDE_W_ROW4: u32 = 33u;

var<workgroup> ww: array<vec4<f32>, 264>;
var<workgroup> xw: array<vec4<f32>, 256>;

// Workgroup: 16 × 16 invocations; invocation li takes channels 4·(li / 16) + {0..3} and
// the same 64 further, and pixels 4·(li % 16) + {0..3} and 64 further. Channel tiles
// vary fastest; workgroups past the end leave together.
@compute @workgroup_size(256)
fn tiled128(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let pixels = p.oh * p.ow;
    let oc_tiles = (p.cout + WIDE - 1u) / WIDE;
    let flat = flat_workgroup(wg, num);
    if flat / oc_tiles >= (pixels + WIDE - 1u) / WIDE {
        return;
    }
    let oc0 = (flat % oc_tiles) * WIDE;
    let px0 = (flat / oc_tiles) * WIDE;
    let k_len = p.cin * KH * KW;
    let qr = li / 16u;
    let qc = li % 16u;
    // The staged pixel's first tap.
    let xp = li % WIDE;
    let tap0 = first_tap(px0 + xp);
    // Where li's staged values go: weights at K li % 8, channels li / 8 + 32j (vec4
    // li / 32 + 8j); its pixel at K rows li / 128 + 2j.
    let w_slot = (li % WIDE_STEP) * WIDE_W_ROW4 + li / 32u;
    let w_lane = (li / WIDE_STEP) % 4u;
    let x_slot = (li / WIDE) * 32u + xp / 4u;
    // Channels 4·qr.. and 64 + 4·qr.., pixels 4·qc.. and 64 + 4·qc.. (tiled.wgsl).
    var acc = Block8x8();
    var next = stage(oc0, li % WIDE_STEP, li / WIDE_STEP, 32u, li / WIDE, 2u, tap0);
    for (var k0 = 0u; k0 < k_len; k0 += WIDE_STEP) {
        for (var j = 0u; j < 4u; j++) {
            ww[w_slot + 8u * j][w_lane] = next.rows[j];
            xw[x_slot + 64u * j][xp % 4u] = next.cols[j];
        }
        workgroupBarrier();
        let k1 = k0 + WIDE_STEP;
        if k1 < k_len {
            next = stage(oc0, k1 + li % WIDE_STEP, li / WIDE_STEP, 32u, k1 + li / WIDE, 2u, tap0);
        }
        for (var s = 0u; s < WIDE_STEP; s++) {
            let w_k = s * WIDE_W_ROW4;
            acc = block_fma(acc, ww[w_k + qr], ww[w_k + 16u + qr], xw[s * 32u + qc], xw[s * 32u + 16u + qc]);
        }
        workgroupBarrier();
    }
    block_store(acc, oc0 + 4u * qr, px0 + 4u * qc);
}
