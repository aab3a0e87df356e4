//! Tiled VAE and UNet: the tile geometry, seams, agreement with the untiled decode on
//! the tiny model, and budgets (the full-size 4096² plan is in `full_size.rs`).

mod common;

use std::path::Path;
use std::sync::OnceLock;

use oscar_wgpu::gpu::{Gpu, GpuOptions};
use oscar_wgpu::image_io::{read_rgb, to_planar, Padding};
use oscar_wgpu::model::tiling::{crop, Grid, Layout};
use oscar_wgpu::model::{DecodeSchedule, EncodeSchedule, Oscar, RunOptions, TilePolicy, Tokens};
use oscar_wgpu::rng::Rng;
use oscar_wgpu::weights::Precision;
use oscar_wgpu::Error;

const LEVEL: usize = 5;
const SIZE: usize = 512;

fn model() -> &'static Oscar {
    static MODEL: OnceLock<Oscar> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oscar-tiny.safetensors");
        Oscar::load(
            Gpu::new(&GpuOptions::default()).unwrap(),
            &path,
            Precision::F32,
        )
        .unwrap()
    })
}

/// The test photo at 512×512, [3, h, w] in [-1, 1].
fn photo() -> Vec<f32> {
    photo_at(SIZE)
}

/// The test photo at `size`×`size`.
fn photo_at(size: usize) -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/astronaut_256.png");
    let rgb = image::imageops::resize(
        &read_rgb(&path).unwrap(),
        size as u32,
        size as u32,
        image::imageops::FilterType::CatmullRom,
    );
    to_planar(&rgb, 64, Padding::Edge).data
}

fn whole_tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        model()
            .encode(&photo(), SIZE, SIZE, LEVEL, RunOptions::default())
            .unwrap()
            .0
    })
}

fn whole_image() -> &'static Vec<f32> {
    static IMAGE: OnceLock<Vec<f32>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        model()
            .decode(whole_tokens(), RunOptions::default())
            .unwrap()
            .0
    })
}

/// Forced tiles, and guarded stores: no kernel may store past a tensor's end (see
/// [`decode_tiled`]).
fn policy(vae_tile: Option<usize>, unet_tile: Option<usize>) -> RunOptions {
    RunOptions {
        tiling: Some(TilePolicy {
            budget: 1 << 40,
            vae_tile,
            unet_tile,
        }),
        guard_stores: true,
        ..RunOptions::default()
    }
}

/// A decode in tiles, whose kernels stored nothing past a tensor's end.
fn decode_tiled(tokens: &Tokens, opts: RunOptions) -> Vec<f32> {
    let (image, trace) = model().decode(tokens, opts).unwrap();
    assert_eq!(trace.report.stray_bytes, 0, "stores past a tensor's end");
    image
}

/// An encode in tiles, likewise.
fn encode_tiled(image: &[f32], size: usize, opts: RunOptions) -> Tokens {
    let (tokens, trace) = model().encode(image, size, size, LEVEL, opts).unwrap();
    assert_eq!(trace.report.stray_bytes, 0, "stores past a tensor's end");
    tokens
}

/// PSNR of two [-1, 1] pictures.
fn psnr(a: &[f32], b: &[f32]) -> f64 {
    10.0 * (4.0 / mse(a.iter().zip(b).map(|(x, y)| (x - y) as f64))).log10()
}

fn mse(diffs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = diffs.fold((0.0, 0usize), |(s, n), d| (s + d * d, n + 1));
    sum / n as f64
}

#[test]
fn layouts_cover_with_equal_overlapping_tiles() {
    let mut rng = Rng::new(7);
    for _ in 0..500 {
        let multiple = [1, 8][rng.below(2) as usize];
        let len = (1 + rng.below(80) as usize) * multiple;
        let overlap = rng.below(5) as usize * multiple;
        let tile = (overlap / multiple + 1 + rng.below(20) as usize) * multiple;
        let layout = Layout::new(len, tile, overlap, multiple);
        let last = *layout.starts.last().unwrap();
        assert!(
            layout.tile <= tile.max(len.min(tile)) && layout.tile.is_multiple_of(multiple),
            "{layout:?}"
        );
        assert_eq!(
            (layout.starts[0], last + layout.tile),
            (0, len),
            "{layout:?} covers 0..{len}"
        );
        for pair in layout.starts.windows(2) {
            assert!(
                pair[0] < pair[1] && pair[0] + layout.tile >= pair[1] + overlap,
                "{layout:?}: overlap ≥ {overlap}"
            );
        }
    }
}

#[test]
fn tiles_crop_out_of_the_picture() {
    let (c, h, w) = (3, 37, 53);
    let picture = Rng::new(3).vec(c * h * w, 1.0);
    let grid = Grid::new(h, w, 16, 5, 1);
    assert!(grid.count() > 4);
    for (y0, x0, ..) in grid.tiles() {
        let tile = crop(&picture, (c, h, w), y0, x0, grid.rows.tile, grid.cols.tile);
        for (k, &v) in tile.iter().enumerate() {
            let (ch, y, x) = (
                k / (grid.rows.tile * grid.cols.tile),
                k / grid.cols.tile % grid.rows.tile,
                k % grid.cols.tile,
            );
            assert_eq!(v, picture[(ch * h + y0 + y) * w + x0 + x]);
        }
    }
}

/// One tile over the whole picture is the untiled decode: the lock-step machinery
/// (segments, host round trips, merged GroupNorm statistics and attention keys) adds
/// nothing but rounding.
#[test]
fn a_single_tile_in_lock_step_is_the_untiled_decode() {
    let tiled = decode_tiled(whole_tokens(), policy(Some(SIZE / 8), None));
    let db = psnr(&tiled, whole_image());
    eprintln!("one lock-step tile vs untiled: {db:.1} dB");
    assert!(db > 70.0, "{db:.1} dB");
}

#[test]
fn tiled_decode_agrees_with_untiled_and_shows_no_seams() {
    let tokens = whole_tokens();
    let opts = policy(Some(32), None);
    let Some(DecodeSchedule::Staged { vae, .. }) = opts
        .tiling
        .map(|p| model().decode_schedule(LEVEL, tokens.grid, &p).unwrap())
    else {
        panic!("forced tiles must stage the decode")
    };
    let grid = vae.grid.expect("VAE tiles");
    assert_eq!(grid.count(), 9, "3×3 tiles: {grid:?}");
    let tiled = decode_tiled(tokens, opts);
    let whole = whole_image();
    let db = psnr(&tiled, whole);
    // Error near the middle of each overlap against elsewhere.
    // Where neighbours hand over, in image pixels (8 per latent pixel).
    let seams = |layout: &Layout| -> Vec<usize> {
        layout
            .starts
            .windows(2)
            .map(|p| (p[1] + p[0] + layout.tile) * 4)
            .collect()
    };
    let (rows, cols) = (seams(&grid.rows), seams(&grid.cols));
    let near = |p: usize, at: &[usize]| at.iter().any(|&s| p.abs_diff(s) < 8);
    let (mut band, mut rest) = (Vec::new(), Vec::new());
    for c in 0..3 {
        for y in 0..SIZE {
            for x in 0..SIZE {
                let i = (c * SIZE + y) * SIZE + x;
                let d = (tiled[i] - whole[i]) as f64;
                if near(y, &rows) || near(x, &cols) {
                    band.push(d)
                } else {
                    rest.push(d)
                }
            }
        }
    }
    let (band, rest) = (mse(band.into_iter()), mse(rest.into_iter()));
    eprintln!("tiled vs untiled: {db:.1} dB; error near seams {band:.2e}, elsewhere {rest:.2e}");
    assert!(
        db >= 80.0,
        "tiled decode is {db:.1} dB from the untiled one"
    );
    assert!(
        band <= 1.5 * rest,
        "seams show: {band:.2e} near them vs {rest:.2e} elsewhere"
    );
}

#[test]
fn tiled_encode_makes_a_file_that_decodes_like_the_untiled_one() {
    let tokens = encode_tiled(&photo(), SIZE, policy(Some(32), None));
    let whole = whole_tokens();
    assert_eq!(
        (tokens.grid, tokens.indices.len()),
        (whole.grid, whole.indices.len()),
        "same token grid"
    );
    let same = tokens
        .indices
        .iter()
        .zip(&whole.indices)
        .filter(|(a, b)| a == b)
        .count() as f64
        / whole.indices.len() as f64;
    let a_z = common::rel_err(&tokens.a_z, &whole.a_z);
    // Decoded untiled: the bitstream does not depend on how it was made.
    let (image, _) = model().decode(&tokens, RunOptions::default()).unwrap();
    let db = psnr(&image, whole_image());
    eprintln!("tiled encode: {:.1}% of tokens as untiled, A_z within {a_z:.1e}, decoded {db:.1} dB from untiled", 100.0 * same);
    assert!(
        same == 1.0 && a_z < 1e-5,
        "tiled encode: {same:.3} of tokens equal, A_z error {a_z:.1e}"
    );
    assert!(db >= 80.0, "{db:.1} dB");
}

#[test]
fn unet_tiles_in_lock_step_match_the_untiled_step() {
    let tiled = decode_tiled(whole_tokens(), policy(None, Some(48)));
    let db = psnr(&tiled, whole_image());
    eprintln!("UNet in 48-latent tiles vs untiled: {db:.1} dB");
    assert!(db >= 80.0, "{db:.1} dB");
}

/// The smallest tiles are exact too, which is what a tight budget picks: 8×8-latent VAE
/// tiles (whose 64-pixel convolutions run as matrix products: their results once
/// waited for the next sync point as matrices, which the halo exchange skipped) and the
/// smallest UNet tiles (whose overlap once shrank below what keeps an up block exact).
/// At 256×256 (4 × 4 tiles, edge and inner ones): at 512 the 64 tiles took lavapipe on
/// a 2-core AMD EPYC 117 s.
#[test]
fn the_smallest_tiles_in_lock_step_are_exact() {
    const SMALL: usize = 256;
    let image = photo_at(SMALL);
    let (whole, _) = model()
        .encode(&image, SMALL, SMALL, LEVEL, RunOptions::default())
        .unwrap();
    let (whole_image, _) = model().decode(&whole, RunOptions::default()).unwrap();
    let smallest = policy(Some(8), Some(8));
    let tiled = decode_tiled(&whole, smallest);
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    };
    let off = worst(&tiled, &whole_image);
    eprintln!("smallest VAE and UNet tiles vs untiled: off by at most {off:.1e}");
    assert!(off < 1e-3, "decode off by {off}");
    let tokens = encode_tiled(&image, SMALL, smallest);
    let changed = tokens
        .indices
        .iter()
        .zip(&whole.indices)
        .filter(|(a, b)| a != b)
        .count();
    let a_z = common::rel_err(&tokens.a_z, &whole.a_z);
    assert!(
        changed == 0 && a_z < 1e-5,
        "encode: {changed} tokens changed, A_z off by {a_z:.1e}"
    );
}

#[test]
fn tiles_follow_the_budget_and_a_hopeless_budget_is_an_error() {
    let tokens = whole_tokens();
    let whole = model()
        .decode_schedule(
            LEVEL,
            tokens.grid,
            &TilePolicy {
                budget: 1 << 40,
                vae_tile: None,
                unet_tile: None,
            },
        )
        .unwrap();
    let DecodeSchedule::Whole { peak_bytes } = whole else {
        panic!("a generous budget decodes whole: {whole:?}")
    };
    let mut last_tiles = 1;
    for divisor in [2, 4, 8] {
        let budget = peak_bytes / divisor;
        let schedule = model()
            .decode_schedule(
                LEVEL,
                tokens.grid,
                &TilePolicy {
                    budget,
                    vae_tile: None,
                    unet_tile: None,
                },
            )
            .unwrap();
        let DecodeSchedule::Staged { vae, .. } = &schedule else {
            panic!("{budget} bytes cannot decode whole")
        };
        let tiles = vae.grid.as_ref().unwrap().count();
        eprintln!("budget {budget}: {}", schedule.describe());
        assert!(
            schedule.peak_bytes() <= budget,
            "plan {} over budget {budget}",
            schedule.peak_bytes()
        );
        assert!(
            tiles >= last_tiles,
            "a smaller budget never means fewer tiles"
        );
        last_tiles = tiles;
    }
    let encode = model()
        .encode_schedule(
            LEVEL,
            SIZE,
            SIZE,
            &TilePolicy {
                budget: peak_bytes / 4,
                vae_tile: None,
                unet_tile: None,
            },
        )
        .unwrap();
    assert!(
        matches!(encode, EncodeSchedule::Staged { .. }) && encode.peak_bytes() <= peak_bytes / 4,
        "{encode:?}"
    );

    let hopeless = TilePolicy {
        budget: 64 << 10,
        vae_tile: None,
        unet_tile: None,
    };
    let err = model()
        .decode_schedule(LEVEL, tokens.grid, &hopeless)
        .unwrap_err();
    assert!(
        matches!(err, Error::OverBudget { .. })
            && err.to_string().contains("raise --max-gpu-memory"),
        "{err}"
    );
    let run = RunOptions {
        tiling: Some(hopeless),
        ..RunOptions::default()
    };
    assert!(matches!(
        model().decode(tokens, run),
        Err(Error::OverBudget { .. })
    ));
    assert!(matches!(
        model().encode(&photo(), SIZE, SIZE, LEVEL, run),
        Err(Error::OverBudget { .. })
    ));
}
