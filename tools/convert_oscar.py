#!/usr/bin/env python3
"""Convert SD-2.1 (diffusers folder) + an OSCAR checkpoint into one oscar-wgpu model file.

    python tools/convert_oscar.py --sd <sd-2.1 folder> --oscar <oscar.pkl> -o model.safetensors

The output is a single safetensors file: the VAE, the UNet with every OSCAR LoRA adapter
merged and OSCAR's conv_in, the learned `embeddings` and the 8 hyper-encoders, optionally
static rANS tables (`--freqs`, from estimate_freqs.py), plus metadata (configs, per-level
table, content hash). See tools/README.md for the contract.
"""

import argparse
import hashlib
import json
import os
import struct
import sys

import torch

FORMAT = "oscar-wgpu-model"
FORMAT_VERSION = "1"
LORA_ALPHA = 8  # peft's LoraConfig default; OSCAR never overrides it
ADAPTERS = ("encoder", "decoder", "others")  # peft adapter "default_<x>", list "unet_lora_<x>_modules"
TIMESTEPS = [500, 400, 310, 280, 210, 190, 170, 150]  # OSCAR.md, level 0..7
BPP_NOMINAL = [0.0019, 0.0098, 0.0313, 0.0430, 0.0625, 0.0781, 0.0937, 0.1250]
DOWN_IDX = (0, 4, 9)  # backbone convs that are 5x5 stride-2 where the level downsamples
UP_IDX = (0, 4, 8)  # proj (de)convs, mirror image of DOWN_IDX
EMA_BUFFERS = ("initted", "cluster_size", "embed_avg")
# diffusers' pre-0.14 VAE attention names (some SD checkpoints still ship them)
OLD_VAE_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.int32: "I32"}


def decides_indices(name):
    """Whether a tensor decides the token indices (VAE encoder, quant_conv, hyper backbones, quantizers).

    These stay f32 in an f16 file: one index that flips to its runner-up changes the whole
    decoded picture. The Rust loader applies the same rule to GPU storage (src/weights.rs).
    """
    if name.startswith(("vae.encoder.", "vae.quant_conv.")):
        return True
    parts = name.split(".")
    return parts[0] == "hyper" and len(parts) > 3 and parts[2] in ("backbone", "quantizer")


class ConvertError(Exception):
    """A user-facing problem with the inputs (printed without a traceback)."""


# ---------------------------------------------------------------- inputs


def read_json(path):
    if not os.path.isfile(path):
        raise ConvertError(f"missing {path} (is --sd a diffusers SD-2.1 folder?)")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path} is not valid JSON: {e}") from None


def load_weights(folder):
    """State dict of a diffusers sub-folder (safetensors preferred, fp16 variant, then .bin)."""
    from safetensors.torch import load_file

    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return load_file(path)
    path = os.path.join(folder, "diffusion_pytorch_model.bin")
    if os.path.isfile(path):
        return torch.load(path, map_location="cpu", weights_only=True)
    raise ConvertError(f"no diffusion_pytorch_model.safetensors (or .bin) in {folder}")


def load_sd(sd_dir):
    """Configs and state dicts (f32) of the SD-2.1 UNet and VAE."""
    if not os.path.isdir(sd_dir):
        raise ConvertError(f"--sd {sd_dir} is not a folder")
    cfg = {
        "unet": read_json(os.path.join(sd_dir, "unet", "config.json")),
        "vae": read_json(os.path.join(sd_dir, "vae", "config.json")),
        "scheduler": read_json(os.path.join(sd_dir, "scheduler", "scheduler_config.json")),
    }
    for part in ("unet", "vae"):
        need = ["block_out_channels", "in_channels", "out_channels"]
        need += ["cross_attention_dim"] if part == "unet" else ["latent_channels", "scaling_factor"]
        missing = [k for k in need if k not in cfg[part]]
        if missing:
            raise ConvertError(f"{part}/config.json lacks {missing}: not an SD-2.1 {part} config")
    unet = {k: v.float() for k, v in load_weights(os.path.join(sd_dir, "unet")).items()}
    vae = {}
    for k, v in load_weights(os.path.join(sd_dir, "vae")).items():
        parts = k.split(".")
        if "attentions" in parts and parts[-2] in OLD_VAE_ATTN:
            k = ".".join(parts[:-2] + [OLD_VAE_ATTN[parts[-2]], parts[-1]])
            if v.ndim == 4:  # very old 1x1-conv attention projections
                v = v[:, :, 0, 0]
        vae[k] = v.float()
    return cfg, unet, vae


def load_checkpoint(path):
    if not os.path.isfile(path):
        raise ConvertError(f"--oscar {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code; also catches corrupt files
        raise ConvertError(f"cannot load {path} as a torch checkpoint: {str(e).splitlines()[0]}") from None
    if not isinstance(ck, dict) or "hyper_encoders" not in ck:
        raise ConvertError(f"{path} is not an OSCAR checkpoint (no 'hyper_encoders')")
    need = ["embeddings", "rank_unet", "state_dict_unet"] + [f"unet_lora_{a}_modules" for a in ADAPTERS]
    missing = [k for k in need if k not in ck]
    if missing:
        raise ConvertError(f"{path} is not a complete OSCAR checkpoint: missing {missing}")
    return ck


# ---------------------------------------------------------------- UNet merge


def lora_delta(a, b, base_shape, scale, name):
    """scale * B.A in the layout of the base weight (Linear or k x k conv)."""
    r = a.shape[0]
    if b.shape[1] != r or b.ndim != a.ndim:
        raise ConvertError(f"LoRA pair of {name}: A {tuple(a.shape)} and B {tuple(b.shape)} do not chain")
    if a.ndim == 2:
        delta = b.double() @ a.double()
    elif a.ndim == 4:
        if b.shape[2:] != (1, 1):
            raise ConvertError(f"LoRA B of conv {name} must be 1x1, got {tuple(b.shape)}")
        delta = torch.einsum("or,rikl->oikl", b[:, :, 0, 0].double(), a.double())
    else:
        raise ConvertError(f"LoRA A of {name} has unsupported shape {tuple(a.shape)}")
    if tuple(delta.shape) != tuple(base_shape):
        raise ConvertError(
            f"LoRA of {name}: B.A has shape {tuple(delta.shape)} but the base weight is {tuple(base_shape)}"
        )
    return delta * scale


def merge_unet(unet, ck, log=print):
    """SD UNet state dict + OSCAR LoRA (all adapters merged) + OSCAR conv_in, all f32."""
    sdu = ck["state_dict_unet"]
    rank = ck["rank_unet"]
    if not isinstance(rank, int) or rank <= 0:
        raise ConvertError(f"rank_unet must be a positive int, got {rank!r}")
    scale = LORA_ALPHA / rank
    out = dict(unet)
    used = set()
    for key in ("conv_in.base_layer.weight", "conv_in.base_layer.bias"):
        if key not in sdu:
            raise ConvertError(f"state_dict_unet lacks {key} (OSCAR's conv_in)")
        dst = key.replace(".base_layer", "")
        if dst not in unet or unet[dst].shape != sdu[key].shape:
            raise ConvertError(f"OSCAR {key} {tuple(sdu[key].shape)} does not fit SD's {dst}")
        out[dst] = sdu[key].float()
        used.add(key)
    deltas = {}
    for adapter in ADAPTERS:
        modules = ck[f"unet_lora_{adapter}_modules"]
        for mod in modules:
            w = f"{mod}.weight"
            if w not in unet:
                raise ConvertError(f"LoRA target {mod} ({adapter}) is not a module of the SD UNet")
            for suffix in ("weight", "bias"):
                bk = f"{mod}.base_layer.{suffix}"
                if bk in sdu:
                    used.add(bk)
                    if f"{mod}.{suffix}" not in unet or sdu[bk].shape != unet[f"{mod}.{suffix}"].shape:
                        raise ConvertError(f"{bk} {tuple(sdu[bk].shape)} does not fit SD's {mod}.{suffix}")
                    if mod != "conv_in" and not torch.equal(sdu[bk].float(), unet[f"{mod}.{suffix}"]):
                        log(f"warning: {bk} differs from SD's weight; using the checkpoint's")
                    out[f"{mod}.{suffix}"] = sdu[bk].float()
            ka = f"{mod}.lora_A.default_{adapter}.weight"
            kb = f"{mod}.lora_B.default_{adapter}.weight"
            for k in (ka, kb):
                if k not in sdu:
                    raise ConvertError(f"state_dict_unet lacks {k}")
            a, b = sdu[ka].float(), sdu[kb].float()
            if a.shape[0] != rank:
                raise ConvertError(f"{ka} has rank {a.shape[0]}, rank_unet says {rank}")
            used.update((ka, kb))
            d = lora_delta(a, b, unet[w].shape, scale, mod)
            deltas[w] = deltas[w] + d if w in deltas else d
    unused = sorted(set(sdu) - used)
    if unused:
        raise ConvertError(f"state_dict_unet has {len(unused)} keys no module list names, e.g. {unused[:3]}")
    for w, d in deltas.items():
        out[w] = (out[w].double() + d).float()
    log(f"merged LoRA into {len(deltas)} UNet weights (rank {rank}, scale {scale:g})")
    return out


# ---------------------------------------------------------------- hyper-encoders


def hyper_tensors(he):
    """(tensors named hyper.<L>..., per-level info, N, M) from OSCAR's hyper_encoders state dict."""
    out, levels = {}, {}
    for key, v in he.items():
        lvl, _, rest = key.partition(".")
        if not lvl.isdigit():
            raise ConvertError(f"hyper_encoders key {key} does not start with a level index")
        top = rest.split(".")[0]
        if top in ("backbone", "proj"):
            out[f"hyper.{lvl}.{rest}"] = v
        elif rest == "quantizer._codebook.embed":
            if v.ndim == 3 and v.shape[0] == 1:
                v = v[0]
            if v.ndim != 2:
                raise ConvertError(f"{key} has shape {tuple(v.shape)}, expected 1 x codebook_size x dim")
            out[f"hyper.{lvl}.quantizer.codebook"] = v
        elif rest.split(".")[:2] in (["quantizer", "project_in"], ["quantizer", "project_out"]):
            out[f"hyper.{lvl}.{rest}"] = v
        elif rest.startswith("quantizer._codebook.") and rest.split(".")[-1] in EMA_BUFFERS:
            continue
        else:
            raise ConvertError(f"unexpected hyper-encoder tensor {key}")
        levels.setdefault(int(lvl), None)
    if sorted(levels) != list(range(8)):
        raise ConvertError(f"expected hyper-encoders for levels 0..7, found {sorted(levels)}")

    def get(name, ndim=None):
        if name not in out:
            raise ConvertError(f"hyper-encoder tensor {name[len('hyper.'):]} missing from the checkpoint")
        if ndim is not None and out[name].ndim != ndim:
            raise ConvertError(f"{name} has shape {tuple(out[name].shape)}, expected {ndim} dims")
        return out[name]

    info, nm = [], set()
    for lvl in range(8):
        p = f"hyper.{lvl}."
        n = get(p + "backbone.0.weight", 4).shape[0]
        m = get(p + "backbone.13.weight", 4).shape[0]
        if get(p + "proj.12.weight", 4).shape[:2] != (4, m):
            raise ConvertError(f"{p}proj.12.weight should be 4 x {m} x 1 x 1")
        nm.add((n, m))
        down = [get(f"{p}backbone.{i}.weight", 4).shape[-1] for i in DOWN_IDX]
        up = [get(f"{p}proj.{i}.weight", 4).shape[-1] for i in UP_IDX]
        if any(k not in (1, 5) for k in down + up):
            raise ConvertError(f"level {lvl}: resampling convs must be 1x1 or 5x5, got {down} / {up}")
        n_down, n_up = down.count(5), up.count(5)
        if n_down != n_up:
            raise ConvertError(f"level {lvl}: {n_down} stride-2 convs in the backbone but {n_up} deconvs in proj")
        cb = get(p + "quantizer.codebook")
        k, d = cb.shape
        pin = out.get(p + "quantizer.project_in.weight")
        if (pin is None and d != m) or (pin is not None and tuple(pin.shape) != (d, m)):
            raise ConvertError(f"level {lvl}: codebook dim {d} does not fit M={m} / project_in")
        info.append({"level": lvl, "stride": 2**n_down, "codebook_size": k, "codebook_dim": d})
    if len(nm) != 1:
        raise ConvertError(f"hyper-encoders disagree on N, M: {sorted(nm)}")
    n, m = nm.pop()
    return out, info, n, m


# ---------------------------------------------------------------- rANS tables


def load_freqs(path):
    """{level: [counts]} from estimate_freqs.py's JSON ({"0": [...], ..., "7": [...]})."""
    if not os.path.isfile(path):
        raise ConvertError(f"--freqs {path} does not exist")
    try:
        with open(path) as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict) or not raw or any(k not in [str(i) for i in range(8)] for k in raw):
        raise ConvertError(f"{path} must map levels \"0\"..\"7\" to lists of counts")
    return {int(k): v for k, v in raw.items()}


def rans_tensors(freqs, levels):
    """int32 tensors rans.<level>.freq, checked against the levels' codebook sizes."""
    out = {}
    for lvl, counts in sorted(freqs.items()):
        k = levels[lvl]["codebook_size"]
        if not isinstance(counts, list) or len(counts) != k:
            n = len(counts) if isinstance(counts, list) else "no"
            raise ConvertError(f"rANS counts of level {lvl}: {n} values, the codebook has {k}")
        if not all(type(c) is int and 0 < c < 2**31 for c in counts):
            raise ConvertError(f"rANS counts of level {lvl} must be integers in 1..2^31-1 (no zero-probability code)")
        out[f"rans.{lvl}.freq"] = torch.tensor(counts, dtype=torch.int32)
    return out


# ---------------------------------------------------------------- output


def content_hash(tensors):
    """sha256 over (name, 0, safetensors dtype, shape as u64 LE, raw LE bytes) in sorted-name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode() + b"\0" + ST_DTYPE[t.dtype].encode())
        h.update(struct.pack(f"<{t.ndim}Q", *t.shape))
        h.update(tensor_bytes(t))
    return h.hexdigest()


def tensor_bytes(t):
    return t.detach().cpu().numpy().tobytes()  # C order whatever the strides


def write_safetensors(path, tensors, metadata):
    """Plain safetensors writer: tensors laid out in sorted-name order, 8-byte aligned header."""
    header, offset = {"__metadata__": metadata}, 0
    for name in sorted(tensors):
        t = tensors[name]
        n = t.numel() * t.element_size()
        header[name] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for name in sorted(tensors):
            f.write(tensor_bytes(tensors[name]))
    os.replace(tmp, path)


def read_model(path, only=None):
    """(tensors, metadata) of an oscar-wgpu model file, refusing other files.
    only: tensor-name prefixes to load (default all; () for the metadata alone)."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise ConvertError(f"model file {path} does not exist")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ConvertError(f"{path} is not an oscar-wgpu model (convert it with convert_oscar.py)")
            tensors = {k: f.get_tensor(k) for k in f.keys() if only is None or k.startswith(tuple(only))}
    except ConvertError:
        raise
    except Exception as e:  # not safetensors, truncated, ...
        raise ConvertError(f"cannot read {path} as safetensors: {str(e).splitlines()[0]}") from None
    for key in ("levels", "vae_config", "unet_config", "scheduler_config", "content_hash"):
        if key not in meta:
            raise ConvertError(f"{path} lacks metadata '{key}'")
    return tensors, meta


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def convert(sd_dir, oscar_path, dtype="f32", timesteps=None, log=print, freqs=None):
    """Returns (tensors, metadata) of the model file. dtype f16 keeps decides_indices() tensors f32;
    freqs: {level: counts} (load_freqs) stored as int32 `rans.<level>.freq`."""
    if dtype not in ("f32", "f16"):
        raise ConvertError(f"--dtype must be f32 or f16, not {dtype}")
    timesteps = list(TIMESTEPS if timesteps is None else timesteps)
    if len(timesteps) != 8 or any(not 0 <= t < 1000 for t in timesteps):
        raise ConvertError(f"--timesteps needs 8 values in 0..999, got {timesteps}")
    ck = load_checkpoint(oscar_path)
    hyper, levels, n, m = hyper_tensors(ck["hyper_encoders"])
    rans = rans_tensors(freqs, levels) if freqs is not None else {}  # checked before the slow part
    cfg, unet, vae = load_sd(sd_dir)
    unet = merge_unet(unet, ck, log)
    emb = ck["embeddings"].detach().float()
    if emb.ndim == 3 and emb.shape[0] == 1:
        emb = emb[0]
    if tuple(emb.shape) != (77, cfg["unet"]["cross_attention_dim"]):
        raise ConvertError(f"embeddings {tuple(emb.shape)} != 77 x cross_attention_dim "
                           f"{cfg['unet']['cross_attention_dim']}")
    tensors = {"embeddings": emb}
    tensors.update({f"unet.{k}": v for k, v in unet.items()})
    tensors.update({f"vae.{k}": v for k, v in vae.items()})
    tensors.update(hyper)
    for k, v in tensors.items():
        if not v.is_floating_point():
            raise ConvertError(f"{k} is {v.dtype}, expected a float tensor")
        want = torch.float16 if dtype == "f16" and not decides_indices(k) else torch.float32
        tensors[k] = v.detach().to(want).contiguous()
        if not torch.isfinite(tensors[k]).all():
            raise ConvertError(f"{k} has values that are not finite in {dtype}")
    tensors.update(rans)
    for lv in levels:
        lv["timestep"] = timesteps[lv["level"]]
        lv["bpp_nominal"] = BPP_NOMINAL[lv["level"]]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dtype": dtype,
        "unet_config": compact(cfg["unet"]),
        "vae_config": compact(cfg["vae"]),
        "scheduler_config": compact(cfg["scheduler"]),
        "levels": compact(levels),
        "hyper": compact({"N": n, "M": m}),
        "content_hash": content_hash(tensors),
    }
    return tensors, meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sd", required=True, help="SD-2.1 diffusers folder (unet/, vae/, scheduler/)")
    ap.add_argument("--oscar", required=True, help="OSCAR checkpoint (oscar.pkl)")
    ap.add_argument("-o", "--output", required=True, help="output .safetensors file")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16"], help="float storage type (default f32)")
    ap.add_argument("--timesteps", help="8 comma-separated timesteps for levels 0..7 "
                    f"(default {','.join(map(str, TIMESTEPS))})")
    ap.add_argument("--freqs", help="static rANS counts per level (JSON from estimate_freqs.py)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing output file")
    args = ap.parse_args(argv)
    try:
        if os.path.exists(args.output) and not args.force:
            raise ConvertError(f"{args.output} exists (use --force to overwrite)")
        ts = None
        if args.timesteps:
            try:
                ts = [int(t) for t in args.timesteps.split(",")]
            except ValueError:
                raise ConvertError(f"--timesteps must be comma-separated integers: {args.timesteps}") from None
        freqs = load_freqs(args.freqs) if args.freqs else None
        tensors, meta = convert(args.sd, args.oscar, args.dtype, ts,
                                log=lambda m: print(m, file=sys.stderr if m.startswith("warning") else sys.stdout),
                                freqs=freqs)
        write_safetensors(args.output, tensors, meta)
    except ConvertError as e:
        print(f"convert_oscar: error: {e}", file=sys.stderr)
        return 2
    size = os.path.getsize(args.output)
    print(f"wrote {args.output}: {len(tensors)} tensors, {size / 2**20:.1f} MiB, {args.dtype}, "
          f"hash {meta['content_hash'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
