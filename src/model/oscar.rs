//! The OSCAR pipeline: image → (token indices, A_z) and back, each direction one graph
//! on the GPU with no CPU round-trip inside.

use std::path::Path;

use super::blocks::Ctx;
use super::config::{parse_levels, Level, SchedulerConfig, UnetConfig, VaeConfig};
use super::tiled::{EncodeSchedule, TilePolicy};
use super::{hyper, unet, vae};
use crate::codec::rans_gpu::decode_tokens;
use crate::codec::{self, FreqTable, Header, ModelTag, Stream};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::{DType, Graph, HostTensor, RunReport, Tensor};
use crate::ops::channel_norm::{channel_l2_norms, rescale_channels};
use crate::ops::elementwise::{binary, unary, Binary, Unary};
use crate::weights::{ModelFile, Precision, Weights};

/// The model file layout this build reads (`format_version`, written by
/// tools/convert_oscar.py).
const FORMAT_VERSION: &str = "1";

/// Everything a model file says besides its weights.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub unet: UnetConfig,
    pub vae: VaeConfig,
    pub scheduler: SchedulerConfig,
    pub levels: Vec<Level>,
    /// Hex sha256 of the weights, written by the converter.
    pub content_hash: String,
    /// Static rANS symbol counts per level (`rans.<level>.freq`); None: uniform.
    pub freqs: Vec<Option<Vec<u32>>>,
}

impl ModelInfo {
    pub fn from_file(file: &ModelFile) -> Result<ModelInfo> {
        if file.meta("format") != Some("oscar-wgpu-model") {
            return Err(Error::BadModel(format!(
                "{} is not an oscar-wgpu model (convert SD-2.1 + OSCAR weights with tools/convert_oscar.py)",
                file.path.display()
            )));
        }
        let field = |key: &str| {
            file.meta(key)
                .ok_or_else(|| Error::BadModel(format!("metadata '{key}' is missing")))
        };
        let version = field("format_version")?;
        if version != FORMAT_VERSION {
            return Err(Error::BadModel(format!(
                "model format version {version}; this build reads version {FORMAT_VERSION} \
                 (convert the weights again with tools/convert_oscar.py)"
            )));
        }
        let levels = parse_levels(field("levels")?)?;
        let freqs = (0..levels.len())
            .map(|l| {
                let name = format!("rans.{l}.freq");
                file.shape(&name)
                    .map(|_| file.read_counts(&name))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let info = ModelInfo {
            unet: UnetConfig::parse(field("unet_config")?)?,
            vae: VaeConfig::parse(field("vae_config")?)?,
            scheduler: SchedulerConfig::parse(field("scheduler_config")?)?,
            levels,
            content_hash: field("content_hash")?.to_string(),
            freqs,
        };
        info.check_levels(file)?;
        Ok(info)
    }

    /// Each level against the schedule and the tensors it names: a codebook smaller than
    /// the level says decoded indices past its end, a timestep past the schedule made
    /// files the same model then refused to decode.
    fn check_levels(&self, file: &ModelFile) -> Result<()> {
        let steps = self.scheduler.num_train_timesteps;
        for (l, level) in self.levels.iter().enumerate() {
            let (size, dim) = (level.codebook_size, level.codebook_dim);
            let codebook = format!("hyper.{l}.quantizer.codebook");
            let problem = if level.timestep >= steps {
                format!(
                    "timestep {} is outside the schedule's {steps} steps",
                    level.timestep
                )
            } else if let Some(shape) = file.shape(&codebook).filter(|s| *s != [size, dim]) {
                format!("'{codebook}' is {shape:?}, not {size} × {dim}")
            } else if let Some(counts) = self.freqs[l].as_ref().filter(|c| c.len() != size) {
                format!("'rans.{l}.freq' has {} counts, not {size}", counts.len())
            } else {
                continue;
            };
            return Err(Error::BadModel(format!("level {l}: {problem}")));
        }
        Ok(())
    }

    /// The level's rANS table: the model's static counts, or uniform.
    pub fn freq_table(&self, level: usize) -> Result<FreqTable> {
        let size = self.level(level)?.codebook_size;
        Ok(match self.freqs.get(level).and_then(Option::as_ref) {
            Some(counts) => FreqTable::from_counts(counts)?,
            None => FreqTable::uniform(size)?,
        })
    }

    pub fn level(&self, level: usize) -> Result<&Level> {
        self.levels.get(level).ok_or_else(|| {
            Error::BadModel(format!(
                "level {level} does not exist (0..={})",
                self.levels.len() - 1
            ))
        })
    }

    /// Image pixels per token along each axis at `level`.
    pub fn pixels_per_token(&self, level: usize) -> Result<usize> {
        Ok(self.vae.downscale() * self.level(level)?.stride)
    }

    /// Refuses a model whose pictures the `.oscar` format cannot carry: the format fixes
    /// the latent's scale and channels, the levels' strides, and pads pictures to a size
    /// whose latent the UNet must halve down to its deepest block.
    pub fn check_codec(&self) -> Result<()> {
        let latent_side = (codec::PICTURE_MULTIPLE / codec::LATENT_SCALE) as usize;
        let strides = codec::LEVEL_STRIDES.map(|s| s as usize);
        let problem = if self.vae.downscale() != codec::LATENT_SCALE as usize {
            format!("a VAE that scales by {}", self.vae.downscale())
        } else if self.vae.latent_channels != codec::LATENT_CHANNELS {
            format!("{} latent channels", self.vae.latent_channels)
        } else if self.levels.len() > strides.len()
            || self.levels.iter().any(|l| l.stride != strides[l.level])
        {
            let got: Vec<_> = self.levels.iter().map(|l| l.stride).collect();
            format!("level strides {got:?}")
        } else if !latent_side.is_multiple_of(self.unet.multiple()) {
            format!("a UNet of {} blocks", self.unet.block_out_channels.len())
        } else {
            return Ok(());
        };
        Err(Error::BadModel(format!(
            "the .oscar format cannot code this model's pictures: it has {problem}, the format \
             needs a VAE that scales by {}, {} latent channels, level strides {strides:?} and \
             a UNet that halves a {latent_side}-pixel latent down to its deepest block",
            codec::LATENT_SCALE,
            codec::LATENT_CHANNELS,
        )))
    }
}

/// What a run reports besides its result.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Read back the intermediates (parity tests, tools).
    pub trace: bool,
    /// Time every dispatch with timestamp queries, where the adapter has them.
    pub profile: bool,
    /// Run in stages and tiles where one graph would exceed the policy's budget (or
    /// where it forces tiles). None: always one graph. Staged runs trace no tensors.
    pub tiling: Option<TilePolicy>,
    /// A test aid: every graph of the run guards its stores ([`Graph::guard_stores`]),
    /// and the trace's report counts the guard bytes kernels overwrote.
    pub guard_stores: bool,
}

/// Intermediates a run can read back besides its result (for parity tests and tools).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub tensors: Vec<(String, HostTensor)>,
    pub report: RunReport,
}

impl Trace {
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t)
    }
}

/// What the encoder sends for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    pub level: usize,
    /// Token grid, rows × columns.
    pub grid: (usize, usize),
    pub indices: Vec<u32>,
    /// L2 norm of each latent channel.
    pub a_z: Vec<f32>,
}

impl Tokens {
    /// The `.oscar` header of these tokens for a `width`×`height` picture.
    pub fn header(&self, width: u32, height: u32, model: ModelTag) -> Result<Header> {
        let a_z = self.a_z.as_slice().try_into().map_err(|_| {
            Error::BadModel(format!(
                "the .oscar format carries {} latent norms, not {}",
                codec::LATENT_CHANNELS,
                self.a_z.len()
            ))
        })?;
        Ok(Header {
            level: self.level as u8,
            width,
            height,
            model,
            a_z,
        })
    }
}

pub struct Oscar {
    pub gpu: Gpu,
    pub info: ModelInfo,
    pub weights: Weights,
}

impl Oscar {
    pub fn load(gpu: Gpu, path: &Path, precision: Precision) -> Result<Oscar> {
        let file = ModelFile::open(path)?;
        let info = ModelInfo::from_file(&file)?;
        let weights = Weights::upload(&gpu, file, precision, |name| !name.starts_with("rans."))?;
        Ok(Oscar { gpu, info, weights })
    }

    /// Encodes `image` ([3, h, w] in [-1, 1]; h, w multiples of the level's pixels per
    /// token) at `level`.
    pub fn encode(
        &self,
        image: &[f32],
        h: usize,
        w: usize,
        level: usize,
        opts: RunOptions,
    ) -> Result<(Tokens, Trace)> {
        self.check_runnable()?;
        let cell = self.info.pixels_per_token(level)?;
        if h == 0 || w == 0 || !h.is_multiple_of(cell) || !w.is_multiple_of(cell) {
            return Err(Error::Shape(format!(
                "image {w}×{h} is not a multiple of {cell} pixels (pad it first)"
            )));
        }
        if let Some(policy) = &opts.tiling {
            if let EncodeSchedule::Staged { vae, .. } = self.encode_schedule(level, h, w, policy)? {
                return self.encode_staged(image, h, w, level, &vae, opts);
            }
        }
        let mut g = self.graph(opts);
        let x = g.input_f32(&[3, h, w], image)?;
        let (indices, a_z) = self.encode_graph(&mut g, level, x)?;
        let (host, trace) = run(&g, &[("indices", indices), ("a_z", a_z)], opts)?;
        Ok((self.read_tokens(level, (h, w), &host)?, trace))
    }

    /// The tokens of an `h`×`w` picture that an encode graph read back: its `indices`
    /// and `a_z` outputs, in that order. Latents with a NaN or an infinity show in their
    /// norms, and features with one in tokens that no codebook row won; either is
    /// refused.
    pub(crate) fn read_tokens(
        &self,
        level: usize,
        (h, w): (usize, usize),
        host: &[HostTensor],
    ) -> Result<Tokens> {
        let [indices, a_z] = host else {
            return Err(Error::Gpu(format!("{} encode outputs, not 2", host.len())));
        };
        let a_z = a_z.f32();
        if let Some(c) = a_z.iter().position(|v| !v.is_finite()) {
            return Err(Error::NotFinite(format!("the latents' norm A_z[{c}]")));
        }
        let indices = indices.u32();
        let codebook = self.info.level(level)?.codebook_size;
        let lost = indices.iter().filter(|&&i| i as usize >= codebook).count();
        if lost > 0 {
            return Err(Error::NotFinite(format!(
                "the hyper-encoder's features ({lost} of {} tokens)",
                indices.len()
            )));
        }
        let cell = self.info.pixels_per_token(level)?;
        Ok(Tokens {
            level,
            grid: (h / cell, w / cell),
            indices,
            a_z,
        })
    }

    /// The encode graph of `image` [3, h, w]: (token indices, latent norms A_z).
    pub(crate) fn encode_graph(
        &self,
        g: &mut Graph,
        level: usize,
        image: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let mut cx = Ctx::new(g, &self.weights);
        cx.g.set_stage("vae_encode");
        let latents = vae::encode(&mut cx, &self.info.vae, image)?;
        self.tokens_graph(cx.g, level, latents)
    }

    /// The hyper-encoder and quantiser of `latents`: (token indices, A_z).
    pub(crate) fn tokens_graph(
        &self,
        g: &mut Graph,
        level: usize,
        latents: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        g.tap("latents", latents);
        let mut cx = Ctx::new(g, &self.weights);
        // The norms A_z count with the hyper-encoder, whose input they normalise, in
        // whole and in tiled encodes alike.
        cx.g.set_stage("hyper_encode");
        let a_z = channel_l2_norms(cx.g, latents)?;
        let features = hyper::backbone(&mut cx, level, latents)?;
        cx.g.tap("backbone", features);
        cx.g.set_stage("vq");
        let indices = hyper::quantize(&mut cx, level, features)?;
        Ok((indices, a_z))
    }

    /// Decodes tokens to an image [3, h, w] in [-1, 1], where (h, w) is the token grid
    /// times the level's pixels per token.
    pub fn decode(&self, tokens: &Tokens, opts: RunOptions) -> Result<(Vec<f32>, Trace)> {
        self.check_runnable()?;
        let level = self.info.level(tokens.level)?;
        if let Some(&bad) = tokens
            .indices
            .iter()
            .find(|&&i| i as usize >= level.codebook_size)
        {
            return Err(Error::Shape(format!(
                "token index {bad} is outside level {}'s codebook of {}",
                level.level, level.codebook_size
            )));
        }
        let (th, tw) = tokens.grid;
        if th * tw != tokens.indices.len() {
            return Err(Error::Shape(format!(
                "{} indices do not fit a {th}×{tw} grid",
                tokens.indices.len()
            )));
        }
        if let Some(schedule) = self.staged(tokens.level, tokens.grid, &opts)? {
            return self.decode_staged(
                tokens.level,
                tokens.grid,
                &tokens.a_z,
                &tokens.indices,
                &schedule,
                opts,
            );
        }
        let mut g = self.graph(opts);
        let indices = g.input_u32(&[th * tw], &tokens.indices)?;
        let outputs = self.decode_graph(&mut g, tokens.level, tokens.grid, indices, &tokens.a_z)?;
        let outputs = if opts.trace {
            outputs
        } else {
            outputs[..1].to_vec()
        };
        let (mut host, trace) = run(&g, &outputs, opts)?;
        Ok((picture(host.swap_remove(0).f32())?, trace))
    }

    /// Decodes an entropy-coded token stream. Range decoding runs on the GPU first, on
    /// its own, and its per-lane checks come back before the model starts: a damaged
    /// stream is refused in milliseconds instead of after a whole decode (one flipped
    /// header bit can make the picture 8192 pixels taller, and only the lanes' checks
    /// see it). Then the tokens decode as in [`Self::decode`].
    pub fn decode_stream(
        &self,
        level: usize,
        grid: (usize, usize),
        a_z: &[f32],
        stream: &Stream,
        table: &FreqTable,
        opts: RunOptions,
    ) -> Result<(Vec<f32>, Trace)> {
        self.check_runnable()?;
        let codebook = self.info.level(level)?.codebook_size;
        if table.symbols() != codebook {
            return Err(Error::BadModel(format!(
                "level {level}'s rANS table has {} symbols for a codebook of {codebook}",
                table.symbols()
            )));
        }
        let (indices, range_decode) =
            decode_tokens(&self.gpu, stream, table, grid.0 * grid.1, opts.profile)?;
        let tokens = Tokens {
            level,
            grid,
            indices,
            a_z: a_z.to_vec(),
        };
        let (image, mut trace) = self.decode(&tokens, opts)?;
        trace.report.absorb(&range_decode);
        Ok((image, trace))
    }

    /// The buffer plan of a decode of a `grid` of tokens, without running it: what a
    /// decode would allocate, also for sizes too slow to run.
    pub fn plan_decode(&self, level: usize, grid: (usize, usize)) -> Result<crate::graph::Plan> {
        let mut g = Graph::new(&self.gpu);
        let indices = g.placeholder(&[grid.0 * grid.1], DType::U32);
        let outputs = self.decode_graph(
            &mut g,
            level,
            grid,
            indices,
            &vec![1.0; self.info.vae.latent_channels],
        )?;
        Ok(g.plan(&[outputs[0].1]))
    }

    /// Builds the decode graph; the first output is the image, then the intermediates.
    /// `indices` [th·tw] u32 must lie in the level's codebook.
    pub(crate) fn decode_graph(
        &self,
        g: &mut Graph,
        level: usize,
        grid: (usize, usize),
        indices: Tensor,
        a_z: &[f32],
    ) -> Result<Vec<(&'static str, Tensor)>> {
        let mut cx = Ctx::new(g, &self.weights);
        let [quantized, z_hat, z_t] = self.hyper_decode(&mut cx, level, grid, indices, a_z)?;
        let [v, x0, latents] = self.denoise(&mut cx, level, z_t)?;
        cx.g.set_stage("vae_decode");
        let image = vae::decode(&mut cx, &self.info.vae, latents)?;
        Ok(vec![
            ("image", image),
            ("quantized", quantized),
            ("z_hat", z_hat),
            ("z_t", z_t),
            ("v", v),
            ("x0", x0),
        ])
    }

    /// The hyper-decoder: token indices → (quantized features, z_hat, z_t).
    pub(crate) fn hyper_decode(
        &self,
        cx: &mut Ctx,
        level: usize,
        grid: (usize, usize),
        indices: Tensor,
        a_z: &[f32],
    ) -> Result<[Tensor; 3]> {
        let level = self.info.level(level)?;
        if a_z.len() != self.info.vae.latent_channels {
            return Err(Error::Shape(format!(
                "{} latent norms for {} latent channels",
                a_z.len(),
                self.info.vae.latent_channels
            )));
        }
        let a_z = cx.g.input_f32(&[a_z.len()], a_z)?;
        cx.g.set_stage("hyper_decode");
        let quantized = hyper::dequantize(cx, level.level, indices, grid.0, grid.1)?;
        let z_hat = hyper::project(cx, level.level, quantized)?;
        let z_t = rescale_channels(cx.g, z_hat, a_z)?;
        Ok([quantized, z_hat, z_t])
    }

    /// The one UNet step: z_t → (v, x0, x0 as the VAE decoder takes it).
    pub(crate) fn denoise(&self, cx: &mut Ctx, level: usize, z_t: Tensor) -> Result<[Tensor; 3]> {
        let info = &self.info;
        let t = info.level(level)?.timestep;
        let alpha_bar = info.scheduler.alpha_bar(t)?;
        cx.g.set_stage("unet");
        let context = cx.w.tensor(cx.g, "embeddings")?;
        let v = unet::forward(cx, &info.unet, z_t, t as f32, context)?;
        // One DDIM step with v-prediction: x0 = √ᾱ·z_t − √(1−ᾱ)·v.
        let x0 = binary(
            cx.g,
            z_t,
            v,
            Binary::Axpby(alpha_bar.sqrt(), -(1.0 - alpha_bar).sqrt()),
        )?;
        cx.g.set_stage("vae_decode");
        let latents = unary(cx.g, x0, Unary::Affine(1.0 / info.vae.scaling_factor, 0.0))?;
        Ok([v, x0, latents])
    }
}

/// Runs `g` for `outputs`; a traced run also reads back the graph's taps.
pub(crate) fn run(
    g: &Graph,
    outputs: &[(&'static str, Tensor)],
    opts: RunOptions,
) -> Result<(Vec<HostTensor>, Trace)> {
    let mut named: Vec<(String, Tensor)> =
        outputs.iter().map(|&(n, t)| (n.to_string(), t)).collect();
    if opts.trace {
        named.extend(g.taps.iter().cloned());
    }
    let tensors: Vec<Tensor> = named.iter().map(|(_, t)| *t).collect();
    let (mut host, report) = if opts.profile {
        g.run_profiled(&tensors)?
    } else {
        g.run(&tensors)?
    };
    let traced = if opts.trace {
        named
            .into_iter()
            .map(|(n, _)| n)
            .zip(host.iter().cloned())
            .collect()
    } else {
        Vec::new()
    };
    host.truncate(outputs.len());
    Ok((
        host,
        Trace {
            tensors: traced,
            report,
        },
    ))
}

/// A decoded `image` with its values clamped to [-1, 1], as pictures hold them, unless
/// one is NaN or infinite: clamped or cast to bytes, those would give black or white
/// pixels without a word.
pub(crate) fn picture(mut image: Vec<f32>) -> Result<Vec<f32>> {
    let bad = image.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::NotFinite(format!(
            "the decoded picture ({bad} of {} values)",
            image.len()
        )));
    }
    image.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
    Ok(image)
}

impl Oscar {
    /// A model with seeded random weights of `arch` (see [`super::synthetic`]).
    pub fn synthetic(
        gpu: Gpu,
        arch: &super::synthetic::Architecture,
        seed: u64,
        precision: Precision,
    ) -> Result<Oscar> {
        let weights = Weights::generated(&gpu, arch.weights(seed), precision)?;
        Ok(Oscar {
            gpu,
            info: arch.info.clone(),
            weights,
        })
    }

    /// `arch` without weight data: for [`Oscar::plan_decode`] only.
    pub fn planning_only(
        gpu: Gpu,
        arch: &super::synthetic::Architecture,
        precision: Precision,
    ) -> Oscar {
        let weights = Weights::shapes_only(&gpu, arch.weight_shapes(), precision);
        Oscar {
            gpu,
            info: arch.info.clone(),
            weights,
        }
    }

    /// A graph for a run with `opts`.
    pub(super) fn graph(&self, opts: RunOptions) -> Graph<'_> {
        let mut g = Graph::new(&self.gpu);
        if opts.guard_stores {
            g.guard_stores();
        }
        g
    }

    fn check_runnable(&self) -> Result<()> {
        if self.weights.planning_only {
            return Err(Error::BadModel(
                "this model has shapes but no weights: it can only plan".into(),
            ));
        }
        Ok(())
    }
}
