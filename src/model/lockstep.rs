//! Networks over a picture too large for one graph, in overlapping tiles run in
//! lock-step so that they compute what the untiled network computes. GroupNorm
//! statistics and self-attention look at the whole picture; so every tile runs up to
//! such a layer (a [`SyncPoint`]), its live activations wait on the host, the whole
//! picture's statistics (or keys and values) are merged from the part of the picture
//! each tile owns, the pixels a tile does not own are refreshed from their owner (a
//! halo exchange), and all tiles go on. The result is the untiled one up to rounding,
//! so there are no seams and no tone steps to blend away: each output pixel comes
//! from the tile that owns it. The cost over independent tiles is moving the live
//! activations through host memory once per sync point.

use std::ops::Range;

use super::blocks::{Ctx, Scope, SyncPoint};
use super::oscar::{RunOptions, Trace};
use super::tiled::{largest_fitting, over_budget, Stage, TilePolicy};
use super::tiling::{crop, Grid, Layout};
use super::waiting::{owned, Waiting};
use super::{vae, Oscar};
use crate::error::{Error, Result};
use crate::graph::segment::Lifetimes;
use crate::graph::{DType, Graph, Tensor};

/// VAE tile overlap, latent pixels. Halo exchange keeps tiles exact as long as half
/// the overlap exceeds what one segment's convolutions reach (one or two pixels at
/// their resolution); more overlap would only cost time.
const VAE_OVERLAP: usize = 8;
/// VAE tiles, their overlaps and their starts are multiples of this many latent pixels,
/// so that every VAE resolution, down to the latent, has rows a multiple of 4 pixels:
/// the vector convolution kernels need that, and the general one is several times slower.
const VAE_ALIGN: usize = 4;
/// Smaller VAE tiles would be mostly overlap.
const MIN_VAE_TILE: usize = 2 * VAE_ALIGN;

/// VAE tiles of at most `tile` latent pixels per side (a multiple of [`VAE_ALIGN`], at
/// least [`MIN_VAE_TILE`]) over an `h`×`w` latent (multiples of 8: images are padded to 64).
fn vae_grid(h: usize, w: usize, tile: usize) -> Grid {
    let overlap = (VAE_OVERLAP.min(tile / 4) / VAE_ALIGN * VAE_ALIGN).max(VAE_ALIGN);
    Grid::new(h, w, tile, overlap, VAE_ALIGN)
}

/// The network a lock-step stage runs.
#[derive(Clone, Copy, Debug)]
pub(super) enum Net {
    VaeEncoder,
    VaeDecoder,
    /// The UNet step of a level, latent to VAE-ready latent.
    Unet {
        level: usize,
    },
}

/// The graph of one tile with its sync points.
struct Template {
    input: Tensor,
    output: Tensor,
    points: Vec<SyncPoint>,
}

/// The dispatches between two sync points and what crosses in and out of them.
struct Segment {
    range: Range<usize>,
    /// Activations made by earlier segments of the same tile.
    entering: Vec<Tensor>,
    /// Placeholders filled with what was merged at the previous sync point, then the
    /// tile's input where the segment reads it.
    filled: Vec<Tensor>,
    outputs: Vec<Tensor>,
}

impl Template {
    fn segments(&self, g: &Graph, life: &Lifetimes) -> Vec<Segment> {
        let mut start = 0;
        (0..=self.points.len())
            .map(|k| {
                let end = self
                    .points
                    .get(k)
                    .map_or(g.dispatch_count(), SyncPoint::apply_at);
                let range = start..end;
                start = end;
                let mut filled = match k.checked_sub(1).map(|p| self.points[p]) {
                    None => vec![],
                    Some(SyncPoint::Norm { stats, .. }) => vec![stats],
                    Some(SyncPoint::Attention { keys, values, .. }) => vec![keys, values],
                };
                if life.used_in(g, self.input, &range) {
                    filled.push(self.input);
                }
                let mut outputs = match self.points.get(k) {
                    None => vec![self.output],
                    Some(_) => life.leaving(g, &range),
                };
                if let Some(&SyncPoint::Attention { k, v, .. }) = self.points.get(k) {
                    outputs.extend(
                        [g.root(k).0, g.root(v).0]
                            .into_iter()
                            .filter(|t| !outputs.contains(t))
                            .collect::<Vec<_>>(),
                    );
                }
                Segment {
                    entering: life.entering(g, &range),
                    filled,
                    outputs,
                    range,
                }
            })
            .collect()
    }
}

impl Oscar {
    /// The VAE stage (decoder, or encoder if `encoder`) for a latent of `size`: the
    /// largest tiles whose segments fit the budget.
    pub(super) fn vae_stage(
        &self,
        (h, w): (usize, usize),
        policy: &TilePolicy,
        encoder: bool,
    ) -> Result<Stage> {
        let max = policy.vae_tile.unwrap_or(usize::MAX).min(h.max(w)) / VAE_ALIGN * VAE_ALIGN;
        let candidates: Vec<usize> = (MIN_VAE_TILE..=max.max(MIN_VAE_TILE))
            .rev()
            .step_by(VAE_ALIGN)
            .collect();
        let net = if encoder {
            Net::VaeEncoder
        } else {
            Net::VaeDecoder
        };
        self.lockstep_stage((h, w), policy, net, &candidates, |tile| {
            vae_grid(h, w, tile)
        })?
        .ok_or_else(|| {
            over_budget(
                if encoder {
                    "the VAE encoder of this picture"
                } else {
                    "the VAE decoder of this picture"
                },
                policy.budget,
                true,
            )
        })
    }

    /// The largest of `candidates` (descending) whose tiles' segments fit the budget,
    /// as a stage; None if none does.
    pub(super) fn lockstep_stage(
        &self,
        picture: (usize, usize),
        policy: &TilePolicy,
        net: Net,
        candidates: &[usize],
        grid_for: impl Fn(usize) -> Grid,
    ) -> Result<Option<Stage>> {
        let plan = |tile: usize| -> Result<Option<(u64, u64)>> {
            let grid = grid_for(tile);
            let mut g = Graph::new(&self.gpu);
            let template = match self.template(&mut g, picture, &grid, net) {
                Err(Error::TooLarge { .. }) => return Ok(None),
                other => other?,
            };
            let life = g.lifetimes();
            let mut gpu = 0;
            for s in template.segments(&g, &life) {
                let uploads: Vec<Tensor> = s.entering.iter().chain(&s.filled).copied().collect();
                match g.segment_bytes(s.range.clone(), &uploads, &s.outputs) {
                    Some(bytes) if bytes <= policy.budget => gpu = gpu.max(bytes),
                    _ => return Ok(None),
                }
            }
            let waiting = |at: usize| {
                life.crossing(&g, at)
                    .into_iter()
                    .map(|t| Waiting::bytes(&g, &grid, picture, t))
                    .sum::<u64>()
            };
            let merged = |p: &SyncPoint| {
                if let SyncPoint::Attention { keys, values, .. } = *p {
                    g.bytes(keys) + g.bytes(values)
                } else {
                    0
                }
            };
            let host = template
                .points
                .iter()
                .map(|p| waiting(p.apply_at()) + merged(p))
                .max()
                .unwrap_or(0);
            Ok(Some((gpu, host)))
        };
        let Some((tile, peak_bytes)) =
            largest_fitting(candidates, |tile| Ok(plan(tile)?.map(|(gpu, _)| gpu)))?
        else {
            return Ok(None);
        };
        let host_bytes = plan(tile)?.map_or(0, |(_, host)| host);
        Ok(Some(Stage {
            grid: Some(grid_for(tile)),
            peak_bytes,
            host_bytes,
        }))
    }

    /// The graph of one tile of `grid` over a `picture` (latent pixels).
    fn template(
        &self,
        g: &mut Graph,
        picture: (usize, usize),
        grid: &Grid,
        net: Net,
    ) -> Result<Template> {
        let cfg = &self.info.vae;
        let (th, tw) = (grid.rows.tile, grid.cols.tile);
        let (in_c, in_scale, _) = self.ends(net);
        let mut cx = Ctx::new(g, &self.weights);
        cx.scope = Scope::Tile {
            tile: (th, tw),
            picture,
            points: Vec::new(),
        };
        let input =
            cx.g.placeholder(&[in_c, th * in_scale, tw * in_scale], DType::F32);
        let output = match net {
            Net::VaeEncoder => {
                cx.g.set_stage("vae_encode");
                vae::encode(&mut cx, cfg, input)?
            }
            Net::VaeDecoder => {
                cx.g.set_stage("vae_decode");
                vae::decode(&mut cx, cfg, input)?
            }
            Net::Unet { level } => self.denoise(&mut cx, level, input)?[2],
        };
        let Scope::Tile { points, .. } = cx.scope else {
            unreachable!("a tile scope stays one")
        };
        Ok(Template {
            input,
            output,
            points,
        })
    }

    /// (input channels, input scale, output scale) of `net` against its latent grid.
    fn ends(&self, net: Net) -> (usize, usize, usize) {
        let down = self.info.vae.downscale();
        match net {
            Net::VaeEncoder => (3, down, 1),
            Net::VaeDecoder => (self.info.vae.latent_channels, 1, down),
            Net::Unet { .. } => (self.info.unet.in_channels, 1, 1),
        }
    }

    /// `net` over `input` (its picture of `size` latent pixels) in the tiles of `grid`,
    /// in lock-step.
    pub(super) fn run_lockstep(
        &self,
        input: &[f32],
        (h, w): (usize, usize),
        grid: &Grid,
        net: Net,
        opts: RunOptions,
        trace: &mut Trace,
    ) -> Result<Vec<f32>> {
        let (in_c, in_scale, out_scale) = self.ends(net);
        let (th, tw) = (grid.rows.tile, grid.cols.tile);
        let mut g = self.graph(opts);
        let template = self.template(&mut g, (h, w), grid, net)?;
        let out_c = g.shape(template.output)[0];
        let life = g.lifetimes();
        let tiles: Vec<(usize, usize, usize, usize)> = grid.tiles().collect();
        let mut waiting = Waiting::new(&g, grid, (h, w));
        let (oh, ow) = (h * out_scale, w * out_scale);
        let mut picture = vec![0.0f32; out_c * oh * ow];
        let mut merged: Vec<Vec<u8>> = Vec::new();
        for (k, segment) in template.segments(&g, &life).iter().enumerate() {
            let mut merge = template.points.get(k).map(|&p| Merge::new(&g, p));
            // One set of buffers and bind groups for the segment, filled anew per tile.
            let placeholders: Vec<Tensor> = segment
                .entering
                .iter()
                .chain(&segment.filled)
                .copied()
                .collect();
            let run = g.segment(segment.range.clone(), &placeholders);
            let run = run.prepare(&segment.outputs, opts.profile)?;
            for (tile, &(y0, x0, i, j)) in tiles.iter().enumerate() {
                let mut uploads = Vec::with_capacity(segment.entering.len() + 2);
                for &t in &segment.entering {
                    uploads.push((t, waiting.get(tile, t)?));
                }
                let mut merged = merged.iter();
                for &t in &segment.filled {
                    let bytes = if t == template.input {
                        let pixels = crop(
                            input,
                            (in_c, h * in_scale, w * in_scale),
                            y0 * in_scale,
                            x0 * in_scale,
                            th * in_scale,
                            tw * in_scale,
                        );
                        bytemuck::cast_slice(&pixels).to_vec()
                    } else {
                        merged
                            .next()
                            .cloned()
                            .ok_or_else(|| Error::Gpu("a sync point merged too little".into()))?
                    };
                    uploads.push((t, bytes));
                }
                let (host, report) = run.run(uploads)?;
                trace.report.absorb(&report);
                let mut outputs = segment.outputs.iter().zip(host);
                let Some(merge) = &mut merge else {
                    // The last segment: the tile's owned part of the output.
                    let (_, out) = outputs
                        .next()
                        .ok_or_else(|| Error::Gpu("a tile returned no output".into()))?;
                    let out: Vec<f32> = bytemuck::pod_collect_to_vec(&out.bytes);
                    let (th, tw) = (th * out_scale, tw * out_scale);
                    let ((ya, yb), (xa, xb)) = (owned(&grid.rows, i, th), owned(&grid.cols, j, tw));
                    let (oy, ox) = (y0 * out_scale, x0 * out_scale);
                    for c in 0..out_c {
                        for y in ya..yb {
                            let to = (c * oh + oy + y) * ow + ox;
                            picture[to + xa..to + xb].copy_from_slice(
                                &out[(c * th + y) * tw + xa..(c * th + y) * tw + xb],
                            );
                        }
                    }
                    continue;
                };
                for (&t, out) in outputs {
                    waiting.put(tile, t, out.bytes);
                }
                merge.add(
                    &g,
                    |t| waiting.f32s(tile, t),
                    (&grid.rows, i),
                    (&grid.cols, j),
                )?;
            }
            waiting.retain(|t| life.alive_after(t, segment.range.end));
            if let Some(merge) = merge {
                merged = merge.finish();
            }
        }
        Ok(picture)
    }
}

/// What a sync point gathers from the tiles.
enum Merge {
    /// Per-group count, mean and M2 (sum of squared deviations) of `x`, merged with
    /// Chan's formula in f64 so the statistics do not depend on how the picture was tiled.
    Norm {
        x: Tensor,
        eps: f32,
        groups: Vec<(f64, f64, f64)>,
    },
    /// The whole picture's keys and values, [tokens, c] each, gathered from each tile's
    /// `k` and `v` (a `size` grid) into the `picture` grid.
    Attention {
        k: Tensor,
        v: Tensor,
        size: (usize, usize),
        picture: (usize, usize),
        keys: Vec<f32>,
        values: Vec<f32>,
    },
}

impl Merge {
    fn new(g: &Graph, point: SyncPoint) -> Merge {
        match point {
            SyncPoint::Norm { x, groups, eps, .. } => Merge::Norm {
                x,
                eps,
                groups: vec![(0.0, 0.0, 0.0); groups],
            },
            SyncPoint::Attention {
                k,
                v,
                keys,
                values,
                size,
                picture,
                ..
            } => Merge::Attention {
                k,
                v,
                size,
                picture,
                keys: vec![0.0; g.len(keys)],
                values: vec![0.0; g.len(values)],
            },
        }
    }

    /// Adds the part of the picture that tile (`i`, `j`) owns: the pixels nearer to it
    /// than to a neighbour, so every pixel counts once and no tile contributes pixels
    /// near its own border, where its zero padding shows.
    fn add(
        &mut self,
        g: &Graph,
        data: impl Fn(Tensor) -> Result<Vec<f32>>,
        (rows, i): (&Layout, usize),
        (cols, j): (&Layout, usize),
    ) -> Result<()> {
        match self {
            Merge::Norm { x, groups, .. } => {
                let &[c, h, w] = g.shape(*x) else {
                    return Err(Error::Shape("GroupNorm inputs are [c, h, w]".into()));
                };
                let data = data(*x)?;
                let x = data.as_slice();
                let ((y0, y1), (x0, x1)) = (owned(rows, i, h), owned(cols, j, w));
                let cpg = c / groups.len();
                let n = (cpg * (y1 - y0) * (x1 - x0)) as f64;
                if n == 0.0 {
                    return Ok(());
                }
                for (grp, acc) in groups.iter_mut().enumerate() {
                    let values = || {
                        (grp * cpg..(grp + 1) * cpg).flat_map(move |ch| {
                            (y0..y1)
                                .flat_map(move |y| &x[(ch * h + y) * w + x0..(ch * h + y) * w + x1])
                        })
                    };
                    let mean = values().map(|&v| v as f64).sum::<f64>() / n;
                    let m2 = values().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
                    let (na, ma, m2a) = *acc;
                    let total = na + n;
                    let delta = mean - ma;
                    *acc = (
                        total,
                        ma + delta * n / total,
                        m2a + m2 + delta * delta * na * n / total,
                    );
                }
            }
            Merge::Attention {
                k,
                v,
                size,
                picture,
                keys,
                values,
            } => {
                let ((h, w), pw, c) = (*size, picture.1, g.shape(*k)[1]);
                let ((y0, y1), (x0, x1)) = (owned(rows, i, h), owned(cols, j, w));
                // The tile's origin at this resolution.
                let (oy, ox) = (
                    rows.starts[i] * h / rows.tile,
                    cols.starts[j] * w / cols.tile,
                );
                for (tile, whole) in [(data(*k)?, keys), (data(*v)?, values)] {
                    for y in y0..y1 {
                        let from = (y * w + x0) * c..(y * w + x1) * c;
                        let to = ((oy + y) * pw + ox + x0) * c;
                        whole[to..to + from.len()].copy_from_slice(&tile[from]);
                    }
                }
            }
        }
        Ok(())
    }

    /// The bytes of the placeholders the next segment fills, in the template's order.
    fn finish(self) -> Vec<Vec<u8>> {
        match self {
            Merge::Norm { eps, groups, .. } => {
                let stats: Vec<f32> = groups
                    .iter()
                    .flat_map(|&(n, mean, m2)| {
                        [mean as f32, (1.0 / (m2 / n + eps as f64).sqrt()) as f32]
                    })
                    .collect();
                vec![bytemuck::cast_slice(&stats).to_vec()]
            }
            Merge::Attention { keys, values, .. } => vec![
                bytemuck::cast_slice(&keys).to_vec(),
                bytemuck::cast_slice(&values).to_vec(),
            ],
        }
    }
}
