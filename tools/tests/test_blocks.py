"""tests/fixtures/blocks.safetensors (tools/make_fixtures.py) is complete and current."""
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import oscar_torch as O
from conftest import FIXTURES

BLOCKS = os.path.join(FIXTURES, "blocks.safetensors")


@pytest.fixture(scope="module")
def blocks():
    if not os.path.exists(BLOCKS):
        pytest.skip("blocks.safetensors not generated yet (tools/make_fixtures.py)")
    with safe_open(BLOCKS, "pt") as f:
        meta = f.metadata()
    return load_file(BLOCKS), meta


def test_names(blocks):
    b, meta = blocks
    want = ["input", "vae_enc.conv_in", "vae_enc.mid_block", "vae_enc.latents"]
    want += [f"vae_enc.down_blocks.{i}" for i in range(4)]
    for lvl in (5, 0):
        p = f"l{lvl}."
        want += [p + k for k in ("backbone", "indices", "gap", "quantized", "z_hat", "a_z", "z_t", "v", "x0",
                                 "image", "unet.temb", "unet.conv_in", "unet.mid_block", "vae_dec.conv_in",
                                 "vae_dec.mid_block", "vae_dec.final")]
        want += [f"{p}unet.{d}_blocks.{i}" for d in ("down", "up") for i in range(4)]
        want += [f"{p}vae_dec.up_blocks.{i}" for i in range(4)]
        want += [f"{p}backbone.{i}" for i in range(15)] + [f"{p}proj.{i}" for i in range(13)]
    assert set(want) <= set(b)
    assert b["l5.indices"].dtype == torch.int32
    assert all(v.dtype == torch.float32 for k, v in b.items() if not k.endswith(".indices"))
    assert os.path.getsize(BLOCKS) < 4.5e6
    assert torch.equal(b["l5.image"], b["l5.vae_dec.final"].clamp(-1, 1))
    assert torch.equal(b["l5.backbone"], b["l5.backbone.14"]) and torch.equal(b["l5.z_hat"], b["l5.proj.12"])
    assert json.loads(meta["crop"])["size"] == b["input"].shape[-1]


def test_blocks_are_current(blocks, converted, ckpt):
    b, meta = blocks
    tensors, model_meta = converted
    assert meta["model_content_hash"] == model_meta["content_hash"]
    vae, unet = O.diffusers_models(tensors, model_meta)
    he = O.hyper_encoders(ckpt)[5]
    acp = O.alphas_cumprod(json.loads(model_meta["scheduler_config"]))
    lat = O.encode_latents(vae, b["input"])
    torch.testing.assert_close(lat, b["vae_enc.latents"], rtol=1e-5, atol=1e-6)
    r = O.run_level(he, unet, vae, b["vae_enc.latents"], tensors["embeddings"], 190, acp)
    assert torch.equal(r["indices"], b["l5.indices"])
    for k in ("backbone", "z_t", "v", "image"):
        torch.testing.assert_close(r[k], b["l5." + k], rtol=1e-5, atol=1e-5, msg=k)


LOW_VARIANCE = os.path.join(FIXTURES, "blocks_low_variance.safetensors")


def test_low_variance_blocks_are_current_and_sensitive_to_eps(converted, ckpt):
    import make_fixtures as F

    with safe_open(LOW_VARIANCE, "pt") as f:
        meta = f.metadata()
    b = load_file(LOW_VARIANCE)
    tensors, model_meta = converted
    assert meta["model_content_hash"] == model_meta["content_hash"]
    factors = json.loads(meta["scaled_tensors"])
    scaled = dict(tensors)
    assert F.scale_streams(scaled, 1e-3, 1e-2) == factors
    vae, unet = O.diffusers_models(scaled, model_meta)
    he = O.hyper_encoders(ckpt)
    acp = O.alphas_cumprod(json.loads(model_meta["scheduler_config"]))
    [level] = json.loads(meta["levels"])
    lat = O.encode_latents(vae, b["input"])
    torch.testing.assert_close(lat, b["vae_enc.latents"], rtol=1e-5, atol=1e-6)
    r = O.run_level(he[level["level"]], unet, vae, lat, tensors["embeddings"], level["timestep"], acp)
    assert torch.equal(r["indices"], b[f"l{level['level']}.indices"])
    for k in ("z_t", "v", "image"):
        torch.testing.assert_close(r[k], b[f"l{level['level']}.{k}"], rtol=1e-5, atol=1e-5, msg=k)
    F.check_eps_effect((vae, unet, he, tensors["embeddings"], acp), b["input"], [level])


def test_full_size_fixture_is_current():
    """tests/fixtures/full_size.safetensors is what make_full_size_fixture.py records now."""
    import make_full_size_fixture as F
    import synthetic as S

    path = os.path.join(FIXTURES, "full_size.safetensors")
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert (int(meta["seed"]), int(meta["image_seed"]), int(meta["size"])) == (F.SEED, F.IMAGE_SEED, F.SIZE)
    want = load_file(path)
    tensors, model_meta = S.sd21(F.SEED)
    x = torch.from_numpy(S.symmetric(F.IMAGE_SEED, 3 * F.SIZE * F.SIZE, 1.0).reshape(1, 3, F.SIZE, F.SIZE))
    got = F.record(tensors, model_meta, x)
    assert set(got) == set(want)
    for k in want:
        if k.endswith(".indices"):
            assert torch.equal(got[k], want[k]), k
        else:
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
