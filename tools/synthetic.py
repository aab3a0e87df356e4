"""The full SD-2.1 OSCAR architecture, and the engine's seeded synthetic weights for it.

`sd21(seed)` gives the very weights `Oscar::synthetic(gpu, &Architecture::sd21()?, seed, ..)`
(src/model/synthetic.rs) makes, as a converted model's (tensors, metadata): each weight's values
come from SplitMix64 seeded by the seed and the weight's name, uniform in +-1/sqrt(fan_in), and
norm gains are 1, norm biases 0. So PyTorch can run what the engine runs at full size.
"""

import json

import numpy as np
import torch

import convert_oscar as C

SD21_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
    upcast_attention=True, flip_sin_to_cos=True, freq_shift=0, norm_num_groups=32, norm_eps=1e-5, act_fn="silu")
SD21_VAE = dict(
    in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4, norm_num_groups=32, sample_size=768, scaling_factor=0.18215, act_fn="silu")
SD21_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      num_train_timesteps=1000, prediction_type="v_prediction")
SD21_LEVELS = [(8, 256), (4, 1024), (2, 256), (2, 2048), (1, 16), (1, 32), (1, 64), (1, 256)]  # stride, codebook
N, M, CODEBOOK_DIM = 192, 320, 32

U64 = np.uint64
GAMMA = U64(0x9E3779B97F4A7C15)


def splitmix(seed, count):
    """The first `count` outputs of src/rng.rs's `Rng::new(seed)`, as uint64."""
    with np.errstate(over="ignore"):
        z = U64(seed) + GAMMA * np.arange(1, count + 1, dtype=U64)
        z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


def symmetric(seed, count, scale):
    """`Rng::new(seed).vec(count, scale)`: uniform in [-scale, scale), in f32 as the engine rounds it."""
    u = (splitmix(seed, count) >> U64(40)).astype(np.float32) / np.float32(1 << 24)
    return (np.float32(2) * u - np.float32(1)) * np.float32(scale)


def weight_seed(seed, name):
    """A weight's own seed: `seed` mixed with the FNV-1a hash of its name (synthetic.rs `weight_seed`)."""
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) % 2**64
    return int(splitmix(seed ^ h, 1)[0])


def weight(seed, name, shape):
    """One synthetic weight (synthetic.rs `Architecture::weights`)."""
    count = int(np.prod(shape))
    if "norm" in name and len(shape) == 1:
        return torch.full(shape, 1.0 if name.endswith(".weight") else 0.0)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    scale = np.float32(1) / np.sqrt(np.float32(fan_in))
    return torch.from_numpy(symmetric(weight_seed(seed, name), count, scale).reshape(shape))


def synthetic_hyper(lvl):
    """Level lvl's hyper-encoder at the real model's size (random init)."""
    import oscar_torch as O

    stride, k = SD21_LEVELS[lvl]
    resample = [i >= 3 - (stride.bit_length() - 1) for i in range(3)]  # the last log2(stride) of the three
    return O.HyperEncoder(N, M, resample, resample, k, CODEBOOK_DIM).eval()


def sd21(seed):
    """(tensors, metadata) of the full-size model with the engine's synthetic weights for `seed`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    shapes = {"embeddings": (77, SD21_UNET["cross_attention_dim"])}
    unet, vae = UNet2DConditionModel(**SD21_UNET), AutoencoderKL(**SD21_VAE)
    shapes.update({f"unet.{k}": tuple(v.shape) for k, v in unet.state_dict().items()})
    shapes.update({f"vae.{k}": tuple(v.shape) for k, v in vae.state_dict().items()})
    del unet, vae
    he = {f"{lvl}.{k}": v for lvl in range(8) for k, v in synthetic_hyper(lvl).state_dict().items()}
    hyper, levels, _, _ = C.hyper_tensors(he)
    shapes.update({k: tuple(v.shape) for k, v in hyper.items()})
    for lv in levels:
        lv["timestep"] = C.TIMESTEPS[lv["level"]]
    meta = {"unet_config": json.dumps(SD21_UNET), "vae_config": json.dumps(SD21_VAE),
            "scheduler_config": json.dumps(SD21_SCHEDULER), "levels": json.dumps(levels)}
    return {k: weight(seed, k, s) for k, s in shapes.items()}, meta
