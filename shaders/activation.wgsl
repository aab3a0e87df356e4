// The activation fused into a kernel's store, chosen per pipeline: the 2-D convolutions'
// and the sum of their split-K slices (split_k.wgsl).

override ACT: u32 = 0u; // 0 none, 1 ReLU, 2 SiLU

fn activation(v: vec4<f32>) -> vec4<f32> {
    switch ACT {
        case 1u: { return max(v, vec4<f32>(0.0)); }
        case 2u: { return v / (vec4<f32>(1.0) + exp(-v)); }
        default: { return v; }
    }
}
