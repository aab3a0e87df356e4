#!/usr/bin/env python3
"""Estimate static rANS frequency tables: token counts per level over a folder of images.

    python tools/estimate_freqs.py --model model.safetensors --images photos/ -o freqs.json
    python tools/convert_oscar.py ... --freqs freqs.json            # store them at conversion
    python tools/estimate_freqs.py --model model.safetensors --images photos/ \
        --write-into model.safetensors -o model-rans.safetensors    # or add them to a model file

Runs the real encoder (oscar_torch: diffusers VAE, compressai hyper-encoder,
vector-quantize-pytorch VQ) with the model file's weights at every level, on each image
(png/jpg/jpeg/webp) padded right and bottom to a multiple of 64 by edge replication, RGB in
[-1, 1]. Every count gets +1, so no code has probability zero. The JSON is
{"0": [counts...], ..., "7": [...]}; --write-into stores the tables as int32 `rans.<level>.freq`
tensors in a copy of a model file (content_hash recomputed).
"""

import argparse
import json
import math
import os
import sys
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise from the VQ library

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_oscar as C  # noqa: E402

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
MULTIPLE = 64


def load_padded(path):
    """1x3xHxW in [-1, 1], padded right/bottom to multiples of 64 by repeating the edge pixels."""
    try:
        img = np.array(Image.open(path).convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise C.ConvertError(f"cannot read image {path}: {e}") from None
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % MULTIPLE, 0, -h % MULTIPLE), mode="replicate")


def image_files(folder):
    if not os.path.isdir(folder):
        raise C.ConvertError(f"--images {folder} is not a folder")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(EXTENSIONS))
    if not files:
        raise C.ConvertError(f"no {'/'.join(e[1:] for e in EXTENSIONS)} images in {folder}")
    return [os.path.join(folder, f) for f in files]


@torch.no_grad()
def estimate(tensors, meta, files, device="cpu", log=print):
    """{level: [count + 1 per code]} over the images."""
    import oscar_torch as O

    levels = json.loads(meta["levels"])
    vae = O.vae_model(tensors, meta).to(device)
    hes = {lv: he.to(device) for lv, he in O.hyper_encoders_from_model(tensors, range(len(levels))).items()}
    counts = {lv["level"]: torch.ones(lv["codebook_size"], dtype=torch.int64) for lv in levels}
    for path in files:
        x = load_padded(path).to(device)
        lat = O.encode_latents(vae, x)
        for lvl, he in hes.items():
            idx = he.quantize(he.backbone(lat))[0].flatten().cpu().long()
            counts[lvl] += torch.bincount(idx, minlength=len(counts[lvl]))
        log(f"  {os.path.basename(path)}: {x.shape[-1]}x{x.shape[-2]} (padded)")
    return {lvl: c.tolist() for lvl, c in counts.items()}


def entropy_bits(counts):
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts)


def write_into(src, dst, freqs):
    """Copy model file src to dst with the rANS tables added (replacing any there) and a new content_hash."""
    tensors, meta = C.read_model(src)
    if C.content_hash(tensors) != meta["content_hash"]:
        raise C.ConvertError(f"{src}: its tensors do not match its content_hash (corrupt or edited file)")
    tensors = {k: v for k, v in tensors.items() if not k.startswith("rans.")}
    tensors.update(C.rans_tensors(freqs, json.loads(meta["levels"])))
    meta = dict(meta, content_hash=C.content_hash(tensors))
    C.write_safetensors(dst, tensors, meta)
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="oscar-wgpu model file whose encoder is run")
    ap.add_argument("--images", required=True, help="folder of png/jpg/jpeg/webp images")
    ap.add_argument("-o", "--output", required=True, help="freqs.json, or the new model file with --write-into")
    ap.add_argument("--write-into", metavar="MODEL", help="copy this model file (normally --model itself) to -o "
                    "with the tables added")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing output file")
    args = ap.parse_args(argv)
    try:
        if os.path.exists(args.output) and not args.force:
            raise C.ConvertError(f"{args.output} exists (use --force to overwrite)")
        files = image_files(args.images)
        if args.write_into:
            C.read_model(args.write_into, only=())  # refuse a bad target before the long run
        tensors, meta = C.read_model(args.model, only=("vae.", "hyper."))
        print(f"counting tokens of {len(files)} images at every level")
        freqs = estimate(tensors, meta, files, args.device)
        for lvl, c in freqs.items():
            print(f"  level {lvl}: {sum(c) - len(c)} tokens, table entropy {entropy_bits(c):.2f} bits/token "
                  f"(uniform {math.log2(len(c)):.0f})")
        if args.write_into:
            out = write_into(args.write_into, args.output, freqs)
            print(f"wrote {args.output}: {args.write_into} + rans.<level>.freq, hash {out['content_hash'][:16]}")
        else:
            with open(args.output, "w") as f:
                json.dump({str(k): v for k, v in freqs.items()}, f)
            print(f"wrote {args.output}")
    except C.ConvertError as e:
        print(f"estimate_freqs: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
