//! diffusers' UNet2DConditionModel in the SD-2.1 family: CrossAttn down/up blocks,
//! Transformer2DModel with linear (or 1×1 conv) projections, GEGLU feed-forward,
//! sinusoidal timestep embedding and skip concatenation. Sizes come from the config and
//! the weights; nothing is fixed to SD-2.1.

use super::blocks::Ctx;
use super::config::UnetConfig;
use crate::error::Result;
use crate::graph::Tensor;
use crate::ops::concat::concat_channels;
use crate::ops::conv2d::Activation;
use crate::ops::elementwise::{add, geglu};
use crate::ops::resize::upsample_nearest2x;
use crate::ops::timestep::timestep_embedding;

/// Transformer2DModel's GroupNorm and the transformer blocks' LayerNorm epsilons.
const TRANSFORMER_GN_EPS: f32 = 1e-6;
const LAYER_NORM_EPS: f32 = 1e-5;

/// diffusers' BasicTransformerBlock: self-attention, cross-attention, GEGLU, each
/// pre-normed and residual.
fn basic_block(
    cx: &mut Ctx,
    prefix: &str,
    x: Tensor,
    context: Tensor,
    heads: usize,
) -> Result<Tensor> {
    let h = cx.layer_norm(&format!("{prefix}.norm1"), x, LAYER_NORM_EPS)?;
    let h = cx.attention(&format!("{prefix}.attn1"), h, None, heads)?;
    let x = add(cx.g, x, h)?;
    let h = cx.layer_norm(&format!("{prefix}.norm2"), x, LAYER_NORM_EPS)?;
    let h = cx.attention(&format!("{prefix}.attn2"), h, Some(context), heads)?;
    let x = add(cx.g, x, h)?;
    let h = cx.layer_norm(&format!("{prefix}.norm3"), x, LAYER_NORM_EPS)?;
    let h = cx.linear(&format!("{prefix}.ff.net.0.proj"), h)?;
    let h = geglu(cx.g, h)?;
    let h = cx.linear(&format!("{prefix}.ff.net.2"), h)?;
    add(cx.g, x, h)
}

/// diffusers' Transformer2DModel over a [c, h, w] feature map.
fn transformer(
    cx: &mut Ctx,
    cfg: &UnetConfig,
    prefix: &str,
    x: Tensor,
    context: Tensor,
    heads: usize,
    layers: usize,
) -> Result<Tensor> {
    let &[_, h, w] = cx.g.shape(x) else {
        unreachable!("image tensors are [c, h, w]")
    };
    let n = cx.group_norm(
        &format!("{prefix}.norm"),
        x,
        cfg.norm_num_groups,
        TRANSFORMER_GN_EPS,
        false,
    )?;
    let mut tokens = if cfg.use_linear_projection {
        cx.linear_from_image(&format!("{prefix}.proj_in"), n)?
    } else {
        let p = cx.conv(&format!("{prefix}.proj_in"), n, 1, Activation::None)?;
        cx.to_tokens(p)?
    };
    for b in 0..layers {
        tokens = basic_block(
            cx,
            &format!("{prefix}.transformer_blocks.{b}"),
            tokens,
            context,
            heads,
        )?;
    }
    let out = if cfg.use_linear_projection {
        cx.linear_to_image(&format!("{prefix}.proj_out"), tokens, h, w)?
    } else {
        let img = cx.to_image(tokens, h, w)?;
        cx.conv(&format!("{prefix}.proj_out"), img, 1, Activation::None)?
    };
    add(cx.g, out, x)
}

fn has_attention(block_type: &str) -> bool {
    block_type.starts_with("CrossAttn")
}

/// One UNet pass: `sample` [in, h, w], timestep `t`, `context` [tokens, cross_dim]
/// → the model output (v for OSCAR) [out, h, w].
pub fn forward(
    cx: &mut Ctx,
    cfg: &UnetConfig,
    sample: Tensor,
    t: f32,
    context: Tensor,
) -> Result<Tensor> {
    let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps);
    let c0 = cfg.block_out_channels[0];
    let t_emb = timestep_embedding(cx.g, t, c0, cfg.flip_sin_to_cos, cfg.freq_shift)?;
    let t_emb = cx.g.reshape(t_emb, &[1, c0])?;
    let temb = cx.linear("unet.time_embedding.linear_1", t_emb)?;
    let temb = cx.silu(temb)?;
    let temb = cx.linear("unet.time_embedding.linear_2", temb)?;
    cx.g.tap("unet.temb", temb);
    // Every ResNet applies SiLU to the embedding before its own projection: do it once.
    let silu_temb = Some(cx.silu(temb)?);

    let mut x = cx.conv("unet.conv_in", sample, 1, Activation::None)?;
    cx.g.tap("unet.conv_in", x);
    let mut skips = vec![x];
    let blocks = cfg.block_out_channels.len();
    for (i, block_type) in cfg.down_block_types.iter().enumerate() {
        for j in 0..cfg.layers_per_block {
            x = cx.resnet(
                &format!("unet.down_blocks.{i}.resnets.{j}"),
                x,
                silu_temb,
                groups,
                eps,
            )?;
            if has_attention(block_type) {
                let prefix = format!("unet.down_blocks.{i}.attentions.{j}");
                x = transformer(
                    cx,
                    cfg,
                    &prefix,
                    x,
                    context,
                    cfg.heads[i],
                    cfg.transformer_layers[i],
                )?;
            }
            skips.push(x);
        }
        if i + 1 < blocks {
            x = cx.conv(
                &format!("unet.down_blocks.{i}.downsamplers.0.conv"),
                x,
                2,
                Activation::None,
            )?;
            skips.push(x);
        }
        cx.g.tap(format!("unet.down_blocks.{i}"), x);
    }

    x = cx.resnet("unet.mid_block.resnets.0", x, silu_temb, groups, eps)?;
    x = transformer(
        cx,
        cfg,
        "unet.mid_block.attentions.0",
        x,
        context,
        cfg.heads[blocks - 1],
        cfg.transformer_layers[blocks - 1],
    )?;
    x = cx.resnet("unet.mid_block.resnets.1", x, silu_temb, groups, eps)?;
    cx.g.tap("unet.mid_block", x);

    for (i, block_type) in cfg.up_block_types.iter().enumerate() {
        let mirrored = blocks - 1 - i;
        for j in 0..=cfg.layers_per_block {
            let skip = skips.pop().ok_or_else(|| {
                crate::Error::BadModel("unet: more up-block resnets than skips".into())
            })?;
            x = concat_channels(cx.g, x, skip)?;
            x = cx.resnet(
                &format!("unet.up_blocks.{i}.resnets.{j}"),
                x,
                silu_temb,
                groups,
                eps,
            )?;
            if has_attention(block_type) {
                let prefix = format!("unet.up_blocks.{i}.attentions.{j}");
                x = transformer(
                    cx,
                    cfg,
                    &prefix,
                    x,
                    context,
                    cfg.heads[mirrored],
                    cfg.transformer_layers[mirrored],
                )?;
            }
        }
        if i + 1 < blocks {
            x = upsample_nearest2x(cx.g, x)?;
            x = cx.conv(
                &format!("unet.up_blocks.{i}.upsamplers.0.conv"),
                x,
                1,
                Activation::None,
            )?;
        }
        cx.g.tap(format!("unet.up_blocks.{i}"), x);
    }

    x = cx.group_norm("unet.conv_norm_out", x, groups, eps, true)?;
    cx.conv("unet.conv_out", x, 1, Activation::None)
}
