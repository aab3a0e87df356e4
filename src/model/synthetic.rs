//! Seeded random weights for any OSCAR architecture, so the full SD-2.1 model can be
//! built, benchmarked and planned without the 2 GB download. The weight list mirrors
//! diffusers' and compressai's module trees from the configs.

use sha2::{Digest, Sha256};

use super::config::{Level, SchedulerConfig, UnetConfig, VaeConfig};
use super::oscar::ModelInfo;
use crate::codec::LEVEL_STRIDES;
use crate::error::Result;
use crate::rng::Rng;
use crate::weights::Generator;

const SD21_UNET: &str = r#"{"in_channels":4,"out_channels":4,"block_out_channels":[320,640,1280,1280],"layers_per_block":2,
"down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
"up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],
"cross_attention_dim":1024,"norm_num_groups":32,"norm_eps":1e-5,"flip_sin_to_cos":true,"freq_shift":0,
"use_linear_projection":true,"attention_head_dim":[5,10,20,20],"num_attention_heads":null}"#;
const SD21_VAE: &str = r#"{"in_channels":3,"out_channels":3,"block_out_channels":[128,256,512,512],"layers_per_block":2,
"latent_channels":4,"norm_num_groups":32,"scaling_factor":0.18215}"#;
const SD21_SCHEDULER: &str = r#"{"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear",
"num_train_timesteps":1000,"prediction_type":"v_prediction"}"#;

/// OSCAR's eight levels (their token strides are the format's): codebook size, timestep,
/// nominal bpp.
const LEVELS: [(usize, usize, f64); 8] = [
    (256, 500, 0.0019),
    (1024, 400, 0.0098),
    (256, 310, 0.0313),
    (2048, 280, 0.0430),
    (16, 210, 0.0625),
    (32, 190, 0.0781),
    (64, 170, 0.0937),
    (256, 150, 0.1250),
];

/// Where a converted model has the sha256 of its weights, generated weights have that of
/// their name: a hex sha256 all the same, so that `.oscar` files tag them like any model.
fn stand_in_hash(name: &str) -> String {
    Sha256::digest(name.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An architecture: the diffusers configs plus the hyper-network widths.
pub struct Architecture {
    pub info: ModelInfo,
    /// Hyper-encoder width N, latent-code width M.
    pub n: usize,
    pub m: usize,
}

impl Architecture {
    /// The real model's shapes: SD-2.1 UNet and VAE, N = 192, M = 320.
    pub fn sd21() -> Result<Architecture> {
        let levels = LEVELS
            .iter()
            .zip(LEVEL_STRIDES)
            .enumerate()
            .map(
                |(level, (&(codebook_size, timestep, bpp_nominal), stride))| Level {
                    level,
                    stride: stride as usize,
                    codebook_size,
                    codebook_dim: 32,
                    timestep,
                    bpp_nominal,
                },
            )
            .collect();
        Ok(Architecture {
            info: ModelInfo {
                unet: UnetConfig::parse(SD21_UNET)?,
                vae: VaeConfig::parse(SD21_VAE)?,
                scheduler: SchedulerConfig::parse(SD21_SCHEDULER)?,
                levels,
                content_hash: stand_in_hash("synthetic SD-2.1 OSCAR, seeded weights"),
                freqs: vec![None; LEVELS.len()],
            },
            n: 192,
            m: 320,
        })
    }

    /// Every weight's name and shape.
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut s = Specs::default();
        unet(&mut s, &self.info.unet);
        vae(&mut s, &self.info.vae);
        for level in &self.info.levels {
            hyper(&mut s, level, self.n, self.m, self.info.vae.latent_channels);
        }
        s.add("embeddings", &[77, self.info.unet.cross_attention_dim]);
        s.0
    }

    /// Seeded weights, scaled like PyTorch's default init (uniform ±1/√fan_in), with
    /// unit norm gains, so activations stay in a realistic range. Each weight has a seed
    /// of its own, from the seed and its name, and is made only when it is uploaded.
    /// tools/synthetic.py makes the same weights for PyTorch.
    pub fn weights(&self, seed: u64) -> Vec<(String, Vec<usize>, Generator)> {
        self.weight_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let len: usize = shape.iter().product();
                let is_norm = name.contains("norm") && shape.len() == 1;
                let make: Generator = if is_norm {
                    let gain = if name.ends_with(".weight") { 1.0 } else { 0.0 };
                    Box::new(move || vec![gain; len])
                } else {
                    let fan_in = if shape.len() > 1 {
                        shape[1..].iter().product::<usize>()
                    } else {
                        shape[0]
                    };
                    let (seed, scale) = (weight_seed(seed, &name), 1.0 / (fan_in as f32).sqrt());
                    Box::new(move || Rng::new(seed).vec(len, scale))
                };
                (name, shape, make)
            })
            .collect()
    }
}

/// A weight's seed: `seed` mixed with the FNV-1a hash of its name, so that its values
/// depend on its name alone, not on where the list has it.
fn weight_seed(seed: u64, name: &str) -> u64 {
    let fnv = name.bytes().fold(0xcbf2_9ce4_8422_2325, |h: u64, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Rng::new(seed ^ fnv).next_u64()
}

#[derive(Default)]
struct Specs(Vec<(String, Vec<usize>)>);

impl Specs {
    fn add(&mut self, name: &str, shape: &[usize]) {
        self.0.push((name.to_string(), shape.to_vec()));
    }

    fn conv(&mut self, p: &str, out: usize, inp: usize, k: usize) {
        self.add(&format!("{p}.weight"), &[out, inp, k, k]);
        self.add(&format!("{p}.bias"), &[out]);
    }

    fn linear(&mut self, p: &str, out: usize, inp: usize, bias: bool) {
        self.add(&format!("{p}.weight"), &[out, inp]);
        if bias {
            self.add(&format!("{p}.bias"), &[out]);
        }
    }

    fn norm(&mut self, p: &str, c: usize) {
        self.add(&format!("{p}.weight"), &[c]);
        self.add(&format!("{p}.bias"), &[c]);
    }

    fn resnet(&mut self, p: &str, inp: usize, out: usize, temb: Option<usize>) {
        self.norm(&format!("{p}.norm1"), inp);
        self.conv(&format!("{p}.conv1"), out, inp, 3);
        if let Some(t) = temb {
            self.linear(&format!("{p}.time_emb_proj"), out, t, true);
        }
        self.norm(&format!("{p}.norm2"), out);
        self.conv(&format!("{p}.conv2"), out, out, 3);
        if inp != out {
            self.conv(&format!("{p}.conv_shortcut"), out, inp, 1);
        }
    }

    fn transformer(&mut self, p: &str, c: usize, cross: usize, layers: usize) {
        self.norm(&format!("{p}.norm"), c);
        self.linear(&format!("{p}.proj_in"), c, c, true);
        for b in 0..layers {
            let t = format!("{p}.transformer_blocks.{b}");
            for (attn, kv) in [("attn1", c), ("attn2", cross)] {
                self.linear(&format!("{t}.{attn}.to_q"), c, c, false);
                self.linear(&format!("{t}.{attn}.to_k"), c, kv, false);
                self.linear(&format!("{t}.{attn}.to_v"), c, kv, false);
                self.linear(&format!("{t}.{attn}.to_out.0"), c, c, true);
            }
            for n in ["norm1", "norm2", "norm3"] {
                self.norm(&format!("{t}.{n}"), c);
            }
            self.linear(&format!("{t}.ff.net.0.proj"), 8 * c, c, true);
            self.linear(&format!("{t}.ff.net.2"), c, 4 * c, true);
        }
        self.linear(&format!("{p}.proj_out"), c, c, true);
    }

    fn bottleneck(&mut self, p: &str, c: usize, sub: &str) {
        self.conv(&format!("{p}.{sub}.0"), c / 2, c, 1);
        self.conv(&format!("{p}.{sub}.2"), c / 2, c / 2, 3);
        self.conv(&format!("{p}.{sub}.4"), c, c / 2, 1);
    }

    fn attention_block(&mut self, p: &str, c: usize) {
        for branch in ["conv_a", "conv_b"] {
            for i in 0..3 {
                self.bottleneck(&format!("{p}.{branch}.{i}"), c, "conv");
            }
        }
        self.conv(&format!("{p}.conv_b.3"), c, c, 1);
    }
}

fn unet(s: &mut Specs, c: &UnetConfig) {
    let boc = &c.block_out_channels;
    let temb = 4 * boc[0];
    let n = boc.len();
    s.conv("unet.conv_in", boc[0], c.in_channels, c.conv_in_kernel);
    s.linear("unet.time_embedding.linear_1", temb, boc[0], true);
    s.linear("unet.time_embedding.linear_2", temb, temb, true);
    let mut out = boc[0];
    for (i, kind) in c.down_block_types.iter().enumerate() {
        let inp = out;
        out = boc[i];
        for j in 0..c.layers_per_block {
            s.resnet(
                &format!("unet.down_blocks.{i}.resnets.{j}"),
                if j == 0 { inp } else { out },
                out,
                Some(temb),
            );
            if kind.starts_with("CrossAttn") {
                s.transformer(
                    &format!("unet.down_blocks.{i}.attentions.{j}"),
                    out,
                    c.cross_attention_dim,
                    c.transformer_layers[i],
                );
            }
        }
        if i + 1 < n {
            s.conv(
                &format!("unet.down_blocks.{i}.downsamplers.0.conv"),
                out,
                out,
                3,
            );
        }
    }
    let last = boc[n - 1];
    s.resnet("unet.mid_block.resnets.0", last, last, Some(temb));
    s.transformer(
        "unet.mid_block.attentions.0",
        last,
        c.cross_attention_dim,
        c.transformer_layers[n - 1],
    );
    s.resnet("unet.mid_block.resnets.1", last, last, Some(temb));
    let reversed: Vec<usize> = boc.iter().rev().copied().collect();
    let mut prev = reversed[0];
    for (i, kind) in c.up_block_types.iter().enumerate() {
        let out = reversed[i];
        let inp = reversed[(i + 1).min(n - 1)];
        for j in 0..=c.layers_per_block {
            let skip = if j == c.layers_per_block { inp } else { out };
            let res_in = if j == 0 { prev } else { out };
            s.resnet(
                &format!("unet.up_blocks.{i}.resnets.{j}"),
                res_in + skip,
                out,
                Some(temb),
            );
            if kind.starts_with("CrossAttn") {
                s.transformer(
                    &format!("unet.up_blocks.{i}.attentions.{j}"),
                    out,
                    c.cross_attention_dim,
                    c.transformer_layers[n - 1 - i],
                );
            }
        }
        if i + 1 < n {
            s.conv(
                &format!("unet.up_blocks.{i}.upsamplers.0.conv"),
                out,
                out,
                3,
            );
        }
        prev = out;
    }
    s.norm("unet.conv_norm_out", boc[0]);
    s.conv("unet.conv_out", c.out_channels, boc[0], c.conv_out_kernel);
}

fn vae_mid(s: &mut Specs, p: &str, c: usize) {
    s.resnet(&format!("{p}.resnets.0"), c, c, None);
    s.norm(&format!("{p}.attentions.0.group_norm"), c);
    for proj in ["to_q", "to_k", "to_v", "to_out.0"] {
        s.linear(&format!("{p}.attentions.0.{proj}"), c, c, true);
    }
    s.resnet(&format!("{p}.resnets.1"), c, c, None);
}

fn vae(s: &mut Specs, c: &VaeConfig) {
    let boc = &c.block_out_channels;
    let n = boc.len();
    let latent = c.latent_channels;
    s.conv("vae.encoder.conv_in", boc[0], c.in_channels, 3);
    let mut out = boc[0];
    for (i, &channels) in boc.iter().enumerate() {
        let inp = out;
        out = channels;
        for j in 0..c.layers_per_block {
            s.resnet(
                &format!("vae.encoder.down_blocks.{i}.resnets.{j}"),
                if j == 0 { inp } else { out },
                out,
                None,
            );
        }
        if i + 1 < n {
            s.conv(
                &format!("vae.encoder.down_blocks.{i}.downsamplers.0.conv"),
                out,
                out,
                3,
            );
        }
    }
    vae_mid(s, "vae.encoder.mid_block", boc[n - 1]);
    s.norm("vae.encoder.conv_norm_out", boc[n - 1]);
    s.conv("vae.encoder.conv_out", 2 * latent, boc[n - 1], 3);
    s.conv("vae.quant_conv", 2 * latent, 2 * latent, 1);
    s.conv("vae.post_quant_conv", latent, latent, 1);
    let reversed: Vec<usize> = boc.iter().rev().copied().collect();
    s.conv("vae.decoder.conv_in", reversed[0], latent, 3);
    vae_mid(s, "vae.decoder.mid_block", reversed[0]);
    let mut prev = reversed[0];
    for (i, &out) in reversed.iter().enumerate() {
        for j in 0..=c.layers_per_block {
            s.resnet(
                &format!("vae.decoder.up_blocks.{i}.resnets.{j}"),
                if j == 0 { prev } else { out },
                out,
                None,
            );
        }
        if i + 1 < n {
            s.conv(
                &format!("vae.decoder.up_blocks.{i}.upsamplers.0.conv"),
                out,
                out,
                3,
            );
        }
        prev = out;
    }
    s.norm("vae.decoder.conv_norm_out", boc[0]);
    s.conv("vae.decoder.conv_out", c.out_channels, boc[0], 3);
}

fn hyper(s: &mut Specs, level: &Level, n: usize, m: usize, latent: usize) {
    let p = format!("hyper.{}", level.level);
    let downs = level.stride.trailing_zeros() as usize;
    // The three resampling positions take stride 2 from the last one backwards.
    let kernel = |position: usize| if position + downs >= 3 { 5 } else { 1 };
    let b = format!("{p}.backbone");
    s.conv(&format!("{b}.0"), n, latent, kernel(0));
    (1..=3).for_each(|i| s.bottleneck(&format!("{b}.{i}"), n, "layers"));
    s.conv(&format!("{b}.4"), n, n, kernel(1));
    (5..=7).for_each(|i| s.bottleneck(&format!("{b}.{i}"), n, "layers"));
    s.attention_block(&format!("{b}.8"), n);
    s.conv(&format!("{b}.9"), n, n, kernel(2));
    (10..=12).for_each(|i| s.bottleneck(&format!("{b}.{i}"), n, "layers"));
    s.conv(&format!("{b}.13"), m, n, 1);
    s.attention_block(&format!("{b}.14"), m);
    let d = level.codebook_dim;
    s.add(
        &format!("{p}.quantizer.codebook"),
        &[level.codebook_size, d],
    );
    if m != d {
        s.linear(&format!("{p}.quantizer.project_in"), d, m, true);
        s.linear(&format!("{p}.quantizer.project_out"), m, d, true);
    }
    let q = format!("{p}.proj");
    for (position, index) in [0, 4, 8].into_iter().enumerate() {
        let k = kernel(position);
        // A transposed conv's weight is [in, out, k, k]; both are M here.
        s.conv(&format!("{q}.{index}"), m, m, k);
        (index + 1..=index + 3).for_each(|i| s.bottleneck(&format!("{q}.{i}"), m, "layers"));
    }
    s.conv(&format!("{q}.12"), latent, m, 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ModelTag;

    /// A weight's values follow from the seed and its name, as tools/synthetic.py makes
    /// them (its test pins the same numbers), wherever the list has it.
    #[test]
    fn weights_follow_from_seed_and_name() {
        let arch = Architecture::sd21().unwrap();
        let values = |seed: u64, name: &str| {
            let (_, _, make) = arch
                .weights(seed)
                .into_iter()
                .find(|w| w.0 == name)
                .unwrap();
            make()
        };
        let conv_in = values(7, "unet.conv_in.weight");
        assert_eq!(conv_in[..3], [0.025284609, -0.13699603, 0.017101586]);
        let sum: f64 = conv_in.iter().map(|&v| f64::from(v)).sum();
        assert_eq!(sum, -7.586133746564883);
        assert_ne!(values(8, "unet.conv_in.weight")[..3], conv_in[..3]);
        assert_eq!(values(7, "vae.decoder.conv_norm_out.weight"), [1.0; 128]);
        assert_eq!(values(7, "vae.decoder.conv_norm_out.bias"), [0.0; 128]);
    }

    #[test]
    fn synthetic_models_tag_files_like_converted_ones() {
        let hash = Architecture::sd21().unwrap().info.content_hash;
        assert_eq!(hash.len(), 64);
        assert!(ModelTag::from_hex(&hash).is_ok(), "{hash}");
    }

    /// The .oscar format fixes what the VAE, the levels and the UNet's depth may be; a
    /// model that differs is refused before it codes a picture, naming what differs.
    #[test]
    fn the_format_refuses_models_it_cannot_carry() {
        let sd21 = || Architecture::sd21().unwrap().info;
        sd21().check_codec().unwrap();
        let refused = |info: ModelInfo, what: &str| {
            let message = info.check_codec().unwrap_err().to_string();
            assert!(message.contains(what), "{message}");
        };
        let mut vae = sd21();
        vae.vae.block_out_channels.pop();
        refused(vae, "a VAE that scales by 4");
        let mut latent = sd21();
        latent.vae.latent_channels = 8;
        refused(latent, "8 latent channels");
        let mut strides = sd21();
        strides.levels[1].stride = 2;
        refused(strides, "level strides [8, 2, 2");
        let mut nine = sd21();
        let mut extra = nine.levels[7].clone();
        extra.level = 8;
        nine.levels.push(extra);
        refused(nine, "level strides");
        let mut deep = sd21();
        deep.unet.block_out_channels.push(1280);
        refused(deep, "a UNet of 5 blocks");
    }
}
