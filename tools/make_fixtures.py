#!/usr/bin/env python3
"""Write per-block goldens (tests/fixtures/blocks.safetensors) for the Rust engine's block tests.

    python tools/make_fixtures.py --sd <sd folder> --oscar <oscar.pkl> --image <png> \
        --reference <reference.safetensors> -o tests/fixtures/blocks.safetensors

It first checks that this PyTorch pipeline (diffusers + compressai + vector-quantize-pytorch,
weights as convert_oscar.py writes them) reproduces reference.safetensors on the full image,
then runs a crop (default 64x64, so the file stays ~3 MB; the one nearest the center where every
token's best code beats the runner-up by >= 5e-5, so the indices are robust) and records:

  input                      the crop, RGB in [-1, 1], 1x3xSxS
  vae_enc.conv_in / .down_blocks.<i> / .mid_block     VAE encoder block outputs
  vae_enc.latents            posterior mean * scaling_factor
  l<L>.backbone.<i>, l<L>.backbone                    hyper-encoder layer outputs / output
  l<L>.indices (int32), .gap, .quantized, .proj.<i>, .z_hat, .a_z, .z_t
  l<L>.unet.temb / .conv_in / .down_blocks.<i> / .mid_block / .up_blocks.<i>, l<L>.v
  l<L>.x0, l<L>.vae_dec.conv_in (post_quant_conv + conv_in) / .mid_block / .up_blocks.<i>
  l<L>.vae_dec.final (before clamp), l<L>.image (clamped)

With --residual-scale S [--token-scale T] (tests/fixtures/blocks_low_variance.safetensors) the
same goldens come from a model whose residual streams are S times, and the UNet transformers'
token streams T times, as large (scale_streams), so that every
GroupNorm and LayerNorm of the VAE and the UNet sees a variance near its eps: a wrong eps, which
the photo's goldens barely notice, moves these by far more than the tests' tolerance. The file's
metadata maps each scaled tensor to its factor, and the script checks that tenfold each eps family's
eps moves its stage's output by at least MIN_EPS_EFFECT.
"""

import argparse
import json
import os
import re
import sys
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise from the VQ library

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_oscar as C  # noqa: E402
import oscar_torch as O  # noqa: E402

MIN_GAP = 5e-5  # a token closer than this to a tie is no use as a golden (OSCAR.md)
MIN_EPS_EFFECT = 1e-2  # 50x the Rust block tests' tolerance (2e-4)

# What writes a norm's output (or the image) into the VAE's and the UNet's residual streams:
# conv_in, each resnet's conv2, the VAE attention's output projection.
RESIDUAL_WRITERS = re.compile(r"^(vae\.(encoder|decoder)\.conv_in|unet\.conv_in|(vae|unet)\..*resnets\.\d+\.conv2"
                              r"|vae\..*attentions\.0\.to_out\.0)\.(weight|bias)$")
# What writes into the UNet transformers' token streams: proj_in and the attention and
# feed-forward outputs.
TOKEN_WRITERS = re.compile(r"^unet\..*attentions\.\d+\.(proj_in|transformer_blocks\.\d+\."
                           r"(attn1\.to_out\.0|attn2\.to_out\.0|ff\.net\.2))\.(weight|bias)$")
# What carries a token stream back into the residual stream.
TOKEN_READERS = re.compile(r"^unet\..*attentions\.\d+\.proj_out\.(weight|bias)$")


def fail(msg):
    print(f"make_fixtures: error: {msg}", file=sys.stderr)
    sys.exit(2)


def load_image(path):
    if not os.path.isfile(path):
        fail(f"--image {path} does not exist")
    img = np.array(Image.open(path).convert("RGB"))
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1


def rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()


def verify(models, x, ref, levels, tol):
    """Full-image run vs reference.safetensors; exits if anything is off."""
    vae, unet, hes, emb, acp = models
    lat = O.encode_latents(vae, x)
    # v and the image carry the merged-vs-unmerged LoRA rounding (~2e-6 / ~2e-5 max-relative)
    checks = [("latents", lat, ref["latents"], tol)]
    for lvl in levels:
        r = O.run_level(hes[lvl["level"]], unet, vae, ref["latents"], emb, lvl["timestep"], acp)
        p = f"l{lvl['level']}."
        if not torch.equal(r["indices"], ref[p + "indices"]):
            fail(f"level {lvl['level']}: indices differ from the reference")
        checks += [(p + k, r[k], ref[p + k], t) for k, t in
                   (("backbone", tol), ("z_hat", tol), ("z_t", tol), ("v", 10 * tol), ("x0", 10 * tol),
                    ("image", 100 * tol))]
    for name, got, want, t in checks:
        e = rel(got.reshape(want.shape), want)
        print(f"  {name:12s} max rel err {e:.1e}")
        if e > t:
            fail(f"{name} differs from the reference by {e:.2e} (> {t:.0e}); not writing goldens")


@torch.no_grad()
def record(models, x, levels):
    vae, unet, hes, emb, acp = models
    rec = O.Recorder()
    O.watch_vae(rec, vae)
    lat = O.encode_latents(vae, x)
    rec.close()
    out = {"input": x, "vae_enc.latents": lat, **rec.out}
    for lvl in levels:
        p, he = f"l{lvl['level']}", hes[lvl["level"]]
        rec = O.Recorder()
        O.watch_hyper(rec, he, p)
        O.watch_unet(rec, unet)
        O.watch_vae(rec, vae)
        r = O.run_level(he, unet, vae, lat, emb, lvl["timestep"], acp)
        rec.close()
        out.update({f"{p}.{k}": v for k, v in r.items()})
        out.update({k if k.startswith(p + ".") else f"{p}.{k}": v for k, v in rec.out.items()})
    return {k: v.contiguous() for k, v in out.items()}


def scale_streams(tensors, residual, token):
    """Scales the writers in place so that the residual streams shrink by `residual` and the token
    streams by `token`; every other layer on a stream is linear in it (shortcuts, resampling convs)
    or reads it through a norm. Returns {name: factor}."""
    factors = {}
    for k in tensors:
        for pattern, f in ((RESIDUAL_WRITERS, residual), (TOKEN_WRITERS, token), (TOKEN_READERS, residual / token)):
            if pattern.match(k):
                factors[k] = f
    if not any(k.startswith("vae.") for k in factors) or not any(k.startswith("unet.") for k in factors):
        fail("no residual-stream writers found in the model")
    for k, f in factors.items():
        tensors[k] = tensors[k] * f
    return dict(sorted(factors.items()))


def eps_families(vae, unet):
    """{family: norm modules sharing one eps in the engine}, and the output each family feeds."""
    fam = {}
    for name, m in vae.named_modules():
        if isinstance(m, torch.nn.GroupNorm):
            fam.setdefault(("vae " + name.split(".")[0] + " GroupNorm", "latents" if name.startswith("encoder")
                            else "image"), []).append(m)
    for name, m in unet.named_modules():
        if isinstance(m, torch.nn.LayerNorm):
            key = "unet LayerNorm"
        elif isinstance(m, torch.nn.GroupNorm):
            key = "unet Transformer2D GroupNorm" if ".attentions." in name else "unet resnet GroupNorm"
        else:
            continue
        fam.setdefault((key, "v"), []).append(m)
    return fam


@torch.no_grad()
def check_eps_effect(models, x, levels):
    """Fails unless tenfold each eps family's eps moves its output by >= MIN_EPS_EFFECT."""
    vae, unet, hes, emb, acp = models

    def outputs():
        lat = O.encode_latents(vae, x)
        r = O.run_level(hes[levels[0]["level"]], unet, vae, lat, emb, levels[0]["timestep"], acp)
        return {"latents": lat, "v": r["v"], "image": r["image"]}

    base = outputs()
    for (family, out), mods in eps_families(vae, unet).items():
        eps = [m.eps for m in mods]
        for m in mods:
            m.eps *= 10
        e = rel(outputs()[out], base[out])
        for m, v in zip(mods, eps):
            m.eps = v
        print(f"  eps x10 in {family:30s} ({len(mods):2d} norms) moves {out:7s} by {e:.1e}")
        if e < MIN_EPS_EFFECT:
            fail(f"a tenfold eps in {family} moves {out} by only {e:.1e} (< {MIN_EPS_EFFECT:.0e}); "
                 "change --residual-scale or --token-scale")


@torch.no_grad()
def pick_crop(models, x, levels, s):
    """The crop nearest the center whose tokens all have gap >= MIN_GAP at every recorded level."""
    vae, _, hes, _, _ = models
    h, w = x.shape[-2:]
    cands = [(t, l) for t in range(0, h - s + 1, 16) for l in range(0, w - s + 1, 16)]
    cands.sort(key=lambda c: (abs(c[0] - (h - s) / 2) + abs(c[1] - (w - s) / 2), c))
    for top, left in cands:
        lat = O.encode_latents(vae, x[..., top:top + s, left:left + s])
        gaps = [hes[lv["level"]].quantize(hes[lv["level"]].backbone(lat))[1].min() for lv in levels]
        if min(gaps) >= MIN_GAP:
            return top, left
    fail(f"no {s}x{s} crop has all token gaps >= {MIN_GAP}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sd", required=True, help="diffusers folder (unet/, vae/, scheduler/)")
    ap.add_argument("--oscar", required=True, help="OSCAR checkpoint (oscar.pkl)")
    ap.add_argument("--image", required=True, help="input photo (png)")
    ap.add_argument("--reference", help="reference.safetensors to verify against before writing")
    ap.add_argument("-o", "--output", default="tests/fixtures/blocks.safetensors")
    ap.add_argument("--levels", default="5,0", help="levels to record (default 5,0)")
    ap.add_argument("--crop", type=int, default=64, help="crop size, multiple of 64 (default 64)")
    ap.add_argument("--tol", type=float, default=1e-5, help="max relative error vs the reference")
    ap.add_argument("--residual-scale", type=float,
                    help="shrink the residual streams by this (low-variance goldens; no --reference)")
    ap.add_argument("--token-scale", type=float, help="shrink the token streams by this (default: --residual-scale)")
    args = ap.parse_args(argv)
    if args.crop <= 0 or args.crop % 64:
        fail("--crop must be a positive multiple of 64")
    if args.residual_scale is not None:
        args.token_scale = args.token_scale or args.residual_scale
        if args.reference or not (0 < args.residual_scale < 1 and 0 < args.token_scale < 1):
            fail("--residual-scale and --token-scale take factors in (0, 1), and no --reference "
                 "(the model is changed)")
    torch.manual_seed(0)
    try:
        tensors, meta = C.convert(args.sd, args.oscar, "f32", log=lambda *a: None)
        ck = C.load_checkpoint(args.oscar)
    except C.ConvertError as e:
        fail(str(e))
    scaled = scale_streams(tensors, args.residual_scale, args.token_scale) if args.residual_scale else None
    vae, unet = O.diffusers_models(tensors, meta)
    models = (vae, unet, O.hyper_encoders(ck), tensors["embeddings"],
              O.alphas_cumprod(json.loads(meta["scheduler_config"])))
    all_levels = json.loads(meta["levels"])
    try:
        levels = [all_levels[int(v)] for v in args.levels.split(",")]
    except (ValueError, IndexError):
        fail(f"--levels must be comma-separated levels 0..7, got {args.levels}")
    x = load_image(args.image)
    if args.reference:
        print(f"verifying against {args.reference}")
        verify(models, x, load_file(args.reference), levels, args.tol)
    h, w = x.shape[-2:]
    s = args.crop
    if h < s or w < s:
        fail(f"image {w}x{h} is smaller than the {s}x{s} crop")
    top, left = pick_crop(models, x, levels, s)
    crop = x[..., top:top + s, left:left + s]
    if scaled:
        check_eps_effect(models, crop, levels)
    blocks = record(models, crop, levels)
    info = {"crop": json.dumps({"top": top, "left": left, "size": s}), "levels": json.dumps(levels),
            "source": os.path.basename(args.image), "model_content_hash": meta["content_hash"]}
    if scaled:
        info["scaled_tensors"] = json.dumps(scaled)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    C.write_safetensors(args.output, blocks, info)
    print(f"wrote {args.output}: {len(blocks)} tensors, {os.path.getsize(args.output) / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
