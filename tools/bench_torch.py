#!/usr/bin/env python3
"""Time OSCAR's forward pass in PyTorch, stage by stage (the baseline for `oscar-wgpu bench`).

    python tools/bench_torch.py --synthetic --sizes 256,512 --levels 5 --json > torch.json
    python tools/bench_torch.py --model model.safetensors --device cuda --dtype f16

The real classes (diffusers AutoencoderKL / UNet2DConditionModel, oscar_torch's compressai
hyper-encoder, vector-quantize-pytorch) run one encode and one decode (a single UNet step) of a
random image per run. Weights: a converted model file (--model) or seeded random weights of
the full SD-2.1 OSCAR architecture (--synthetic: no download). --dtype f16 mirrors the model
file's f16 policy: what decides the token indices (VAE encoder, hyper backbone, VQ) runs in
f32, the decode side (hyper projection, UNet, VAE decoder) in f16.

Stages: vae_encode (latent mean and channel norms), hyper_encode (backbone), vq,
hyper_decode (codebook lookup + project_out, projection network, norm rescale), unet (one
pass + the v-prediction step), vae_decode (incl. clamp); encode_total / decode_total are the
sums of their stages. Each stage is timed between device synchronisations.
"""

import argparse
import json
import os
import platform
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise from the VQ library

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_oscar as C  # noqa: E402
from synthetic import SD21_LEVELS, SD21_SCHEDULER, SD21_UNET, SD21_VAE, synthetic_hyper  # noqa: E402,F401

STAGES = ["vae_encode", "hyper_encode", "vq", "hyper_decode", "unet", "vae_decode", "encode_total", "decode_total"]
ENCODE, DECODE = STAGES[:3], STAGES[3:6]


class BenchError(Exception):
    """A user-facing problem (printed without a traceback)."""


def synthetic_model(levels, seed):
    """Full-size SD-2.1 OSCAR with seeded random weights (PyTorch's default init)."""
    import oscar_torch as O
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    return SimpleNamespace(vae=AutoencoderKL(**SD21_VAE).eval(), unet=UNet2DConditionModel(**SD21_UNET).eval(),
                           hes={lvl: synthetic_hyper(lvl) for lvl in levels},
                           emb=torch.randn(77, SD21_UNET["cross_attention_dim"]),
                           timesteps=C.TIMESTEPS, acp=O.alphas_cumprod(SD21_SCHEDULER))


def file_model(path, levels):
    import oscar_torch as O

    try:
        tensors, meta = C.read_model(path)
    except C.ConvertError as e:
        raise BenchError(str(e)) from None
    vae, unet = O.diffusers_models(tensors, meta)
    return SimpleNamespace(vae=vae, unet=unet, hes=O.hyper_encoders_from_model(tensors, levels),
                           emb=tensors["embeddings"].float(),
                           timesteps=[lv["timestep"] for lv in json.loads(meta["levels"])],
                           acp=O.alphas_cumprod(json.loads(meta["scheduler_config"])))


def place(m, device, dtype):
    """Move to the device; f16: the decode side only (the encode side decides the indices)."""
    m.dec_dtype = torch.float16 if dtype == "f16" else torch.float32
    m.vae.to(device)
    m.vae.decoder.to(m.dec_dtype)
    m.vae.post_quant_conv.to(m.dec_dtype)
    m.unet.to(device, m.dec_dtype)
    for he in m.hes.values():
        he.to(device)
        he.proj.to(m.dec_dtype)
    m.emb = m.emb.to(device, m.dec_dtype)
    return m


class Clock:
    """Per-stage wall time between syncs, CUDA peak memory, and (when counting) FLOPs."""

    def __init__(self, device, count_flops=False):
        self.cuda, self.count = device.type == "cuda", count_flops
        self.ms, self.peak, self.flops = {}, {}, {}

    @contextmanager
    def __call__(self, name):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with FlopCounterMode(display=False) if self.count else nullcontext() as counter:
            yield
        if self.cuda:
            torch.cuda.synchronize()
        self.ms[name] = (time.perf_counter() - t0) * 1e3
        self.peak[name] = torch.cuda.max_memory_allocated() if self.cuda else 0
        if self.count:
            self.flops[name] = counter.get_total_flops()


@torch.inference_mode()
def forward(m, x, lvl, clock):
    """One encode + decode of x at level lvl, each stage under clock. Returns (indices, image)."""
    import oscar_torch as O

    he, t = m.hes[lvl], m.timesteps[lvl]
    with clock("vae_encode"):
        lat = O.encode_latents(m.vae, x)
        a_z = lat.flatten(2).norm(dim=-1)
    with clock("hyper_encode"):
        feats = he.backbone(lat)
    b, c, h, w = feats.shape
    with clock("vq"):
        idx = he.quantizer(feats.permute(0, 2, 3, 1).reshape(b, h * w, c))[1]
    with clock("hyper_decode"):
        q = he.quantizer.get_output_from_indices(idx).to(m.dec_dtype)
        z_hat = he.proj(q.reshape(b, h, w, -1).permute(0, 3, 1, 2))
        z_t = z_hat * (a_z / z_hat.float().flatten(2).norm(dim=-1)).to(m.dec_dtype)[..., None, None]
    with clock("unet"):
        v = m.unet(z_t, t, encoder_hidden_states=m.emb[None]).sample
        a = float(m.acp[t])
        x0 = a ** 0.5 * z_t - (1 - a) ** 0.5 * v
    with clock("vae_decode"):
        image = m.vae.decode(x0 / m.vae.config.scaling_factor).sample.clamp(-1, 1)
    return idx.reshape(h, w), image


def bench(m, device, size, lvl, warmup, runs):
    """{stage: (times_ms, flops, peak_bytes)} for one image size and level."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size)).to(device) * 2 - 1
    counted = Clock(device, count_flops=True)  # an untimed run that counts FLOPs (and warms up)
    forward(m, x, lvl, counted)
    for _ in range(warmup - 1):
        forward(m, x, lvl, Clock(device))
    clocks = []
    for _ in range(runs):
        clocks.append(Clock(device))
        forward(m, x, lvl, clocks[-1])
    out = {}
    for s in ENCODE + DECODE:
        out[s] = ([ck.ms[s] for ck in clocks], counted.flops[s], max(ck.peak[s] for ck in clocks))
    for total, parts in (("encode_total", ENCODE), ("decode_total", DECODE)):
        out[total] = ([sum(ck.ms[s] for s in parts) for ck in clocks], sum(counted.flops[s] for s in parts),
                      max(ck.peak[s] for ck in clocks for s in parts))
    return out


def adapter_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def records(results, device, dtype):
    info = {"adapter": adapter_name(device), "backend": f"torch-{device.type}",
            "driver": f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}",
            "precision": dtype, "version": torch.__version__}
    out = []
    for (size, lvl), stages in results.items():
        for stage in STAGES:
            times, flops, peak = stages[stage]
            med = sorted(times)[len(times) // 2]
            out.append(dict(info, size=size, level=lvl, stage=stage, median_ms=round(med, 3),
                            min_ms=round(min(times), 3), max_ms=round(max(times), 3),
                            gflops=round(flops / med / 1e6, 2) if med > 0 else 0, peak_fraction=0,
                            peak_memory_bytes=peak))
    return out


def table(recs):
    r0 = recs[0]
    lines = [f"{r0['backend']} {r0['precision']} on {r0['adapter']} ({r0['driver']}, "
             f"{torch.get_num_threads()} threads)",
             f"{'size':>5} {'level':>5}  {'stage':<13} {'median_ms':>10} {'min_ms':>10} {'max_ms':>10} "
             f"{'GFLOP/s':>8} {'peak_MiB':>9}"]
    for r in recs:
        lines.append(f"{r['size']:>5} {r['level']:>5}  {r['stage']:<13} {r['median_ms']:>10.1f} {r['min_ms']:>10.1f} "
                     f"{r['max_ms']:>10.1f} {r['gflops']:>8.1f} {r['peak_memory_bytes'] / 2**20:>9.0f}")
    return "\n".join(lines)


def int_list(text, name, ok, what):
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise BenchError(f"{name} must be comma-separated integers, got {text}") from None
    bad = [v for v in vals if not ok(v)]
    if bad:
        raise BenchError(f"{name}: {bad[0]} is not {what}")
    return vals


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="oscar-wgpu model file (convert_oscar.py)")
    src.add_argument("--synthetic", action="store_true", help="seeded random weights of the full SD-2.1 OSCAR")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16"])
    ap.add_argument("--sizes", default="256,512", help="square image sizes, multiples of 64 (default 256,512)")
    ap.add_argument("--levels", default="5", help="levels 0..7 (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs, at least 1 (it counts FLOPs)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="weight seed for --synthetic")
    ap.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    args = ap.parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # .to(float16) advice that does not apply here
    try:
        sizes = int_list(args.sizes, "--sizes", lambda v: v > 0 and v % 64 == 0, "a positive multiple of 64")
        levels = int_list(args.levels, "--levels", lambda v: 0 <= v < 8, "a level 0..7")
        if args.warmup < 1 or args.runs < 1:
            raise BenchError("--warmup and --runs must be at least 1")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise BenchError("--device cuda: PyTorch sees no CUDA device")
        device = torch.device(args.device)
        m = synthetic_model(levels, args.seed) if args.synthetic else file_model(args.model, levels)
        m = place(m, device, args.dtype)
        results = {}
        for size in sizes:
            for lvl in levels:
                print(f"bench {size}x{size} level {lvl}", file=sys.stderr)
                results[size, lvl] = bench(m, device, size, lvl, args.warmup, args.runs)
    except BenchError as e:
        print(f"bench_torch: error: {e}", file=sys.stderr)
        return 2
    except torch.OutOfMemoryError:
        print(f"bench_torch: error: out of {args.device} memory (try smaller --sizes)", file=sys.stderr)
        return 2
    recs = records(results, device, args.dtype)
    print(json.dumps(recs, indent=1) if args.json else table(recs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
