// Prepended to every op shader (see `ops::shader_source`).

// Flat workgroup index of a grid folded past 65535 workgroups per dimension.
fn flat_workgroup(wg: vec3<u32>, num: vec3<u32>) -> u32 {
    return wg.x + num.x * (wg.y + num.y * wg.z);
}

// Weights (and their biases and norm gains) are f32 or packed f16, two halves per u32
// word, chosen per pipeline; either way the shaders compute in f32.
override W_F16: bool = false;

// Index of the word that holds weight element `i`.
fn word_of(i: u32) -> u32 {
    return select(i, i >> 1u, W_F16);
}

// Weight element `i`, given the word that holds it.
fn widen(word: u32, i: u32) -> f32 {
    if W_F16 {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, (i & 1u) == 1u);
    }
    return bitcast<f32>(word);
}
