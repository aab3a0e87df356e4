// Prepended to every op shader (see `ops::shader_source`).

// Flat workgroup index of a grid folded past 65535 workgroups per dimension.
fn flat_workgroup(wg: vec3<u32>, num: vec3<u32>) -> u32 {
    return wg.x + num.x * (wg.y + num.y * wg.z);
}
