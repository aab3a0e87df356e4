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
