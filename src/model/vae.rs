//! diffusers' AutoencoderKL: the encoder (to the latent mean) and the decoder.

use super::blocks::Ctx;
use super::config::VaeConfig;
use crate::error::Result;
use crate::graph::Tensor;
use crate::ops::conv2d::{Activation, Conv2d};
use crate::ops::elementwise::{unary, Unary};
use crate::ops::resize::upsample_nearest2x;

/// GroupNorm epsilon everywhere in the SD VAE.
const EPS: f32 = 1e-6;

fn mid_block(cx: &mut Ctx, cfg: &VaeConfig, prefix: &str, x: Tensor) -> Result<Tensor> {
    let groups = cfg.norm_num_groups;
    let x = cx.resnet(&format!("{prefix}.resnets.0"), x, None, groups, EPS)?;
    let x = if cfg.mid_block_add_attention {
        cx.vae_attention(&format!("{prefix}.attentions.0"), x, groups, EPS)?
    } else {
        x
    };
    cx.resnet(&format!("{prefix}.resnets.1"), x, None, groups, EPS)
}

/// `image` [3, H, W] in [-1, 1] → latent mean × scaling factor, [latent, H/8, W/8].
pub fn encode(cx: &mut Ctx, cfg: &VaeConfig, image: Tensor) -> Result<Tensor> {
    let groups = cfg.norm_num_groups;
    let mut x = cx.conv("vae.encoder.conv_in", image, 1, Activation::None)?;
    cx.g.tap("vae_enc.conv_in", x);
    let blocks = cfg.block_out_channels.len();
    for i in 0..blocks {
        for j in 0..cfg.layers_per_block {
            x = cx.resnet(
                &format!("vae.encoder.down_blocks.{i}.resnets.{j}"),
                x,
                None,
                groups,
                EPS,
            )?;
        }
        if i + 1 < blocks {
            // Downsample2D with padding 0: pad right and bottom by one, then 3×3 stride 2.
            x = cx.conv_padded(
                &format!("vae.encoder.down_blocks.{i}.downsamplers.0.conv"),
                x,
                Conv2d::strided(2, [0, 1, 0, 1]),
            )?;
        }
        cx.g.tap(format!("vae_enc.down_blocks.{i}"), x);
    }
    x = mid_block(cx, cfg, "vae.encoder.mid_block", x)?;
    cx.g.tap("vae_enc.mid_block", x);
    x = cx.group_norm("vae.encoder.conv_norm_out", x, groups, EPS, true)?;
    x = cx.conv("vae.encoder.conv_out", x, 1, Activation::None)?;
    if cfg.use_quant_conv {
        x = cx.conv("vae.quant_conv", x, 1, Activation::None)?;
    }
    let mean = cx.g.slice_rows(x, 0, cfg.latent_channels)?;
    unary(cx.g, mean, Unary::Affine(cfg.scaling_factor, 0.0))
}

/// `latents` [latent, h, w] (already divided by the scaling factor) → image [3, 8h, 8w],
/// not yet clamped.
pub fn decode(cx: &mut Ctx, cfg: &VaeConfig, latents: Tensor) -> Result<Tensor> {
    let groups = cfg.norm_num_groups;
    let mut x = latents;
    if cfg.use_post_quant_conv {
        x = cx.conv("vae.post_quant_conv", x, 1, Activation::None)?;
    }
    x = cx.conv("vae.decoder.conv_in", x, 1, Activation::None)?;
    cx.g.tap("vae_dec.conv_in", x);
    x = mid_block(cx, cfg, "vae.decoder.mid_block", x)?;
    cx.g.tap("vae_dec.mid_block", x);
    let blocks = cfg.block_out_channels.len();
    for i in 0..blocks {
        for j in 0..=cfg.layers_per_block {
            x = cx.resnet(
                &format!("vae.decoder.up_blocks.{i}.resnets.{j}"),
                x,
                None,
                groups,
                EPS,
            )?;
        }
        if i + 1 < blocks {
            x = upsample_nearest2x(cx.g, x)?;
            x = cx.conv(
                &format!("vae.decoder.up_blocks.{i}.upsamplers.0.conv"),
                x,
                1,
                Activation::None,
            )?;
        }
        cx.g.tap(format!("vae_dec.up_blocks.{i}"), x);
    }
    x = cx.group_norm("vae.decoder.conv_norm_out", x, groups, EPS, true)?;
    cx.conv("vae.decoder.conv_out", x, 1, Activation::None)
}
