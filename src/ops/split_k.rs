//! Split-K for the portable `tiled` and `narrow` kernels: a product with too few output
//! tiles to fill
//! a GPU (the UNet's 8×8 and 4×4 levels: a 1280-channel convolution is 20 tiles of
//! 64 × 64, on a GPU of 100-odd compute units) has each tile's K cut into runs, one
//! workgroup per tile and run, each storing its partial sums as one slice of a
//! [splits, ..] buffer; `sum_into` then adds the slices, the bias and the activation.

use bytemuck::{Pod, Zeroable};

use super::conv2d::Activation;
use super::{is_f16, u32_of};
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::{DType, Graph, Tensor};

/// Workgroups of a grid that fills a GPU of 100-odd compute units, two or three of
/// them at a time on each.
pub(crate) const FILL_WORKGROUPS: u64 = 256;

/// K a split sums at least: its slice, written and read back once, then costs at most
/// 8 bytes of memory traffic per 256 FMAs of each output.
const MIN_SPLIT_K: usize = 256;

const WORKGROUP: u64 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    len: u32,
    splits: u32,
    inner: u32,
    count: u32,
    has_bias: u32,
}

/// How a product of `tiles` workgroups over `k` is split: the number of splits and the
/// K of each, a multiple of the kernel's `step` so that every split but the last stages
/// whole steps. `(1, k)`, no split, where the tiles fill a GPU on their own (half of
/// [`FILL_WORKGROUPS`] or more) or K is too short to share.
pub(crate) fn plan(tiles: u64, k: usize, step: usize) -> (usize, usize) {
    let splits = (FILL_WORKGROUPS / tiles.max(1)).min((k / MIN_SPLIT_K) as u64) as usize;
    if splits < 2 {
        return (1, k);
    }
    let per_split = k.div_ceil(splits).next_multiple_of(step);
    (k.div_ceil(per_split), per_split)
}

/// `y` ← act(Σ_s `part[s]` + bias), `part` holding as many slices of y's size as it has
/// entries in its first dimension. `bias` (f32 or f16) is `(b, inner)`: element i takes
/// b[(i / inner) % len(b)], one per column of a Linear layer with `inner` 1, one per
/// channel of a convolution with `inner` its pixels.
pub fn sum_into(
    g: &mut Graph,
    part: Tensor,
    bias: Option<(Tensor, usize)>,
    act: Activation,
    y: Tensor,
) -> Result<()> {
    let (len, splits) = (g.len(y), g.shape(part).first().copied().unwrap_or(0));
    let bias_ok = bias.is_none_or(|(b, inner)| {
        inner > 0 && g.len(b) > 0 && g.dtype(b) != DType::U32 && g.shape(b).len() == 1
    });
    if splits == 0
        || len == 0
        || g.len(part) != splits * len
        || g.dtype(part) != DType::F32
        || g.dtype(y) != DType::F32
        || !bias_ok
    {
        return Err(Error::Shape(format!(
            "split-K sum: slices {:?} into {:?} with bias {:?} disagree",
            g.shape(part),
            g.shape(y),
            bias.map(|(b, inner)| (g.shape(b).to_vec(), inner))
        )));
    }
    let (inner, count, f16) = match bias {
        Some((b, inner)) => (inner, g.len(b), is_f16(g.dtype(b))),
        None => (1, 1, 0.0),
    };
    let params = Params {
        len: u32_of(len, "split-K outputs")?,
        splits: u32_of(splits, "splits")?,
        inner: u32_of(inner, "split-K bias stride")?,
        count: u32_of(count, "split-K biases")?,
        has_bias: bias.is_some() as u32,
    };
    let key = KernelKey::new("split_k", "sum")
        .with("W_F16", f16)
        .with("ACT", act.code());
    let part_view = g.view(part)?;
    let bias_view = match bias {
        Some((b, _)) => g.view(b)?,
        None => part_view,
    };
    let views = vec![part_view, bias_view, g.view(y)?];
    let grid = g.grid((len as u64).div_ceil(4 * WORKGROUP))?;
    g.dispatch(
        key,
        bytemuck::bytes_of(&params),
        views,
        grid,
        (splits * len) as u64,
    );
    Ok(())
}

/// CPU reference of [`sum_into`]: `part` holds `splits` slices; `bias` is `(b, inner)`.
pub fn reference(
    part: &[f32],
    splits: usize,
    bias: Option<(&[f32], usize)>,
    act: Activation,
) -> Vec<f32> {
    let len = part.len() / splits;
    (0..len)
        .map(|i| {
            let total: f64 = (0..splits).map(|s| part[s * len + i] as f64).sum();
            let b = bias.map_or(0.0, |(b, inner)| b[(i / inner) % b.len()] as f64);
            act.apply((total + b) as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every split but the last stages whole steps, the last is not empty, and together
    /// they cover K once; grids that fill a GPU, and short K, are not split.
    #[test]
    fn plans_cover_k_in_whole_steps() {
        // A 1280-channel 3×3 convolution at the UNet's 8×8 level: 20 tiles of 64 × 64.
        assert_eq!(plan(20, 11520, 16), (12, 960));
        assert_eq!(plan(128, 4096, 16), (2, 2048));
        assert_eq!(plan(129, 1 << 20, 16), (1, 1 << 20));
        assert_eq!(plan(1, 511, 16), (1, 511));
        for tiles in [1, 2, 3, 7, 20, 40, 80, 127] {
            for k in [512, 513, 1000, 1800, 2880, 11520, 23040] {
                let (splits, per_split) = plan(tiles, k, 16);
                assert!(splits >= 2, "{tiles} tiles, k {k}");
                assert!(per_split % 16 == 0 && per_split >= MIN_SPLIT_K);
                assert!((splits - 1) * per_split < k && splits * per_split >= k);
                assert!(tiles * splits as u64 <= FILL_WORKGROUPS);
            }
        }
    }
}
