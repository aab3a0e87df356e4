//! Layers shared by the VAE, the UNet and the hyper-networks, named and wired as in
//! diffusers and compressai so the code reads beside the PyTorch.

use crate::error::Result;
use crate::graph::{DType, Graph, Tensor};
use crate::ops::attention::attention;
use crate::ops::conv2d::{self, Activation, Conv2d};
use crate::ops::elementwise::{add, unary, Unary};
use crate::ops::group_norm::{group_norm, group_norm_apply};
use crate::ops::matmul::{self, linear_from_channels, linear_to_channels_into};
use crate::ops::transpose::{transpose, transpose_into};
use crate::weights::Weights;

/// What the layers that look at the whole picture (GroupNorm statistics, the VAE's
/// attention) see.
pub enum Scope {
    /// Their input is the whole picture.
    Whole,
    /// Their input is one `tile` = (h, w) of a `picture` = (h, w) (latent pixels) run
    /// in lock-step: the graph stops before each of them (a [`SyncPoint`]) until the
    /// tiles' contributions are merged, and takes the merged whole from placeholders.
    Tile {
        tile: (usize, usize),
        picture: (usize, usize),
        points: Vec<SyncPoint>,
    },
}

/// Where a tile graph waits for the other tiles; its dispatches from `apply_at` on
/// need the placeholders filled.
#[derive(Clone, Copy, Debug)]
pub enum SyncPoint {
    /// A GroupNorm of `x`, whose (mean, 1/σ) of each group over the whole picture go
    /// in `stats` [groups, 2].
    Norm {
        x: Tensor,
        stats: Tensor,
        groups: usize,
        eps: f32,
        apply_at: usize,
    },
    /// Single-head attention over the whole picture: the tiles' keys `k` and values
    /// `v` ([tokens, c], a `size` = (h, w) grid) make up `keys` and `values` over the
    /// whole picture's `picture` = (h, w) grid.
    Attention {
        k: Tensor,
        v: Tensor,
        keys: Tensor,
        values: Tensor,
        size: (usize, usize),
        picture: (usize, usize),
        apply_at: usize,
    },
}

impl SyncPoint {
    pub fn apply_at(&self) -> usize {
        match *self {
            SyncPoint::Norm { apply_at, .. } | SyncPoint::Attention { apply_at, .. } => apply_at,
        }
    }
}

/// The weights of one model and the graph being built with them.
pub struct Ctx<'a, 'g> {
    pub g: &'a mut Graph<'g>,
    pub w: &'a Weights,
    pub scope: Scope,
}

impl<'a, 'g> Ctx<'a, 'g> {
    pub fn new(g: &'a mut Graph<'g>, w: &'a Weights) -> Self {
        Ctx {
            g,
            w,
            scope: Scope::Whole,
        }
    }

    /// `prefix.weight` / `prefix.bias` as a convolution; padding keeps odd kernels "same".
    pub fn conv(
        &mut self,
        prefix: &str,
        x: Tensor,
        stride: usize,
        act: Activation,
    ) -> Result<Tensor> {
        let k = self.w.conv_kernel(&format!("{prefix}.weight"))?;
        self.conv_padded(prefix, x, Conv2d::strided(stride, [k / 2; 4]).with(act))
    }

    pub fn conv_padded(&mut self, prefix: &str, x: Tensor, cfg: Conv2d) -> Result<Tensor> {
        let name = format!("{prefix}.weight");
        let (shape, dtype) = (self.w.shape(&name)?, self.w.dtype(&name)?);
        let layout = conv2d::weight_layout(self.g.gpu, self.g.shape(x), shape, dtype, cfg);
        let weight = self.w.tensor_in(self.g, &name, layout)?;
        let bias = self.w.tensor(self.g, &format!("{prefix}.bias"))?;
        conv2d::conv2d(self.g, x, weight, bias, cfg)
    }

    pub fn group_norm(
        &mut self,
        prefix: &str,
        x: Tensor,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Result<Tensor> {
        let gamma = self.w.tensor(self.g, &format!("{prefix}.weight"))?;
        let beta = self.w.tensor(self.g, &format!("{prefix}.bias"))?;
        let Scope::Tile { points, .. } = &mut self.scope else {
            return group_norm(self.g, x, gamma, beta, groups, eps, silu);
        };
        let stats = self.g.placeholder(&[groups, 2], DType::F32);
        points.push(SyncPoint::Norm {
            x,
            stats,
            groups,
            eps,
            apply_at: self.g.dispatch_count(),
        });
        group_norm_apply(self.g, x, stats, gamma, beta, silu)
    }

    pub fn layer_norm(&mut self, prefix: &str, x: Tensor, eps: f32) -> Result<Tensor> {
        let gamma = self.w.tensor(self.g, &format!("{prefix}.weight"))?;
        let beta = self.w.tensor(self.g, &format!("{prefix}.bias"))?;
        crate::ops::layer_norm::layer_norm(self.g, x, gamma, beta, eps)
    }

    /// `prefix.weight` [out, in] and, where the file has it, `prefix.bias`.
    pub fn linear(&mut self, prefix: &str, x: Tensor) -> Result<Tensor> {
        let name = format!("{prefix}.weight");
        let (shape, dtype) = (self.w.shape(&name)?, self.w.dtype(&name)?);
        let n = self.g.shape(x)[0];
        let layout = matmul::linear_weight_layout(self.g.gpu, n, shape, dtype);
        let weight = self.w.tensor_in(self.g, &name, layout)?;
        let bias = self.bias(prefix)?;
        matmul::linear(self.g, x, weight, bias)
    }

    /// `prefix`'s Linear layer over the pixels of `x` \[c, h, w\] → tokens [h·w, m]
    /// (a transformer's `proj_in`), without transposing `x` where the kernel can help it.
    pub fn linear_from_image(&mut self, prefix: &str, x: Tensor) -> Result<Tensor> {
        let &[c, h, w] = self.g.shape(x) else {
            unreachable!("image tensors are [c, h, w]")
        };
        let flat = self.g.reshape(x, &[c, h * w])?;
        let (weight, bias) = self.linear_weights(prefix)?;
        linear_from_channels(self.g, flat, weight, bias)
    }

    /// `prefix`'s Linear layer on `tokens` [h·w, k] → an image \[m, h, w\] (a
    /// transformer's `proj_out`), without transposing its result where the kernel can
    /// help it.
    pub fn linear_to_image(
        &mut self,
        prefix: &str,
        tokens: Tensor,
        h: usize,
        w: usize,
    ) -> Result<Tensor> {
        let (weight, bias) = self.linear_weights(prefix)?;
        let m = self.g.shape(weight).first().copied().unwrap_or(0);
        let (image, flat) = self.image(m, h, w)?;
        linear_to_channels_into(self.g, tokens, weight, bias, flat)?;
        Ok(image)
    }

    /// A new image [c, h, w] and its [c, h·w] view for a product to write: the image is
    /// the tensor itself, not a view of a matrix, since tiles in lock-step tell images
    /// from token lists by the shape of the tensor (model::waiting).
    fn image(&mut self, c: usize, h: usize, w: usize) -> Result<(Tensor, Tensor)> {
        let image = self.g.intermediate(&[c, h, w], DType::F32);
        Ok((image, self.g.reshape(image, &[c, h * w])?))
    }

    /// `prefix`'s weight and, where the model has one, its bias.
    fn linear_weights(&mut self, prefix: &str) -> Result<(Tensor, Option<Tensor>)> {
        let weight = self.w.tensor(self.g, &format!("{prefix}.weight"))?;
        Ok((weight, self.bias(prefix)?))
    }

    /// `prefix.bias`, where the model has one.
    fn bias(&mut self, prefix: &str) -> Result<Option<Tensor>> {
        let name = format!("{prefix}.bias");
        if !self.w.contains(&name) {
            return Ok(None);
        }
        Ok(Some(self.w.tensor(self.g, &name)?))
    }

    /// diffusers' ResnetBlock2D: norm1 → SiLU → conv1 (+ time_emb_proj(SiLU(temb)))
    /// → norm2 → SiLU → conv2, plus the input (through conv_shortcut when the channel
    /// count changes).
    pub fn resnet(
        &mut self,
        prefix: &str,
        x: Tensor,
        silu_temb: Option<Tensor>,
        groups: usize,
        eps: f32,
    ) -> Result<Tensor> {
        let h = self.group_norm(&format!("{prefix}.norm1"), x, groups, eps, true)?;
        let mut h = self.conv(&format!("{prefix}.conv1"), h, 1, Activation::None)?;
        if let Some(temb) = silu_temb {
            let proj = self.linear(&format!("{prefix}.time_emb_proj"), temb)?;
            let channels = self.g.shape(proj)[1];
            let proj = self.g.reshape(proj, &[channels])?;
            h = add(self.g, h, proj)?;
        }
        let h = self.group_norm(&format!("{prefix}.norm2"), h, groups, eps, true)?;
        let h = self.conv(&format!("{prefix}.conv2"), h, 1, Activation::None)?;
        let shortcut = format!("{prefix}.conv_shortcut");
        let skip = if self.w.contains(&format!("{shortcut}.weight")) {
            self.conv(&shortcut, x, 1, Activation::None)?
        } else {
            x
        };
        add(self.g, skip, h)
    }

    /// [c, h, w] → [h·w, c]: pixels become tokens.
    pub fn to_tokens(&mut self, x: Tensor) -> Result<Tensor> {
        let &[c, h, w] = self.g.shape(x) else {
            unreachable!("image tensors are [c, h, w]")
        };
        let flat = self.g.reshape(x, &[c, h * w])?;
        transpose(self.g, flat)
    }

    /// [h·w, c] → [c, h, w].
    pub fn to_image(&mut self, tokens: Tensor, h: usize, w: usize) -> Result<Tensor> {
        let c = self.g.shape(tokens)[1];
        let (image, flat) = self.image(c, h, w)?;
        transpose_into(self.g, tokens, flat)?;
        Ok(image)
    }

    /// diffusers' Attention on tokens: to_q/to_k/to_v, multi-head softmax attention,
    /// to_out.0. `context` is the key/value source (None: self-attention).
    pub fn attention(
        &mut self,
        prefix: &str,
        x: Tensor,
        context: Option<Tensor>,
        heads: usize,
    ) -> Result<Tensor> {
        let kv = context.unwrap_or(x);
        let q = self.linear(&format!("{prefix}.to_q"), x)?;
        let mut k = self.linear(&format!("{prefix}.to_k"), kv)?;
        let mut v = self.linear(&format!("{prefix}.to_v"), kv)?;
        if let (
            None,
            Scope::Tile {
                tile,
                picture,
                points,
            },
        ) = (context, &mut self.scope)
        {
            // A tile's queries attend to the keys and values of the whole picture.
            let &[n, c] = self.g.shape(k) else {
                unreachable!("tokens are [n, c]")
            };
            let size = tile_grid_of(n, *tile)?;
            let picture = (picture.0 * size.0 / tile.0, picture.1 * size.1 / tile.1);
            let keys = self.g.placeholder(&[picture.0 * picture.1, c], DType::F32);
            let values = self.g.placeholder(&[picture.0 * picture.1, c], DType::F32);
            points.push(SyncPoint::Attention {
                k,
                v,
                keys,
                values,
                size,
                picture,
                apply_at: self.g.dispatch_count(),
            });
            (k, v) = (keys, values);
        }
        let o = attention(self.g, q, k, v, heads)?;
        self.linear(&format!("{prefix}.to_out.0"), o)
    }

    /// The VAE mid-block attention: GroupNorm, one head over all pixels, residual.
    pub fn vae_attention(
        &mut self,
        prefix: &str,
        x: Tensor,
        groups: usize,
        eps: f32,
    ) -> Result<Tensor> {
        let &[_, h, w] = self.g.shape(x) else {
            unreachable!("image tensors are [c, h, w]")
        };
        let n = self.group_norm(&format!("{prefix}.group_norm"), x, groups, eps, false)?;
        let tokens = self.to_tokens(n)?;
        let o = self.attention(prefix, tokens, None, 1)?;
        let o = self.to_image(o, h, w)?;
        add(self.g, x, o)
    }

    pub fn silu(&mut self, x: Tensor) -> Result<Tensor> {
        unary(self.g, x, Unary::Silu)
    }
}

/// The (h, w) grid of `n` tokens of a `tile` seen at a power-of-two scale.
fn tile_grid_of(n: usize, tile: (usize, usize)) -> Result<(usize, usize)> {
    (0..8)
        .flat_map(|e| [(tile.0 << e, tile.1 << e), (tile.0 >> e, tile.1 >> e)])
        .find(|&(h, w)| h * w == n && h > 0)
        .ok_or_else(|| {
            crate::error::Error::Shape(format!(
                "{n} tokens are no scale of a {}×{} tile",
                tile.0, tile.1
            ))
        })
}
