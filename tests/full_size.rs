//! The real SD-2.1 OSCAR architecture (UNet 320/640/1280/1280 with 5/10/20/20 heads and
//! cross-attention 1024, VAE 128/256/512/512, hyper N=192, M=320), from its configs,
//! with seeded random weights.

mod common;

use oscar_wgpu::gpu::{Gpu, GpuOptions};
use oscar_wgpu::model::synthetic::Architecture;
use oscar_wgpu::model::{DecodeSchedule, Oscar, RunOptions, TilePolicy};
use oscar_wgpu::rng::Rng;
use oscar_wgpu::weights::Precision;

fn params(arch: &Architecture, prefix: &str) -> usize {
    arch.weight_shapes()
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

/// The full-size model with f32 weights, for planning only (no weights allocated).
fn planning_model(arch: &Architecture) -> Oscar {
    Oscar::planning_only(
        Gpu::new(&GpuOptions::default()).unwrap(),
        arch,
        Precision::F32,
    )
}

#[test]
fn weight_list_matches_diffusers_parameter_counts() {
    let arch = Architecture::sd21().unwrap();
    // diffusers' UNet2DConditionModel and AutoencoderKL with SD-2.1's configs.
    assert_eq!(params(&arch, "unet."), 865_910_724);
    assert_eq!(params(&arch, "vae."), 83_653_863);
    assert_eq!(arch.info.unet.heads, vec![5, 10, 20, 20]);
}

#[test]
fn decode_plan_at_512_fits_the_machine() {
    let arch = Architecture::sd21().unwrap();
    let oscar = planning_model(&arch);
    for level in [0, 7] {
        let stride = arch.info.levels[level].stride;
        let plan = oscar
            .plan_decode(level, (64 / stride, 64 / stride))
            .unwrap();
        eprintln!("level {level}: 512×512 decode plans {:.0} MiB of intermediates ({:.0} MiB without reuse)", plan.peak_bytes as f64 / 1048576.0, plan.unplanned_bytes as f64 / 1048576.0);
        assert!(plan.peak_bytes < 4 << 30, "peak {} bytes", plan.peak_bytes);
        assert!(
            plan.peak_bytes * 4 < plan.unplanned_bytes,
            "liveness planning must reuse buffers"
        );
    }
}

/// A 2048×2048 decode still plans as one graph: every tensor past one storage binding
/// (the VAE's last levels: 2 GiB, the group norm's per-thread partials: 192 MiB) is
/// processed in windows.
#[test]
fn a_2048_decode_plans_untiled() {
    let arch = Architecture::sd21().unwrap();
    let oscar = planning_model(&arch);
    let stride = arch.info.levels[5].stride;
    let plan = oscar.plan_decode(5, (256 / stride, 256 / stride)).unwrap();
    eprintln!(
        "2048×2048 decode, untiled: {:.0} MiB of intermediates",
        plan.peak_bytes as f64 / 1048576.0
    );
}

/// A 4096×4096 photo decodes within 1.5 GiB of activations once tiled (its untiled
/// plan is refused: one GroupNorm group exceeds a storage binding).
#[test]
fn a_4096_decode_plans_within_one_and_a_half_gib_tiled() {
    let arch = Architecture::sd21().unwrap();
    let oscar = planning_model(&arch);
    let budget = 3 << 29;
    for level in [0, 5, 7] {
        let stride = arch.info.levels[level].stride;
        let grid = (512 / stride, 512 / stride);
        let schedule = oscar
            .decode_schedule(
                level,
                grid,
                &TilePolicy {
                    budget,
                    vae_tile: None,
                    unet_tile: None,
                },
            )
            .unwrap();
        eprintln!("level {level}, 4096×4096: {}", schedule.describe());
        assert!(
            matches!(schedule, DecodeSchedule::Staged { .. }),
            "{schedule:?}"
        );
        assert!(
            schedule.peak_bytes() <= budget,
            "{} bytes",
            schedule.peak_bytes()
        );
        match oscar.plan_decode(level, grid) {
            Err(oscar_wgpu::Error::TooLarge { .. }) => {}
            other => panic!(
                "the untiled 4096² decode should not fit a binding: {:?}",
                other.map(|p| p.peak_bytes)
            ),
        }
    }
}

/// Encode and decode a 64×64 image with every full-size layer (the UNet's 8×8 latent
/// goes down to 1×1): the whole architecture runs, at a size lavapipe does in seconds,
/// and every stage matches PyTorch's (tools/make_full_size_fixture.py runs these seeded
/// weights in diffusers' classes). Random weights keep the tokens away from ties: each
/// token's best code beats the runner-up by at least 0.047 in cosine.
#[test]
fn full_architecture_matches_pytorch() {
    let goldens = common::Goldens::load("full_size.safetensors");
    let meta = goldens.metadata();
    let size: usize = meta["size"].parse().unwrap();
    let oscar = Oscar::synthetic(
        Gpu::new(&GpuOptions::default()).unwrap(),
        &Architecture::sd21().unwrap(),
        meta["seed"].parse().unwrap(),
        Precision::F32,
    )
    .unwrap();
    let image = Rng::new(meta["image_seed"].parse().unwrap()).vec(3 * size * size, 1.0);
    let checked =
        common::check_traced(&oscar, &goldens, &image, (size, size), &[0, 4], 1e-4, false);
    // The VAE encoder's mid-block and latents, the backbone, z_t, the UNet's mid-block,
    // v, x0, the VAE decoder's mid-block and picture, at both levels.
    assert_eq!(checked, 18);
}

/// The portable kernels, which GPUs without 8-lane subgroups run, against the kernels
/// lavapipe runs by default, on every full-size layer: the same picture encodes to the
/// same tokens and the same norms, and the same tokens decode to the same picture.
/// Every op differs between the two (tiles, loop order, split K, attention), so this
/// checks the portable kernels at SD-2.1's real channel counts and heads.
#[test]
fn portable_kernels_agree_at_full_size() {
    let arch = Architecture::sd21().unwrap();
    let image = Rng::new(5).vec(3 * 64 * 64, 1.0);
    let model = |portable_kernels| {
        let gpu = Gpu::new(&GpuOptions {
            portable_kernels,
            ..GpuOptions::default()
        })
        .unwrap();
        assert!(!portable_kernels || !gpu.has(wgpu::Features::SUBGROUP));
        Oscar::synthetic(gpu, &arch, 7, Precision::F32).unwrap()
    };
    let encode = |oscar: &Oscar| {
        let (tokens, _) = oscar
            .encode(&image, 64, 64, 4, RunOptions::default())
            .unwrap();
        tokens
    };
    // One model at a time: each holds over 3.5 GiB of f32 weights.
    let (want, decoded) = {
        let oscar = model(false);
        let tokens = encode(&oscar);
        let (decoded, _) = oscar.decode(&tokens, RunOptions::default()).unwrap();
        (tokens, decoded)
    };
    let oscar = model(true);
    let tokens = encode(&oscar);
    assert_eq!(tokens.indices, want.indices, "token indices");
    common::assert_close(&tokens.a_z, &want.a_z, 2e-6, "channel norms A_z");
    let (got, _) = oscar.decode(&want, RunOptions::default()).unwrap();
    common::assert_close(&got, &decoded, 1e-4, "decoded picture");
}
