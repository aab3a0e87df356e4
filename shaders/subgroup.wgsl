// Prepended (after common.wgsl) to the `*_subgroup` shaders, which run only where the
// adapter's subgroups are exactly 8 lanes wide (lavapipe): sharing a value across the
// subgroup costs about one instruction there, where any memory load costs a per-lane loop.

// Lane j's `v` to every lane: lanes 0..3 in lo, 4..7 in hi.
struct Cols {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn bcast(v: f32) -> Cols {
    return Cols(
        vec4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)),
        vec4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u)),
    );
}

// Storage seen as vec2<u64> instead of vec4<f32> / vec4<u32> (same 16 bytes, same
// indices). lavapipe loads and stores every component of every lane in a loop with a
// bounds check each, so two 64-bit components cost less than four 32-bit ones: on 2 cores
// of the Intel Xeon, loads of cached data 0.92 → 0.64 ns per float, stores 1.08 → 0.82.
fn u32x4(w: vec2<u64>) -> vec4<u32> {
    let lo = vec2<u32>(w & vec2<u64>(0xfffffffflu));
    let hi = vec2<u32>(w >> vec2<u32>(32u));
    return vec4<u32>(lo.x, hi.x, lo.y, hi.y);
}

fn f32x4(w: vec2<u64>) -> vec4<f32> {
    return bitcast<vec4<f32>>(u32x4(w));
}

fn u64x2(v: vec4<f32>) -> vec2<u64> {
    let bits = bitcast<vec4<u32>>(v);
    return vec2<u64>(bits.xz) | (vec2<u64>(bits.yw) << vec2<u32>(32u));
}
