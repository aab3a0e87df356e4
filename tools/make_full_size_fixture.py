#!/usr/bin/env python3
"""Write goldens of the full SD-2.1 OSCAR architecture (tests/fixtures/full_size.safetensors).

    python tools/make_full_size_fixture.py -o tests/fixtures/full_size.safetensors

The model is the engine's synthetic one (tools/synthetic.py: the same seeded weights as
`Oscar::synthetic`, seed 7), the picture the 64x64 one tests/full_size.rs makes (`Rng::new(3)`,
uniform in [-1, 1)), so the engine's full-size run can be held against the real PyTorch classes
without a 3.5 GB model file. Recorded per level (0 and 4), small enough to commit:

  vae_enc.mid_block, vae_enc.latents (posterior mean * scaling_factor)
  l<L>.backbone, l<L>.indices (int32), l<L>.gap (best - second cosine per token), l<L>.a_z
  l<L>.z_t, l<L>.unet.mid_block, l<L>.v, l<L>.x0, l<L>.vae_dec.mid_block,
  l<L>.vae_dec.final (before the clamp)

It fails if a token's best code beats the runner-up by less than MIN_GAP: such a token could
flip on any other float order.
"""

import argparse
import os
import sys
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise from the VQ library

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_oscar as C  # noqa: E402
import oscar_torch as O  # noqa: E402
import synthetic as S  # noqa: E402
from make_fixtures import MIN_GAP, fail  # noqa: E402

SEED, IMAGE_SEED, SIZE, LEVELS = 7, 3, 64, (0, 4)


@torch.no_grad()
def record(tensors, meta, x):
    vae, unet = O.diffusers_models(tensors, meta)
    hes = O.hyper_encoders_from_model(tensors, LEVELS)
    acp = O.alphas_cumprod(S.SD21_SCHEDULER)
    rec = O.Recorder()
    rec.watch("vae_enc.mid_block", vae.encoder.mid_block)
    lat = O.encode_latents(vae, x)
    rec.close()
    out = {"vae_enc.latents": lat, **rec.out}
    for lvl in LEVELS:
        p = f"l{lvl}."
        rec = O.Recorder()
        rec.watch(p + "unet.mid_block", unet.mid_block)
        rec.watch(p + "vae_dec.mid_block", vae.decoder.mid_block)
        rec.watch(p + "vae_dec.final", vae.decoder)
        r = O.run_level(hes[lvl], unet, vae, lat, tensors["embeddings"], C.TIMESTEPS[lvl], acp)
        rec.close()
        if r["gap"].min() < MIN_GAP:
            fail(f"level {lvl}: a token's best code beats the runner-up by only {r['gap'].min():.1e}")
        print(f"  level {lvl}: smallest token gap {r['gap'].min():.1e}")
        out.update({p + k: r[k] for k in ("backbone", "indices", "gap", "a_z", "z_t", "v", "x0")})
        out.update(rec.out)
    return {k: v.contiguous() for k, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="tests/fixtures/full_size.safetensors")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    tensors, meta = S.sd21(SEED)
    x = torch.from_numpy(S.symmetric(IMAGE_SEED, 3 * SIZE * SIZE, 1.0).reshape(1, 3, SIZE, SIZE))
    out = record(tensors, meta, x)
    info = {"seed": str(SEED), "image_seed": str(IMAGE_SEED), "size": str(SIZE)}
    C.write_safetensors(args.output, out, info)
    print(f"wrote {args.output}: {len(out)} tensors, {os.path.getsize(args.output) / 2**10:.0f} KiB")


if __name__ == "__main__":
    main()
