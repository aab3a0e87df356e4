//! Large pictures under a memory budget. When the one-graph decode (or encode) would
//! plan more intermediate memory than the budget allows, it runs as stages: the
//! hyper-networks whole (they are small, and the bitstream must not depend on tiling),
//! the UNet in overlapping latent tiles (96 with overlap 32, as OSCAR's reference tiles
//! latents), and the VAE in the largest overlapping tiles that fit.
//!
//! Tiles run in lock-step (see `lockstep`), so a tiled picture is the untiled
//! one to rounding, whatever the budget.

use super::blocks::Ctx;
use super::lockstep::Net;
use super::oscar::{picture, run, RunOptions, Trace};
use super::tiling::Grid;
use super::Oscar;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::{DType, Graph, Tensor};

/// How much intermediate GPU memory one graph may plan, and tiling forced regardless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePolicy {
    /// Bytes of activations (intermediates and uploads) beyond the weights.
    pub budget: u64,
    /// VAE tiles of at most this many latent pixels per side, even where the picture fits.
    pub vae_tile: Option<usize>,
    /// UNet tiles of at most this many latent pixels per side, even where the latent fits.
    pub unet_tile: Option<usize>,
}

impl TilePolicy {
    /// Tile only what does not fit the default budget of `gpu`.
    pub fn automatic(gpu: &Gpu) -> TilePolicy {
        TilePolicy {
            budget: default_budget(gpu),
            vae_tile: None,
            unet_tile: None,
        }
    }
}

/// The budget when the user names none. wgpu cannot tell how much memory a GPU has;
/// the largest buffer it allows is the best hint, capped at 4 GiB so that an ordinary
/// 8 GB card keeps room for the weights.
pub fn default_budget(gpu: &Gpu) -> u64 {
    gpu.limits.max_buffer_size.min(4 << 30)
}

/// The UNet tile and overlap of OSCAR's reference, latent pixels.
const UNET_TILE: usize = 96;
const UNET_OVERLAP: usize = 32;
/// The least UNet overlap, in pixels of its deepest block, that keeps lock-step tiles
/// exact. Between two sync points a tile's border pixels go wrong (its convolutions pad
/// with zeros where the neighbour has pixels) and only the pixels it owns, half an
/// overlap in, are kept. The widest such band is an up block's: one wrong pixel at the
/// deepest resolution, two after the nearest 2× upsample, three after its convolution,
/// at twice the resolution: 1.5 deepest pixels, so half an overlap must be 1.5 deepest
/// pixels. (At 2 × 8 latent pixels over the SD-2.1 UNet's 8, tiles differed from the
/// untiled step by up to 0.12; at 3 × 8 and more, not at all.)
const EXACT_UNET_OVERLAP: usize = 3;

/// One stage of a staged run: whole (no grid) or tiled, and the memory it plans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Tiles in latent pixels; None: the stage runs as one graph.
    pub grid: Option<Grid>,
    /// The largest graph the stage plans, bytes.
    pub peak_bytes: u64,
    /// Host memory the tiles' activations take between sync points (tiled stages).
    pub host_bytes: u64,
}

/// How a decode runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeSchedule {
    /// One graph, from the bitstream to the picture.
    Whole { peak_bytes: u64 },
    /// Hyper-decoder, UNet and VAE decoder one after the other.
    Staged {
        hyper_bytes: u64,
        unet: Stage,
        vae: Stage,
    },
}

/// How an encode runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeSchedule {
    Whole {
        peak_bytes: u64,
    },
    /// The VAE encoder (tiled), then the hyper-encoder and quantiser whole.
    Staged {
        vae: Stage,
        hyper_bytes: u64,
    },
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / 1048576.0)
}

impl Stage {
    /// "whole" or "3×4 tiles of 64×60 (…)", in latent pixels.
    pub fn describe(&self) -> String {
        let Some(grid) = &self.grid else {
            return "whole".into();
        };
        let host = if self.host_bytes > 0 {
            format!(
                " ({} of host memory between GroupNorms)",
                mib(self.host_bytes)
            )
        } else {
            String::new()
        };
        format!(
            "{}×{} tiles of {}×{}{host}",
            grid.cols.starts.len(),
            grid.rows.starts.len(),
            grid.cols.tile,
            grid.rows.tile
        )
    }
}

impl DecodeSchedule {
    pub fn describe(&self) -> String {
        match self {
            DecodeSchedule::Whole { peak_bytes } => {
                format!("decode as one graph, {} of activations", mib(*peak_bytes))
            }
            DecodeSchedule::Staged { unet, vae, .. } => {
                format!(
                    "decode in stages, {} of activations: UNet {}, VAE {} (latent pixels)",
                    mib(self.peak_bytes()),
                    unet.describe(),
                    vae.describe()
                )
            }
        }
    }

    pub fn peak_bytes(&self) -> u64 {
        match self {
            DecodeSchedule::Whole { peak_bytes } => *peak_bytes,
            DecodeSchedule::Staged {
                hyper_bytes,
                unet,
                vae,
            } => (*hyper_bytes).max(unet.peak_bytes).max(vae.peak_bytes),
        }
    }
}

impl EncodeSchedule {
    pub fn describe(&self) -> String {
        match self {
            EncodeSchedule::Whole { peak_bytes } => {
                format!("encode as one graph, {} of activations", mib(*peak_bytes))
            }
            EncodeSchedule::Staged { vae, .. } => format!(
                "encode in stages, {} of activations: VAE {} (latent pixels)",
                mib(self.peak_bytes()),
                vae.describe()
            ),
        }
    }

    pub fn peak_bytes(&self) -> u64 {
        match self {
            EncodeSchedule::Whole { peak_bytes } => *peak_bytes,
            EncodeSchedule::Staged { vae, hyper_bytes } => vae.peak_bytes.max(*hyper_bytes),
        }
    }
}

/// Plans the graph `build` makes: Some(bytes) within `budget`, None beyond it or past
/// a device limit, other errors as they are.
fn plan_within(
    gpu: &Gpu,
    budget: u64,
    build: impl FnOnce(&mut Graph) -> Result<Vec<Tensor>>,
) -> Result<Option<u64>> {
    let mut g = Graph::new(gpu);
    match build(&mut g) {
        Ok(outputs) => Ok(g
            .planned_bytes(&outputs, g.input_bytes())
            .filter(|&b| b <= budget)),
        Err(Error::TooLarge { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `what` does not fit `budget`; `tiled`: not even in the smallest tiles.
pub(super) fn over_budget(what: &str, budget: u64, tiled: bool) -> Error {
    Error::OverBudget {
        what: what.to_string(),
        budget,
        tiled,
    }
}

/// The largest tile in `candidates` (descending) whose graph fits, found by bisection
/// (memory grows with the tile); `fits(tile)` plans one.
pub(super) fn largest_fitting(
    candidates: &[usize],
    mut fits: impl FnMut(usize) -> Result<Option<u64>>,
) -> Result<Option<(usize, u64)>> {
    let (mut lo, mut hi) = (0, candidates.len());
    let mut best = None;
    while lo < hi {
        let mid = (lo + hi) / 2;
        match fits(candidates[mid])? {
            Some(bytes) => {
                best = Some((candidates[mid], bytes));
                hi = mid;
            }
            None => lo = mid + 1,
        }
    }
    Ok(best)
}

impl Oscar {
    /// How a decode of a `grid` of tokens at `level` runs under `policy`.
    pub fn decode_schedule(
        &self,
        level: usize,
        grid: (usize, usize),
        policy: &TilePolicy,
    ) -> Result<DecodeSchedule> {
        let (h, w) = self.latent_size(level, grid)?;
        let gpu = &self.gpu;
        let tokens = grid.0 * grid.1;
        let a_z = vec![1.0; self.info.vae.latent_channels];
        if policy.vae_tile.is_none() && policy.unet_tile.is_none() {
            let whole = plan_within(gpu, policy.budget, |g| {
                let indices = g.placeholder(&[tokens], DType::U32);
                Ok(vec![self.decode_graph(g, level, grid, indices, &a_z)?[0].1])
            })?;
            if let Some(peak_bytes) = whole {
                return Ok(DecodeSchedule::Whole { peak_bytes });
            }
        }
        let hyper_bytes = plan_within(gpu, policy.budget, |g| {
            let indices = g.placeholder(&[tokens], DType::U32);
            let mut cx = Ctx::new(g, &self.weights);
            Ok(vec![
                self.hyper_decode(&mut cx, level, grid, indices, &a_z)?[2],
            ])
        })?
        .ok_or_else(|| over_budget("the hyper-decoder of this picture", policy.budget, false))?;
        let unet = self.unet_stage((h, w), level, policy)?;
        let vae = self.vae_stage((h, w), policy, false)?;
        Ok(DecodeSchedule::Staged {
            hyper_bytes,
            unet,
            vae,
        })
    }

    /// How an encode of an `h`×`w` image (multiples of the level's cell) runs.
    pub fn encode_schedule(
        &self,
        level: usize,
        h: usize,
        w: usize,
        policy: &TilePolicy,
    ) -> Result<EncodeSchedule> {
        let down = self.info.vae.downscale();
        let (lh, lw) = (h / down, w / down);
        if policy.vae_tile.is_none() {
            let whole = plan_within(&self.gpu, policy.budget, |g| {
                let x = g.placeholder(&[3, h, w], DType::F32);
                let (indices, a_z) = self.encode_graph(g, level, x)?;
                Ok(vec![indices, a_z])
            })?;
            if let Some(peak_bytes) = whole {
                return Ok(EncodeSchedule::Whole { peak_bytes });
            }
        }
        let vae = self.vae_stage((lh, lw), policy, true)?;
        let hyper_bytes = plan_within(&self.gpu, policy.budget, |g| {
            let latents = g.placeholder(&[self.info.vae.latent_channels, lh, lw], DType::F32);
            let (indices, a_z) = self.tokens_graph(g, level, latents)?;
            Ok(vec![indices, a_z])
        })?
        .ok_or_else(|| over_budget("the hyper-encoder of this picture", policy.budget, false))?;
        Ok(EncodeSchedule::Staged { vae, hyper_bytes })
    }

    fn latent_size(&self, level: usize, grid: (usize, usize)) -> Result<(usize, usize)> {
        let stride = self.info.level(level)?.stride;
        Ok((grid.0 * stride, grid.1 * stride))
    }

    /// The UNet stage for a latent of `size`: whole if it fits and is not forced, else
    /// the largest tiles up to 96 that do.
    fn unet_stage(
        &self,
        (h, w): (usize, usize),
        level: usize,
        policy: &TilePolicy,
    ) -> Result<Stage> {
        let multiple = self.info.unet.multiple();
        if !h.is_multiple_of(multiple) || !w.is_multiple_of(multiple) {
            return Err(Error::Shape(format!(
                "a {w}×{h} latent does not halve down to the UNet's deepest block (needs a \
                 multiple of {multiple})"
            )));
        }
        let c = self.info.unet.in_channels;
        let plan_at = |th: usize, tw: usize| {
            plan_within(&self.gpu, policy.budget, |g| {
                let z_t = g.placeholder(&[c, th, tw], DType::F32);
                let mut cx = Ctx::new(g, &self.weights);
                Ok(vec![self.denoise(&mut cx, level, z_t)?[2]])
            })
        };
        if policy.unet_tile.is_none() {
            if let Some(peak_bytes) = plan_at(h, w)? {
                return Ok(Stage {
                    grid: None,
                    peak_bytes,
                    host_bytes: 0,
                });
            }
        }
        let least_overlap = EXACT_UNET_OVERLAP * multiple;
        let smallest = least_overlap + multiple;
        let max = policy.unet_tile.unwrap_or(UNET_TILE).max(smallest) / multiple * multiple;
        let candidates: Vec<usize> = (smallest..=max).rev().step_by(multiple).collect();
        let grid_for = |tile: usize| {
            let overlap = (tile / 3 / multiple * multiple)
                .clamp(least_overlap, UNET_OVERLAP.max(least_overlap));
            Grid::new(h, w, tile, overlap, multiple)
        };
        self.lockstep_stage((h, w), policy, Net::Unet { level }, &candidates, grid_for)?
            .ok_or_else(|| over_budget("the UNet step of this picture", policy.budget, true))
    }
}

impl Oscar {
    /// The UNet and VAE stages of a decode that must run staged under `opts.tiling`;
    /// None where it runs as one graph.
    pub(crate) fn staged(
        &self,
        level: usize,
        grid: (usize, usize),
        opts: &RunOptions,
    ) -> Result<Option<(Stage, Stage)>> {
        let Some(policy) = &opts.tiling else {
            return Ok(None);
        };
        Ok(match self.decode_schedule(level, grid, policy)? {
            DecodeSchedule::Whole { .. } => None,
            DecodeSchedule::Staged { unet, vae, .. } => Some((unet, vae)),
        })
    }

    /// A staged decode: the hyper-decoder as one graph, then the UNet and the VAE
    /// decoder, each whole or tiled as `stages` say.
    pub(crate) fn decode_staged(
        &self,
        level: usize,
        grid: (usize, usize),
        a_z: &[f32],
        indices: &[u32],
        (unet, vae): &(Stage, Stage),
        opts: RunOptions,
    ) -> Result<(Vec<f32>, Trace)> {
        check_host_memory(unet.host_bytes.max(vae.host_bytes))?;
        let opts = RunOptions {
            trace: false,
            ..opts
        };
        let mut trace = Trace::default();
        let (h, w) = self.latent_size(level, grid)?;

        let mut g = self.graph(opts);
        let indices = g.input_u32(&[grid.0 * grid.1], indices)?;
        let z_t = self.hyper_decode(
            &mut Ctx::new(&mut g, &self.weights),
            level,
            grid,
            indices,
            a_z,
        )?[2];
        let (host, part) = run(&g, &[("z_t", z_t)], opts)?;
        trace.report.absorb(&part.report);

        let z_t = host[0].f32();
        let latents = match &unet.grid {
            Some(tiles) => {
                self.run_lockstep(&z_t, (h, w), tiles, Net::Unet { level }, opts, &mut trace)?
            }
            None => {
                let mut g = self.graph(opts);
                let z_t = g.input_f32(&[self.info.unet.in_channels, h, w], &z_t)?;
                let latents = self.denoise(&mut Ctx::new(&mut g, &self.weights), level, z_t)?[2];
                self.run_one(&g, latents, opts, &mut trace)?
            }
        };
        let image = self.run_lockstep(
            &latents,
            (h, w),
            vae_tiles(vae)?,
            Net::VaeDecoder,
            opts,
            &mut trace,
        )?;
        Ok((picture(image)?, trace))
    }

    /// A staged encode: the VAE encoder in tiles, then the hyper-encoder and quantiser
    /// over the whole latent as one graph.
    pub(crate) fn encode_staged(
        &self,
        image: &[f32],
        h: usize,
        w: usize,
        level: usize,
        vae: &Stage,
        opts: RunOptions,
    ) -> Result<(super::Tokens, Trace)> {
        check_host_memory(vae.host_bytes)?;
        let opts = RunOptions {
            trace: false,
            ..opts
        };
        let mut trace = Trace::default();
        let down = self.info.vae.downscale();
        let (lh, lw) = (h / down, w / down);
        let latents = self.run_lockstep(
            image,
            (lh, lw),
            vae_tiles(vae)?,
            Net::VaeEncoder,
            opts,
            &mut trace,
        )?;
        let mut g = self.graph(opts);
        let latents = g.input_f32(&[self.info.vae.latent_channels, lh, lw], &latents)?;
        let (indices, a_z) = self.tokens_graph(&mut g, level, latents)?;
        let (host, part) = run(&g, &[("indices", indices), ("a_z", a_z)], opts)?;
        trace.report.absorb(&part.report);
        Ok((self.read_tokens(level, (h, w), &host)?, trace))
    }

    /// Runs `g` and reads back `output`, adding the run to `trace`.
    pub(super) fn run_one(
        &self,
        g: &Graph,
        output: Tensor,
        opts: RunOptions,
        trace: &mut Trace,
    ) -> Result<Vec<f32>> {
        let (mut host, part) = run(g, &[("output", output)], opts)?;
        trace.report.absorb(&part.report);
        Ok(host.swap_remove(0).f32())
    }
}

/// A VAE stage's tiles (VAE stages are always tiled).
fn vae_tiles(stage: &Stage) -> Result<&Grid> {
    stage
        .grid
        .as_ref()
        .ok_or_else(|| Error::Shape("a staged VAE runs in tiles".into()))
}

/// Refuses a tiled run whose waiting activations would not fit in the memory the
/// system has available (Linux's MemAvailable; elsewhere the run is tried).
fn check_host_memory(needed: u64) -> Result<()> {
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else {
        return Ok(());
    };
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024);
    match available {
        Some(available) if needed > available => Err(Error::HostMemory { needed, available }),
        _ => Ok(()),
    }
}
