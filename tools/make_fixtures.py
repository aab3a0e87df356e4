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
"""

import argparse
import json
import os
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
    args = ap.parse_args(argv)
    if args.crop <= 0 or args.crop % 64:
        fail("--crop must be a positive multiple of 64")
    torch.manual_seed(0)
    try:
        tensors, meta = C.convert(args.sd, args.oscar, "f32", log=lambda *a: None)
        ck = C.load_checkpoint(args.oscar)
    except C.ConvertError as e:
        fail(str(e))
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
    blocks = record(models, x[..., top:top + s, left:left + s], levels)
    info = {"crop": json.dumps({"top": top, "left": left, "size": s}), "levels": json.dumps(levels),
            "source": os.path.basename(args.image), "model_content_hash": meta["content_hash"]}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    C.write_safetensors(args.output, blocks, info)
    print(f"wrote {args.output}: {len(blocks)} tensors, {os.path.getsize(args.output) / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
