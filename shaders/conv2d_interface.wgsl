// What both 2-D convolution shaders (`conv2d.wgsl`, `conv2d_subgroup.wgsl`) share with
// the host (`src/ops/conv2d.rs`): the parameters, the bindings, the accumulation and
// split-K overrides and the weight and bias loads. Prepended to those two only (the
// activation, ACT, comes from activation.wgsl).

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
    pad_t: u32,
    pad_l: u32,
    w_cin: u32,      // input channels of the whole weight
    oc_base: u32,    // first output channel of the window
    ic_base: u32,    // first input channel of the window
    activate: u32,   // last input window: apply ACT
    k_split: u32,    // K per split of a split-K `tiled` (else all of K; see SPLIT_K)
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Add to what earlier input windows left in y instead of starting from the bias: every
// window but the first of a convolution too large for one binding. An override, so that
// the usual kernel carries no code for it: each load is a per-lane loop on lavapipe, and
// such loads at every store made up much of the time Mesa takes to compile `main3` and
// `main3s2`.
override ACCUMULATE: bool = false;
// Split-K (`tiled` only): workgroups of split s sum K s·k_split.. and store their raw
// sums, without bias or activation, as slice s of y (binding a [splits, cout, pixels]
// buffer), which split_k.wgsl then adds up.
override SPLIT_K: bool = false;

fn load_w(i: u32) -> f32 {
    return widen(wt[word_of(i)], i);
}

fn load_b(i: u32) -> f32 {
    return widen(bias[word_of(i)], i);
}
