//! OSCAR's per-level hyper-networks: the encoder-side backbone (compressai convs,
//! residual bottleneck blocks and attention blocks), the cosine-similarity vector
//! quantiser, and the decoder-side projection (with transposed convs) back to a latent.
//! The layer sequence is read from the weight names, as PyTorch's Sequential stores it.

use super::blocks::Ctx;
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::ops::conv2d::Activation;
use crate::ops::conv_transpose2d::conv_transpose2d;
use crate::ops::elementwise::{add, binary, unary, Binary, Unary};
use crate::ops::vq::{argmax_cosine, gather_rows};

/// compressai's ResidualBottleneckBlock: x + 1×1 → ReLU → 3×3 → ReLU → 1×1.
fn bottleneck(cx: &mut Ctx, prefix: &str, x: Tensor) -> Result<Tensor> {
    let h = cx.conv(&format!("{prefix}.layers.0"), x, 1, Activation::Relu)?;
    let h = cx.conv(&format!("{prefix}.layers.2"), h, 1, Activation::Relu)?;
    let h = cx.conv(&format!("{prefix}.layers.4"), h, 1, Activation::None)?;
    add(cx.g, x, h)
}

/// compressai's ResidualUnit inside AttentionBlock: ReLU(x + 1×1 → ReLU → 3×3 → ReLU → 1×1).
fn residual_unit(cx: &mut Ctx, prefix: &str, x: Tensor) -> Result<Tensor> {
    let h = cx.conv(&format!("{prefix}.conv.0"), x, 1, Activation::Relu)?;
    let h = cx.conv(&format!("{prefix}.conv.2"), h, 1, Activation::Relu)?;
    let h = cx.conv(&format!("{prefix}.conv.4"), h, 1, Activation::None)?;
    let sum = add(cx.g, x, h)?;
    unary(cx.g, sum, Unary::Relu)
}

/// compressai's AttentionBlock (a gate, not softmax attention): x + a · sigmoid(b).
fn attention_block(cx: &mut Ctx, prefix: &str, x: Tensor) -> Result<Tensor> {
    let mut a = x;
    let mut b = x;
    for i in 0..3 {
        a = residual_unit(cx, &format!("{prefix}.conv_a.{i}"), a)?;
        b = residual_unit(cx, &format!("{prefix}.conv_b.{i}"), b)?;
    }
    let b = cx.conv(&format!("{prefix}.conv_b.3"), b, 1, Activation::None)?;
    let gated = binary(cx.g, a, b, Binary::Gate)?;
    add(cx.g, x, gated)
}

/// Runs `prefix.0`, `prefix.1`, … as stored. A plain `prefix.N.weight` of kernel 5 is
/// compressai's stride-2 conv (encoder side) or deconv (decoder side); kernel 1 is a 1×1.
fn sequential(cx: &mut Ctx, prefix: &str, mut x: Tensor, upsampling: bool) -> Result<Tensor> {
    for i in 0.. {
        let layer = format!("{prefix}.{i}");
        if cx.w.contains(&format!("{layer}.weight")) {
            let k = cx.w.conv_kernel(&format!("{layer}.weight"))?;
            x = match (k, upsampling) {
                (1, _) => cx.conv(&layer, x, 1, Activation::None)?,
                (_, false) => cx.conv(&layer, x, 2, Activation::None)?,
                (_, true) => {
                    let weight = cx.w.tensor(cx.g, &format!("{layer}.weight"))?;
                    let bias = cx.w.tensor(cx.g, &format!("{layer}.bias"))?;
                    conv_transpose2d(cx.g, x, weight, bias, 2, k / 2, 1)?
                }
            };
        } else if cx.w.contains(&format!("{layer}.layers.0.weight")) {
            x = bottleneck(cx, &layer, x)?;
        } else if cx.w.contains(&format!("{layer}.conv_a.0.conv.0.weight")) {
            x = attention_block(cx, &layer, x)?;
        } else if i == 0 {
            return Err(Error::BadModel(format!("no layers under '{prefix}'")));
        } else {
            break;
        }
        cx.g.tap(
            format!("{}.{i}", prefix.rsplit('.').next().unwrap_or(prefix)),
            x,
        );
    }
    Ok(x)
}

/// Level `level`'s backbone: latents [4, h, w] → [M, h/s, w/s].
pub fn backbone(cx: &mut Ctx, level: usize, latents: Tensor) -> Result<Tensor> {
    sequential(cx, &format!("hyper.{level}.backbone"), latents, false)
}

/// Token indices \[n\] (u32) of a backbone output, by cosine similarity to the codebook.
pub fn quantize(cx: &mut Ctx, level: usize, features: Tensor) -> Result<Tensor> {
    let project_in = format!("hyper.{level}.quantizer.project_in");
    let projected = if cx.w.contains(&format!("{project_in}.weight")) {
        cx.linear_from_image(&project_in, features)?
    } else {
        cx.to_tokens(features)?
    };
    let codebook =
        cx.w.tensor(cx.g, &format!("hyper.{level}.quantizer.codebook"))?;
    argmax_cosine(cx.g, projected, codebook)
}

/// Codebook rows of `indices`, through project_out, as a [M, h, w] map.
pub fn dequantize(
    cx: &mut Ctx,
    level: usize,
    indices: Tensor,
    h: usize,
    w: usize,
) -> Result<Tensor> {
    let codebook =
        cx.w.tensor(cx.g, &format!("hyper.{level}.quantizer.codebook"))?;
    let rows = gather_rows(cx.g, codebook, indices)?;
    let project_out = format!("hyper.{level}.quantizer.project_out");
    if cx.w.contains(&format!("{project_out}.weight")) {
        cx.linear_to_image(&project_out, rows, h, w)
    } else {
        cx.to_image(rows, h, w)
    }
}

/// Level `level`'s projection network: [M, h, w] → z_hat [4, h·s, w·s].
pub fn project(cx: &mut Ctx, level: usize, quantized: Tensor) -> Result<Tensor> {
    sequential(cx, &format!("hyper.{level}.proj"), quantized, true)
}
