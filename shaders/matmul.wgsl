// y[b, r, c] = Σ_k x[b, r, k] · w[b, c, k] (+ bias[c]): a Linear layer (w [m, k] in
// PyTorch layout, f32 or packed f16) or, with per-batch strides, a batched matmul whose
// right operand was transposed to [m, k]. The portable kernel: each invocation computes
// a 4-row × 4-column tile in registers; `matmul_subgroup.wgsl` is the fast path on
// adapters with 8-wide subgroups (lavapipe).

struct Params {
    rows: u32,      // rows of x (and y) per batch in this window
    k: u32,
    m: u32,
    batches: u32,
    x_batch: u32,   // elements between batches of x, w and y (w: 0 for a Linear)
    w_batch: u32,
    y_batch: u32,
    bias_kind: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn load_w(i: u32) -> f32 {
    return widen(wt[word_of(i)], i);
}

fn load_b(i: u32) -> f32 {
    return widen(bias[word_of(i)], i);
}

// Workgroup: 16 rows × 64 columns; invocation li takes rows 4·(li / 16).. and
// columns 4·(li % 16).. of it. Out-of-range rows and columns are clamped on load and
// skipped on store.
@compute @workgroup_size(64)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let col_blocks = (p.m + 63u) / 64u;
    let row_blocks = (p.rows + 15u) / 16u;
    let flat = flat_workgroup(wg, num);
    let b = flat / (row_blocks * col_blocks);
    if b >= p.batches {
        return;
    }
    let rest = flat % (row_blocks * col_blocks);
    let r0 = (rest / col_blocks) * 16u + (li / 16u) * 4u;
    let c0 = (rest % col_blocks) * 64u + (li % 16u) * 4u;
    let xb = b * p.x_batch;
    let wb = b * p.w_batch;
    var xr: vec4<u32>;
    var wr: vec4<u32>;
    for (var i = 0u; i < 4u; i++) {
        xr[i] = xb + min(r0 + i, p.rows - 1u) * p.k;
        wr[i] = wb + min(c0 + i, p.m - 1u) * p.k;
    }
    // acc[i][j]: row r0 + i, column c0 + j.
    var a0 = vec4<f32>();
    var a1 = vec4<f32>();
    var a2 = vec4<f32>();
    var a3 = vec4<f32>();
    for (var kk = 0u; kk < p.k; kk++) {
        let wv = vec4<f32>(load_w(wr.x + kk), load_w(wr.y + kk), load_w(wr.z + kk), load_w(wr.w + kk));
        a0 = fma(vec4<f32>(x[xr.x + kk]), wv, a0);
        a1 = fma(vec4<f32>(x[xr.y + kk]), wv, a1);
        a2 = fma(vec4<f32>(x[xr.z + kk]), wv, a2);
        a3 = fma(vec4<f32>(x[xr.w + kk]), wv, a3);
    }
    let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + i;
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + j;
            if r < p.rows && c < p.m {
                var v = acc[i][j];
                if p.bias_kind != 0u {
                    v += load_b(c);
                }
                y[b * p.y_batch + r * p.m + c] = v;
            }
        }
    }
}
