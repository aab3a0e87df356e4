//! Multi-head scaled dot-product attention, scores and softmax in f32, never an
//! nq × nk buffer. Two ways:
//! - [`flash`]: an online softmax (flash-attention style) in one kernel. Adapters with
//!   8-lane subgroups (lavapipe) get `attention_subgroup.wgsl`, others the portable
//!   kernels of `attention.wgsl`: `tiled` (keys staged in workgroup memory) for heads of
//!   up to 64 dims, `main` otherwise. Queries and keys past the binding limit are split
//!   into row windows; key windows run in order, carrying the softmax state between
//!   dispatches. On CPU adapters key windows are also kept short enough for lavapipe's
//!   loop cap (see `LOOP_BUDGET`).
//! - [`blocked`], for one wide head (the VAE's 512 channels): per block of queries,
//!   scores = q·kᵀ and out = softmax(scores)·v as two matrix products. The flash kernel
//!   holds 64 output channels at a time and so computes each score once per 64
//!   channels; the products compute it once, at the matmul kernel's speed. A block's
//!   scores take at most `SCORES_BYTES`: memory stays linear in the keys.

use bytemuck::{Pod, Zeroable};

use super::{channel_chunks, matmul, softmax, subgroups_of_8, transpose, u32_of, LOOP_BUDGET};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelKey};
use crate::graph::{DType, Graph, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    nq: u32,
    nk: u32,
    heads: u32,
    d: u32,
    row: u32,
    chunks: u32,
    q0: u32,
    flags: u32,
    scale: f32,
}

const FIRST: u32 = 1;
const LAST: u32 = 2;
/// Head-dim elements per output chunk, in both kernels.
const CHUNK: usize = 64;

/// Single heads at least this wide go through [`blocked`] (when its blocks are large
/// enough to keep the matmul kernel busy).
const WIDE_HEAD: usize = 128;
/// Bytes of one block's scores (its probabilities take as many again).
const SCORES_BYTES: usize = 64 << 20;
/// Fewest query rows per block [`blocked`] takes (fewer only when there are fewer
/// queries): past ~32k keys, where [`SCORES_BYTES`] would hold smaller blocks, [`flash`]
/// runs instead, as it did for every head before (blocked is unmeasured there).
const MIN_BLOCK: usize = 512;

/// `q` [nq, heads·d], `k` and `v` [nk, heads·d] → [nq, heads·d]:
/// softmax(q·kᵀ/√d)·v for each head's slice of the channels.
pub fn attention(g: &mut Graph, q: Tensor, k: Tensor, v: Tensor, heads: usize) -> Result<Tensor> {
    let (nq, nk, c) = check_shapes(g, q, k, v, heads)?;
    // The products bind k and vᵀ whole.
    let fits = g.bytes(k) <= g.gpu.max_binding();
    if heads == 1 && c >= WIDE_HEAD && fits && block_rows(nq, nk) >= nq.min(MIN_BLOCK) {
        return blocked(g, q, k, v);
    }
    flash(g, q, k, v, heads)
}

/// `(nq, nk, channels)` of valid attention operands.
fn check_shapes(
    g: &Graph,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: usize,
) -> Result<(usize, usize, usize)> {
    let (&[nq, c], &[nk, kc]) = (g.shape(q), g.shape(k)) else {
        return Err(Error::Shape(format!(
            "attention needs q [nq, c] and k [nk, c], got {:?} and {:?}",
            g.shape(q),
            g.shape(k)
        )));
    };
    let all_f32 = [q, k, v].iter().all(|&t| g.dtype(t) == DType::F32);
    if kc != c
        || g.shape(v) != [nk, c]
        || heads == 0
        || c % heads != 0
        || c == 0
        || nq == 0
        || nk == 0
        || !all_f32
    {
        return Err(Error::Shape(format!(
            "attention: q {:?}, k {:?}, v {:?} with {heads} heads disagree",
            g.shape(q),
            g.shape(k),
            g.shape(v)
        )));
    }
    Ok((nq, nk, c))
}

/// Query rows per block of [`blocked`]: as many as [`SCORES_BYTES`] of scores allow.
fn block_rows(nq: usize, nk: usize) -> usize {
    (SCORES_BYTES / (4 * nk)).clamp(1, nq)
}

/// Single-head attention as blocked matrix products (see the module doc): `q` [nq, d],
/// `k` and `v` [nk, d] → [nq, d].
pub fn blocked(g: &mut Graph, q: Tensor, k: Tensor, v: Tensor) -> Result<Tensor> {
    let (nq, nk, d) = check_shapes(g, q, k, v, 1)?;
    let y = g.intermediate(&[nq, d], DType::F32);
    let vt = transpose::transpose(g, v)?;
    // Blocks start at aligned rows of q and y.
    let align = g.gpu.limits.min_storage_buffer_offset_alignment as usize;
    let step = align / super::gcd(4 * d as u64, align as u64) as usize;
    let fit = block_rows(nq, nk);
    let rows = if fit >= nq {
        nq
    } else {
        (fit / step * step).max(step)
    };
    let scale = 1.0 / (d as f32).sqrt();
    for start in (0..nq).step_by(rows) {
        let len = rows.min(nq - start);
        let qb = g.slice_rows(q, start, len)?;
        let scores = g.intermediate(&[len, nk], DType::F32);
        matmul::linear_into(g, qb, k, None, scores)?;
        let probs = softmax::softmax(g, scores, scale)?;
        let yb = g.slice_rows(y, start, len)?;
        matmul::linear_into(g, probs, vt, None, yb)?;
    }
    Ok(y)
}

/// Attention by the online-softmax kernel (see the module doc).
pub fn flash(g: &mut Graph, q: Tensor, k: Tensor, v: Tensor, heads: usize) -> Result<Tensor> {
    let (nq, nk, c) = check_shapes(g, q, k, v, heads)?;
    let d = c / heads;
    let y = g.intermediate(&[nq, c], DType::F32);
    let fast = broadcast_kernel(g.gpu, d);
    // GPUs' kernel: heads of up to one chunk in vec4s, 64 queries per workgroup.
    let tiled = !fast && !subgroups_of_8(g.gpu) && d.is_multiple_of(4) && d <= CHUNK;
    let (key, chunks, row) = if fast {
        let d4c = (d / 4).min(CHUNK / 4);
        let chunks = d.div_ceil(CHUNK);
        let key = KernelKey::new("attention_subgroup", "main")
            .with("D4C", d4c as f64)
            .with("MULTI", (chunks > 1) as u32 as f64);
        (key, chunks, c / 4)
    } else if tiled {
        (
            KernelKey::new("attention", "tiled").with("D4", (d / 4) as f64),
            1,
            c,
        )
    } else {
        (KernelKey::new("attention", "main"), d.div_ceil(CHUNK), c)
    };
    // (max, sum) per query, head and chunk; read back only across key windows.
    let state = g.intermediate(&[nq * heads * chunks * 2], DType::F32);
    let state_view = g.view(state)?;
    let row_bytes = 4 * c as u64;
    let q_runs = channel_chunks(g.gpu, nq, row_bytes)?;
    // Cut windows must start aligned like the binding-limit ones.
    let align = g.gpu.limits.min_storage_buffer_offset_alignment as usize;
    let step = align / super::gcd(row_bytes, align as u64) as usize;
    let max_keys = (keys_per_dispatch(g.gpu, fast, d, chunks) / step * step).max(step);
    let k_runs: Vec<_> = channel_chunks(g.gpu, nk, row_bytes)?
        .into_iter()
        .flat_map(|run| {
            run.clone()
                .step_by(max_keys)
                .map(move |s| s..(s + max_keys).min(run.end))
        })
        .collect();
    for qr in &q_runs {
        let groups = if fast || tiled {
            // The subgroup kernel: 64 lanes × 8 queries; the tiled one: 64 queries.
            let queries_per_group = if fast { 512 } else { 64 };
            heads as u64 * (qr.len() as u64).div_ceil(queries_per_group)
        } else {
            (qr.len() as u64 * heads as u64).div_ceil(64)
        };
        let grid = g.grid(groups)?;
        for (w, kr) in k_runs.iter().enumerate() {
            let flags =
                if w == 0 { FIRST } else { 0 } | if w + 1 == k_runs.len() { LAST } else { 0 };
            let params = Params {
                nq: qr.len() as u32,
                nk: u32_of(kr.len(), "attention keys")?,
                heads: u32_of(heads, "attention heads")?,
                d: d as u32,
                row: u32_of(row, "attention channels")?,
                chunks: chunks as u32,
                q0: u32_of(qr.start, "attention queries")?,
                flags,
                scale: 1.0 / (d as f32).sqrt(),
            };
            let views = vec![
                g.slab(q, qr)?,
                g.slab(k, kr)?,
                g.slab(v, kr)?,
                g.slab(y, qr)?,
                state_view,
            ];
            let flops = 4 * (qr.len() * kr.len() * c) as u64;
            g.dispatch(key.clone(), bytemuck::bytes_of(&params), views, grid, flops);
        }
    }
    Ok(y)
}

/// Whether the subgroup kernel applies: 8-lane subgroups, vec4 head dims, and head dims
/// that are one chunk or whole chunks.
fn broadcast_kernel(gpu: &Gpu, d: usize) -> bool {
    subgroups_of_8(gpu) && d.is_multiple_of(4) && (d <= CHUNK || d.is_multiple_of(CHUNK))
}

/// Keys one dispatch may loop over within [`LOOP_BUDGET`] on CPU adapters. A loop of n
/// trips counts n + 1 there (the exit test is a trip). The subgroup kernel loops once per
/// block of 8 keys per output chunk, plus over the query chunks when there are several;
/// the portable one once per key and per head-dim element.
fn keys_per_dispatch(gpu: &Gpu, fast: bool, d: usize, chunks: usize) -> usize {
    if gpu.info.device_type != wgpu::DeviceType::Cpu {
        return usize::MAX;
    }
    let per_chunk = LOOP_BUDGET / chunks - 1;
    let keys = if fast {
        let per_block = 1 + if chunks > 1 { chunks + 1 } else { 0 };
        8 * (per_chunk / per_block)
    } else {
        per_chunk.saturating_sub(2 * (CHUNK + 1)) / (3 + d + CHUNK)
    };
    keys.max(1)
}

/// CPU reference: `q` [nq, heads·d], `k` and `v` [nk, heads·d].
pub fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    nq: usize,
    nk: usize,
    heads: usize,
    d: usize,
) -> Vec<f32> {
    let c = heads * d;
    let scale = 1.0 / (d as f64).sqrt();
    let mut y = vec![0.0; nq * c];
    let mut scores = vec![0.0f64; nk];
    for i in 0..nq {
        for h in 0..heads {
            let qi = &q[i * c + h * d..i * c + h * d + d];
            for (j, s) in scores.iter_mut().enumerate() {
                let kj = &k[j * c + h * d..j * c + h * d + d];
                *s = qi
                    .iter()
                    .zip(kj)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    * scale;
            }
            let max = scores.iter().fold(f64::MIN, |m, &s| m.max(s));
            let sum: f64 = scores.iter().map(|&s| (s - max).exp()).sum();
            for e in 0..d {
                let acc: f64 = scores
                    .iter()
                    .enumerate()
                    .map(|(j, &s)| (s - max).exp() * v[j * c + h * d + e] as f64)
                    .sum();
                y[i * c + h * d + e] = (acc / sum) as f32;
            }
        }
    }
    y
}
