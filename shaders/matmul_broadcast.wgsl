// Prepended (after common.wgsl and subgroup.wgsl) to the two broadcast matmul shaders
// that tools/unroll_matmul.py writes, matmul_subgroup.wgsl and
// matmul_columns_subgroup.wgsl: their parameters, accumulate step and tile origin.

// x (and the bias) packed f16: the weight rows of a transposed Linear layer
// (matmul_subgroup's Y_T; the column tiles take f32 only).
override X_F16: bool = false;

// src/ops/matmul.rs's `Params`, less k_split, which only the portable kernels read.
struct Params {
    @align(16)
    rows: u32,
    k: u32,
    m: u32,
    batches: u32,
    x_batch: u32,
    w_batch: u32,
    y_batch: u32,
    // 0: none, 1: one per column (Linear), 2: one per row (a 1×1 convolution's channels).
    bias_kind: u32,
    // Elements of x, w and y before batch 0: a window that starts at the aligned offset
    // below its first row. Multiples of 4 (the host's rows are whole vec4s).
    x_offset: u32,
    w_offset: u32,
    y_offset: u32,
}


// Eight k of one column quad: acc + Σ x[k] · g[k] in one chain (x: xa then xb).
fn chain(acc: vec4<f32>, xa: vec4<f32>, xb: vec4<f32>, g: array<vec4<f32>, 8>) -> vec4<f32> {
    var a = fma(vec4<f32>(xa.x), g[0], acc);
    a = fma(vec4<f32>(xa.y), g[1], a);
    a = fma(vec4<f32>(xa.z), g[2], a);
    a = fma(vec4<f32>(xa.w), g[3], a);
    a = fma(vec4<f32>(xb.x), g[4], a);
    a = fma(vec4<f32>(xb.y), g[5], a);
    a = fma(vec4<f32>(xb.z), g[6], a);
    return fma(vec4<f32>(xb.w), g[7], a);
}

// Where a workgroup's tile of `per_group` rows × `cols` columns starts: the lane's first
// row r0 (the tile's first row plus `li`; the column tiles, whose lanes share the rows,
// pass 0) and the tile's first column c0 in batch b, whose x, weights and y begin at xb,
// wb (in vec4s) and yb. `valid` is false for workgroups past the last batch: whole
// workgroups leave together, so the subgroup stays uniform.
struct Origin {
    valid: bool,
    r0: u32,
    c0: u32,
    xb: u32,
    wb: u32,
    yb: u32,
}

fn origin(wg: vec3<u32>, num: vec3<u32>, li: u32, per_group: u32, cols: u32) -> Origin {
    let col_blocks = (p.m + cols - 1u) / cols;
    let row_blocks = (p.rows + per_group - 1u) / per_group;
    let flat = flat_workgroup(wg, num);
    let b = flat / (row_blocks * col_blocks);
    let rest = flat % (row_blocks * col_blocks);
    return Origin(b < p.batches, (rest / col_blocks) * per_group + li, (rest % col_blocks) * cols,
        (p.x_offset + b * p.x_batch) / select(4u, 8u, X_F16), (p.w_offset + b * p.w_batch) / select(4u, 8u, W_F16),
        p.y_offset + b * p.y_batch);
}
