"""OSCAR in PyTorch with the real libraries (diffusers, compressai, vector-quantize-pytorch).

Used by make_fixtures.py and the tests to produce / check goldens for the Rust engine.
The UNet and VAE weights come from what convert_oscar.convert() writes (so the goldens also
test the converter); the hyper-encoders are OSCAR's own module layout built from compressai
pieces, loaded strictly from the checkpoint or from a converted model file.
"""

import json

import torch
import torch.nn as nn
from compressai.layers import AttentionBlock, conv3x3
from compressai.models.utils import conv, deconv
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from vector_quantize_pytorch import VectorQuantize

from convert_oscar import DOWN_IDX, EMA_BUFFERS, UP_IDX


def conv1x1(cin, cout):
    return nn.Conv2d(cin, cout, kernel_size=1)


class ResidualBottleneckBlock(nn.Module):
    """OSCAR's RBB: x + [1x1 C->C/2, ReLU, 3x3 C/2->C/2, ReLU, 1x1 C/2->C](x)."""

    def __init__(self, c):
        super().__init__()
        self.layers = nn.Sequential(conv1x1(c, c // 2), nn.ReLU(), conv3x3(c // 2, c // 2), nn.ReLU(),
                                    conv1x1(c // 2, c))

    def forward(self, x):
        return x + self.layers(x)


class HyperEncoder(nn.Module):
    """PerCo-style hyper-encoder as in the OSCAR checkpoint (state-dict layout backbone/proj/quantizer)."""

    def __init__(self, n, m, down, up, codebook_size, codebook_dim, in_ch=4):
        super().__init__()
        rbb = lambda c: [ResidualBottleneckBlock(c) for _ in range(3)]  # noqa: E731
        d = dict(zip(DOWN_IDX, down))
        rs = lambda i, a, b: conv(a, b) if d[i] else conv1x1(a, b)  # noqa: E731
        self.backbone = nn.Sequential(rs(0, in_ch, n), *rbb(n), rs(4, n, n), *rbb(n), AttentionBlock(n),
                                      rs(9, n, n), *rbb(n), conv1x1(n, m), AttentionBlock(m))
        u = dict(zip(UP_IDX, up))
        us = lambda i: deconv(m, m) if u[i] else conv1x1(m, m)  # noqa: E731
        self.proj = nn.Sequential(us(0), *rbb(m), us(4), *rbb(m), us(8), *rbb(m), conv1x1(m, 4))
        self.quantizer = VectorQuantize(dim=m, codebook_size=codebook_size, use_cosine_sim=True,
                                        codebook_dim=codebook_dim)

    @classmethod
    def from_state_dict(cls, sd, ema=True):
        """Build from one level's state dict (keys without the level prefix); ema=False: the VQ's
        EMA buffers (unused in eval) may be absent, as in a converted model file."""
        n, m = sd["backbone.0.weight"].shape[0], sd["backbone.13.weight"].shape[0]
        down = [sd[f"backbone.{i}.weight"].shape[-1] == 5 for i in DOWN_IDX]
        up = [sd[f"proj.{i}.weight"].shape[-1] == 5 for i in UP_IDX]
        _, k, dim = sd["quantizer._codebook.embed"].shape
        he = cls(n, m, down, up, k, dim)
        missing, unexpected = he.load_state_dict(sd, strict=ema)
        if unexpected or any(key.split(".")[-1] not in EMA_BUFFERS for key in missing):
            raise KeyError(f"hyper-encoder state dict does not fit: missing {missing}, unexpected {unexpected}")
        return he.eval()

    def quantize(self, z):
        """(indices [h,w], gap [h,w], quantized [1,M,h,w]) with vector-quantize-pytorch; gap = best - 2nd cosine."""
        b, c, h, w = z.shape
        zp = z.permute(0, 2, 3, 1).reshape(b, h * w, c)
        q, idx, _ = self.quantizer(zp)
        p = nn.functional.normalize(self.quantizer.project_in(zp), dim=-1)
        sims = p[0] @ self.quantizer._codebook.embed[0].T
        top = sims.topk(2, dim=-1)
        assert torch.equal(top.indices[:, 0], idx[0]), "library VQ disagrees with cosine argmax"
        gap = (top.values[:, 0] - top.values[:, 1]).reshape(h, w)
        return idx[0].reshape(h, w).int(), gap, q.reshape(b, h, w, c).permute(0, 3, 1, 2)


def hyper_encoders(ck):
    he = ck["hyper_encoders"]
    return [HyperEncoder.from_state_dict({k.split(".", 1)[1]: v for k, v in he.items() if k.startswith(f"{lvl}.")})
            for lvl in range(8)]


def hyper_encoders_from_model(tensors, levels=range(8)):
    """{level: HyperEncoder} with a converted model file's weights (as f32, whatever the file's dtype)."""
    out = {}
    for lvl in levels:
        p = f"hyper.{lvl}."
        sd = {k[len(p):]: v.float() for k, v in tensors.items() if k.startswith(p)}
        sd["quantizer._codebook.embed"] = sd.pop("quantizer.codebook")[None]
        out[lvl] = HyperEncoder.from_state_dict(sd, ema=False)
    return out


def vae_model(tensors, meta):
    """diffusers AutoencoderKL loaded from a converted model (tensors dict + metadata), as f32."""
    vae = AutoencoderKL.from_config(json.loads(meta["vae_config"]))
    vae.load_state_dict({k[4:]: v.float() for k, v in tensors.items() if k.startswith("vae.")}, strict=True)
    return vae.eval()


def unet_model(tensors, meta):
    """diffusers UNet2DConditionModel loaded from a converted model, as f32."""
    unet = UNet2DConditionModel.from_config(json.loads(meta["unet_config"]))
    unet.load_state_dict({k[5:]: v.float() for k, v in tensors.items() if k.startswith("unet.")}, strict=True)
    return unet.eval()


def diffusers_models(tensors, meta):
    """(vae, unet) diffusers modules loaded from a converted model (tensors dict + metadata)."""
    return vae_model(tensors, meta), unet_model(tensors, meta)


def alphas_cumprod(sched_cfg):
    """alpha-bar_t of the DDPM scheduler OSCAR steps with (its step() gives x0 = sqrt(a) z_t - sqrt(1-a) v)."""
    assert sched_cfg["prediction_type"] == "v_prediction", "OSCAR expects a v-prediction scheduler"
    return DDPMScheduler.from_config(sched_cfg).alphas_cumprod


class Recorder:
    """Forward hooks that store module outputs (first element of tuples) under given names."""

    def __init__(self):
        self.out, self.handles = {}, []

    def watch(self, name, module):
        def hook(_m, _i, o):
            self.out[name] = (o[0] if isinstance(o, tuple) else o).detach().clone()

        self.handles.append(module.register_forward_hook(hook))

    def close(self):
        for h in self.handles:
            h.remove()


def watch_vae(rec, vae):
    enc, dec = vae.encoder, vae.decoder
    rec.watch("vae_enc.conv_in", enc.conv_in)
    for i, b in enumerate(enc.down_blocks):
        rec.watch(f"vae_enc.down_blocks.{i}", b)
    rec.watch("vae_enc.mid_block", enc.mid_block)
    rec.watch("vae_dec.conv_in", dec.conv_in)
    rec.watch("vae_dec.mid_block", dec.mid_block)
    for i, b in enumerate(dec.up_blocks):
        rec.watch(f"vae_dec.up_blocks.{i}", b)
    rec.watch("vae_dec.final", dec)


def watch_unet(rec, unet):
    rec.watch("unet.temb", unet.time_embedding)
    rec.watch("unet.conv_in", unet.conv_in)
    for i, b in enumerate(unet.down_blocks):
        rec.watch(f"unet.down_blocks.{i}", b)
    rec.watch("unet.mid_block", unet.mid_block)
    for i, b in enumerate(unet.up_blocks):
        rec.watch(f"unet.up_blocks.{i}", b)


def watch_hyper(rec, he, prefix):
    for i, m in enumerate(he.backbone):
        rec.watch(f"{prefix}.backbone.{i}", m)
    for i, m in enumerate(he.proj):
        rec.watch(f"{prefix}.proj.{i}", m)


@torch.no_grad()
def encode_latents(vae, x):
    """latents = mean of the posterior * scaling_factor (OSCAR.md encode step 2)."""
    return vae.encode(x).latent_dist.mean * vae.config.scaling_factor


@torch.no_grad()
def run_level(he, unet, vae, latents, embeddings, t, acp):
    """One level, encode + decode, from the latents. Returns the OSCAR.md intermediates."""
    r = {}
    r["backbone"] = he.backbone(latents)
    r["indices"], r["gap"], r["quantized"] = he.quantize(r["backbone"])
    r["z_hat"] = he.proj(r["quantized"])
    r["a_z"] = latents.flatten(2).norm(dim=-1)[0]
    zh = r["z_hat"].flatten(2)
    r["z_t"] = (zh * latents.flatten(2).norm(dim=-1, keepdim=True) / zh.norm(dim=-1, keepdim=True)).reshape(
        r["z_hat"].shape)
    r["v"] = unet(r["z_t"], t, encoder_hidden_states=embeddings[None]).sample
    a = acp[t]
    r["x0"] = a.sqrt() * r["z_t"] - (1 - a).sqrt() * r["v"]
    r["image"] = vae.decode(r["x0"] / vae.config.scaling_factor).sample.clamp(-1, 1)
    return r
