import hashlib
import json
import os
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import convert_oscar as C
from conftest import FIXTURES, TOOLS


def sd_dir(tiny):
    return os.path.join(tiny, "sd")


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def file_hash(path):
    """content_hash recomputed from the raw file (independent of the converter's code path)."""
    header, start = read_header(path)
    data = open(path, "rb").read()
    h = hashlib.sha256()
    for name in sorted(k for k in header if k != "__metadata__"):
        e = header[name]
        h.update(name.encode() + b"\0" + e["dtype"].encode() + struct.pack(f"<{len(e['shape'])}Q", *e["shape"]))
        a, b = e["data_offsets"]
        h.update(data[start + a:start + b])
    return h.hexdigest()


# ---------------------------------------------------------------- merge vs peft


def test_merge_matches_peft_merge_and_unload(tiny, ckpt, converted):
    """Wrap the SD UNet with peft exactly as OSCAR does, load state_dict_unet, merge: same tensors."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model

    unet = UNet2DConditionModel.from_pretrained(sd_dir(tiny), subfolder="unet")
    confs = {a: LoraConfig(r=ckpt["rank_unet"], init_lora_weights="gaussian",
                           target_modules=ckpt[f"unet_lora_{a}_modules"]) for a in C.ADAPTERS}
    assert all(c.lora_alpha == C.LORA_ALPHA for c in confs.values())
    model = get_peft_model(unet, confs["encoder"], adapter_name="default_encoder")
    model.add_adapter("default_decoder", confs["decoder"])
    model.add_adapter("default_others", confs["others"])
    params = dict(model.base_model.model.named_parameters())
    lora = {n for n in params if "lora" in n or "conv_in" in n}  # what OSCAR's load_ckpt copies
    assert lora == set(ckpt["state_dict_unet"])
    with torch.no_grad():
        for n in lora:
            params[n].copy_(ckpt["state_dict_unet"][n])
    merged = model.merge_and_unload(adapter_names=[f"default_{a}" for a in C.ADAPTERS]).state_dict()

    tensors, _ = converted
    ours = {k[len("unet."):]: v for k, v in tensors.items() if k.startswith("unet.")}
    assert set(ours) == set(merged)
    for k, v in merged.items():  # the converter sums in f64, peft in f32: equal to ~1 ulp
        torch.testing.assert_close(ours[k], v, rtol=1e-6, atol=1e-7, msg=k)


def test_merge_really_changes_weights(tiny, converted):
    sd_unet = load_file(os.path.join(sd_dir(tiny), "unet", "diffusion_pytorch_model.safetensors"))
    tensors, _ = converted
    changed = [k for k, v in sd_unet.items() if not torch.equal(v.float(), tensors["unet." + k])]
    assert "conv_in.weight" in changed and "conv_in.bias" in changed
    assert len(changed) == 257 + 1  # every LoRA target's weight, plus conv_in's bias


# ---------------------------------------------------------------- everything else


def test_passthrough_tensors(tiny, ckpt, converted):
    tensors, _ = converted
    vae = load_file(os.path.join(sd_dir(tiny), "vae", "diffusion_pytorch_model.safetensors"))
    assert {k for k in tensors if k.startswith("vae.")} == {"vae." + k for k in vae}
    for k, v in vae.items():
        assert torch.equal(tensors["vae." + k], v.float()), k
    assert torch.equal(tensors["embeddings"], ckpt["embeddings"].float())
    he = ckpt["hyper_encoders"]
    hyper = {k for k in tensors if k.startswith("hyper.")}
    want = {"hyper." + k for k in he if ".backbone." in k or ".proj." in k}
    want |= {f"hyper.{lvl}.quantizer.codebook" for lvl in range(8)}
    assert hyper == want
    for lvl in range(8):
        assert torch.equal(tensors[f"hyper.{lvl}.quantizer.codebook"], he[f"{lvl}.quantizer._codebook.embed"][0])
    for k in want - {f"hyper.{lvl}.quantizer.codebook" for lvl in range(8)}:
        assert torch.equal(tensors[k], he[k[len("hyper."):]]), k
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in tensors.values())


def test_metadata(tiny, converted):
    _, meta = converted
    assert meta["format"] == "oscar-wgpu-model" and meta["format_version"] == "1" and meta["dtype"] == "f32"
    for key, path in (("unet_config", "unet/config.json"), ("vae_config", "vae/config.json"),
                      ("scheduler_config", "scheduler/scheduler_config.json")):
        assert json.loads(meta[key]) == json.load(open(os.path.join(sd_dir(tiny), path)))
        assert ": " not in meta[key] and ", " not in meta[key]  # compact
    ref = json.load(open(os.path.join(tiny, "reference.json")))
    levels = json.loads(meta["levels"])
    assert [lv["stride"] for lv in levels] == [8, 4, 2, 2, 1, 1, 1, 1]
    assert [lv["codebook_size"] for lv in levels] == [lv["codebook"] for lv in ref["levels"]]
    assert [lv["timestep"] for lv in levels] == ref["timesteps"]
    assert [lv["bpp_nominal"] for lv in levels] == ref["bpp_nominal"]
    assert [lv["level"] for lv in levels] == list(range(8))
    assert all(lv["codebook_dim"] == 32 for lv in levels)
    for lv, r in zip(levels, ref["levels"]):  # 256x256 image -> 32x32 latent -> 32/stride tokens
        assert r["tokens"] == [32 // lv["stride"]] * 2
    assert json.loads(meta["hyper"]) == {"N": 32, "M": 32}
    assert all(isinstance(v, str) for v in meta.values())


def test_written_file(tiny, converted, tmp_path):
    out = tmp_path / "m.safetensors"
    assert C.main(["--sd", sd_dir(tiny), "--oscar", os.path.join(tiny, "oscar.pkl"), "-o", str(out)]) == 0
    tensors, meta = converted
    header, _ = read_header(out)
    assert header["__metadata__"] == meta
    names = [k for k in header if k != "__metadata__"]
    offsets = [header[k]["data_offsets"][0] for k in names]
    by_offset = [k for _, k in sorted(zip(offsets, names))]
    assert by_offset == sorted(names)  # data laid out in sorted-name order
    loaded = load_file(out)
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v), k
    assert file_hash(out) == meta["content_hash"]
    again = tmp_path / "again.safetensors"
    C.main(["--sd", sd_dir(tiny), "--oscar", os.path.join(tiny, "oscar.pkl"), "-o", str(again)])
    assert out.read_bytes() == again.read_bytes()  # deterministic


def test_f16_and_timesteps(tiny, converted, tmp_path):
    out = tmp_path / "h.safetensors"
    args = ["--sd", sd_dir(tiny), "--oscar", os.path.join(tiny, "oscar.pkl"), "-o", str(out), "--dtype", "f16",
            "--timesteps", "900,800,700,600,500,400,300,200"]
    assert C.main(args) == 0
    header, _ = read_header(out)
    meta = header["__metadata__"]
    assert meta["dtype"] == "f16" and file_hash(out) == meta["content_hash"]
    assert [lv["timestep"] for lv in json.loads(meta["levels"])] == [900, 800, 700, 600, 500, 400, 300, 200]
    loaded = load_file(out)
    for k, v in converted[0].items():  # what decides the token indices stays f32, the rest is f16
        want = v if C.decides_indices(k) else v.half()
        assert loaded[k].dtype == want.dtype and torch.equal(loaded[k], want), k


def test_decides_indices_rule():
    keep = ["vae.encoder.conv_in.weight", "vae.quant_conv.bias", "hyper.0.backbone.0.weight",
            "hyper.7.quantizer.codebook", "hyper.3.quantizer.project_in.weight", "hyper.3.quantizer.project_out.bias"]
    half = ["vae.decoder.conv_in.weight", "vae.post_quant_conv.weight", "hyper.0.proj.0.weight", "embeddings",
            "unet.conv_in.weight", "unet.down_blocks.0.attentions.0.proj_in.weight"]
    assert all(C.decides_indices(k) for k in keep) and not any(C.decides_indices(k) for k in half)


def test_committed_fixtures_are_current(converted, converted_f16):
    for name, (_, want) in (("oscar-tiny.safetensors", converted), ("oscar-tiny-f16.safetensors", converted_f16)):
        path = os.path.join(FIXTURES, name)
        if not os.path.exists(path):
            pytest.skip(f"{path} not generated yet")
        meta = read_header(path)[0]["__metadata__"]
        assert file_hash(path) == meta["content_hash"]
        assert meta == want, f"{name} is stale: regenerate it (tools/README.md)"


def test_f16_fixture_encodes_the_reference_indices(tiny, reference):
    """The committed f16 file: encode-side tensors F32, and its weights give the reference tokens at every level."""
    import oscar_torch as O
    from make_fixtures import load_image

    path = os.path.join(FIXTURES, "oscar-tiny-f16.safetensors")
    if not os.path.exists(path):
        pytest.skip(f"{path} not generated yet")
    header, _ = read_header(path)
    dtypes = {k: e["dtype"] for k, e in header.items() if k != "__metadata__"}
    assert {d for k, d in dtypes.items() if C.decides_indices(k)} == {"F32"}
    assert {d for k, d in dtypes.items() if not C.decides_indices(k)} == {"F16"}
    assert any(k.startswith("vae.encoder.") for k in dtypes) and "vae.quant_conv.weight" in dtypes

    tensors, meta = C.read_model(path)
    vae, hes = O.vae_model(tensors, meta), O.hyper_encoders_from_model(tensors)
    x = load_image(os.path.join(tiny, "astronaut_256.png"))

    def indices(vae, hes):
        with torch.no_grad():
            lat = O.encode_latents(vae, x)
            return lat, [hes[lvl].quantize(hes[lvl].backbone(lat))[0] for lvl in range(8)]

    lat, idx = indices(vae, hes)
    torch.testing.assert_close(lat, reference["latents"], rtol=1e-5, atol=1e-6)
    for lvl in range(8):
        assert torch.equal(idx[lvl], reference[f"l{lvl}.indices"]), f"level {lvl}"
    # the rule matters: the same file with the encode side rounded to f16 flips tokens
    rounded = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    _, idx16 = indices(O.vae_model(rounded, meta), O.hyper_encoders_from_model(rounded))
    assert not all(torch.equal(idx16[lvl], reference[f"l{lvl}.indices"]) for lvl in range(8))


# ---------------------------------------------------------------- end to end through diffusers


def test_converted_unet_reproduces_reference_v(converted, reference):
    from diffusers import UNet2DConditionModel

    tensors, meta = converted
    unet = UNet2DConditionModel.from_config(json.loads(meta["unet_config"])).eval()
    unet.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("unet.")}, strict=True)
    t = json.loads(meta["levels"])[7]["timestep"]
    assert t == 150
    with torch.no_grad():
        v = unet(reference["l7.z_t"], t, encoder_hidden_states=tensors["embeddings"][None]).sample
    want = reference["l7.v"]
    assert ((v - want).abs().max() / want.abs().max()).item() < 1e-4


# ---------------------------------------------------------------- refusals


@pytest.fixture
def bad_ckpt(ckpt, tmp_path):
    def make(edit):
        ck = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ckpt.items()}
        edit(ck)
        path = tmp_path / "bad.pkl"
        torch.save(ck, path)
        return str(path)

    return make


def run_main(capsys, *args):
    rc = C.main(list(args))
    return rc, capsys.readouterr().err


LORA_B = "down_blocks.0.attentions.0.proj_in.lora_B.default_encoder.weight"
LORA_A = "up_blocks.1.resnets.0.conv1.lora_A.default_decoder.weight"


@pytest.mark.parametrize("edit, message", [
    (lambda ck: ck["state_dict_unet"].pop(LORA_B), f"lacks {LORA_B}"),
    (lambda ck: ck["state_dict_unet"].__setitem__(LORA_A, torch.zeros(8, 7, 3, 3)), "up_blocks.1.resnets.0.conv1"),
    (lambda ck: ck["state_dict_unet"].__setitem__(LORA_B, torch.zeros(31, 8)), "down_blocks.0.attentions.0.proj_in"),
    (lambda ck: ck.__setitem__("rank_unet", 4), "rank"),
    (lambda ck: ck["state_dict_unet"].pop("conv_in.base_layer.weight"), "conv_in.base_layer.weight"),
    (lambda ck: ck.pop("unet_lora_others_modules"), "unet_lora_others_modules"),
    (lambda ck: ck["hyper_encoders"].pop("3.quantizer._codebook.embed"), "3.quantizer.codebook"),
    (lambda ck: ck.__setitem__("embeddings", torch.zeros(77, 33)), "embeddings"),
    (lambda ck: [ck.pop(k) for k in list(ck) if k != "state_dict_unet"], "not an OSCAR checkpoint"),
], ids=["missing-lora", "conv-lora-shape", "linear-lora-shape", "rank", "missing-conv_in", "missing-list",
        "missing-codebook", "embeddings-shape", "not-oscar"])
def test_refuses_bad_checkpoint(tiny, bad_ckpt, tmp_path, capsys, edit, message):
    out = tmp_path / "o.safetensors"
    rc, err = run_main(capsys, "--sd", sd_dir(tiny), "--oscar", bad_ckpt(edit), "-o", str(out))
    assert rc != 0 and message in err and not out.exists()


def test_refuses_pickled_code(tiny, tmp_path, capsys):
    import argparse

    path = tmp_path / "code.pkl"
    torch.save({"hyper_encoders": argparse.Namespace(x=1)}, path)  # needs unpickling a class
    rc, err = run_main(capsys, "--sd", sd_dir(tiny), "--oscar", str(path), "-o", str(tmp_path / "o.safetensors"))
    assert rc != 0 and "cannot load" in err


def test_refuses_bad_sd_folder(tiny, tmp_path, capsys):
    sd = tmp_path / "sd"  # the tiny folder without unet/config.json
    (sd / "unet").mkdir(parents=True)
    for sub in ("vae", "scheduler"):
        (sd / sub).symlink_to(os.path.join(sd_dir(tiny), sub), target_is_directory=True)
    (sd / "unet" / "diffusion_pytorch_model.safetensors").symlink_to(
        os.path.join(sd_dir(tiny), "unet", "diffusion_pytorch_model.safetensors"))
    rc, err = run_main(capsys, "--sd", str(sd), "--oscar", os.path.join(tiny, "oscar.pkl"), "-o",
                       str(tmp_path / "o.safetensors"))
    assert rc != 0 and "unet/config.json" in err


def test_refuses_existing_output(tiny, tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"keep me")
    rc, err = run_main(capsys, "--sd", sd_dir(tiny), "--oscar", os.path.join(tiny, "oscar.pkl"), "-o", str(out))
    assert rc != 0 and "--force" in err and out.read_bytes() == b"keep me"


def test_cli_error_is_one_clean_line(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(TOOLS, "convert_oscar.py"), "--sd", str(tmp_path / "nope"),
                        "--oscar", "x.pkl", "-o", str(tmp_path / "o.safetensors")], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("convert_oscar: error:") and "Traceback" not in p.stderr


def test_base_layer_from_checkpoint_is_used_and_checked(tiny, ckpt):
    """A checkpoint that also stores a module's base_layer: equal to SD -> silent; different -> warned, used."""
    sd_unet = load_file(os.path.join(sd_dir(tiny), "unet", "diffusion_pytorch_model.safetensors"))
    mod = "mid_block.attentions.0.proj_in"
    lines = []
    for bump in (0.0, 1.0):
        ck = dict(ckpt, state_dict_unet=dict(ckpt["state_dict_unet"]))
        ck["state_dict_unet"][f"{mod}.base_layer.weight"] = sd_unet[f"{mod}.weight"].float() + bump
        lines.append([])
        merged = C.merge_unet({k: v.float() for k, v in sd_unet.items()}, ck, log=lines[-1].append)
        if bump:
            ref = C.merge_unet({k: v.float() for k, v in sd_unet.items()}, ckpt, log=lambda *a: None)
            torch.testing.assert_close(merged[f"{mod}.weight"], ref[f"{mod}.weight"] + 1.0)
    assert not any("warning" in m for m in lines[0])
    assert any("warning" in m and mod in m for m in lines[1])
