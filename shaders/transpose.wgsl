// y[b, j, i] = x[b, i, j] for x [batches, A, B]. A dispatch covers the tile of x rows
// [a0, a0 + rows) × columns [b0, b0 + cols); x is bound from row a0 and y from row b0,
// so tensors larger than one storage binding are transposed tile by tile.

struct Params {
    @align(16)
    rows: u32,     // x rows in this tile
    cols: u32,     // x columns (y rows) in this tile
    a: u32,        // x rows of the whole tensor = y row length
    b: u32,        // x row length
    a0: u32,       // first x row of the tile: its column offset in the y window
    b0: u32,       // first x column of the tile: its column offset in the x window
    batches: u32,
    batch_len: u32, // a · b
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    load_params(num);
    let gid = flat_workgroup(wg, num) * 64u + li;
    let per_batch = p.rows * p.cols;
    let bi = gid / per_batch;
    if bi >= p.batches {
        return;
    }
    let e = gid % per_batch;
    let i = e / p.cols;
    let j = e % p.cols;
    let base = bi * p.batch_len;
    y[base + j * p.a + p.a0 + i] = x[base + i * p.b + p.b0 + j];
}
