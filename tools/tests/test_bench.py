"""bench_torch.py times the real pipeline; compare.py lines two result files up."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import bench_torch as B
import compare
from conftest import FIXTURES, TOOLS

MODEL = os.path.join(FIXTURES, "oscar-tiny.safetensors")


@pytest.mark.parametrize("model, dtype, tol", [("oscar-tiny.safetensors", "f32", 1e-3),
                                               ("oscar-tiny-f16.safetensors", "f16", 0.25)])
def test_bench_pipeline_is_oscar(tiny, reference, model, dtype, tol):
    """The timed forward pass reproduces the reference tokens (f16 too: its encode side is f32) and picture."""
    from make_fixtures import load_image

    m = B.place(B.file_model(os.path.join(FIXTURES, model), [5]), torch.device("cpu"), dtype)
    idx, image = B.forward(m, load_image(os.path.join(tiny, "astronaut_256.png")), 5, B.Clock(torch.device("cpu")))
    assert torch.equal(idx.int(), reference["l5.indices"])
    assert image.dtype == (torch.float16 if dtype == "f16" else torch.float32)
    assert (image.float() - reference["l5.image"]).abs().max().item() < tol  # f16 runs the decode side in f16


def test_json_records(capsys):
    assert B.main(["--model", MODEL, "--sizes", "64", "--levels", "5,0", "--runs", "2", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert len(recs) == 2 * len(B.STAGES)
    assert all(set(r) == set(compare.KEYS) for r in recs)
    assert {(r["level"], r["stage"]) for r in recs} == {(lv, s) for lv in (5, 0) for s in B.STAGES}
    for r in recs:
        assert r["backend"] == "torch-cpu" and r["precision"] == "f32" and r["size"] == 64 and r["adapter"]
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["peak_fraction"] == 0 and r["peak_memory_bytes"] == 0
    flops = {(r["level"], r["stage"]): r["gflops"] for r in recs}
    assert flops[5, "unet"] > 0 and flops[5, "vae_encode"] > 0 and flops[0, "decode_total"] > 0


def test_synthetic_architecture():
    """--synthetic builds SD-2.1's UNet and VAE (parameter counts of the real checkpoints) and N=192, M=320."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**B.SD21_UNET), AutoencoderKL(**B.SD21_VAE)
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    latents = torch.zeros(1, 4, 64, 64)
    for lvl, (stride, k) in enumerate(B.SD21_LEVELS):
        he = B.synthetic_hyper(lvl)
        with torch.no_grad():
            feats = he.backbone(latents)
            assert feats.shape == (1, 320, 64 // stride, 64 // stride)
            assert he.proj(feats).shape == (1, 4, 64, 64)
        assert he.quantizer.codebook.shape == (k, 32) and he.quantizer.project_in.weight.shape == (32, 320)


def test_bench_refuses_bad_arguments(capsys):
    for args, message in ((["--synthetic", "--sizes", "100"], "multiple of 64"),
                          (["--synthetic", "--levels", "8"], "level 0..7"),
                          (["--model", "/nonexistent.safetensors"], "does not exist"),
                          (["--synthetic", "--runs", "0"], "at least 1")):
        assert B.main(args) == 2 and message in capsys.readouterr().err


def record(stage, ms, level=5, **kw):
    base = dict({k: 0 for k in compare.KEYS}, adapter="x", backend="torch-cpu", driver="d", precision="f32",
                version="v", size=256, level=level, stage=stage, median_ms=ms)
    return {**base, **kw}


def test_compare(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([record("unet", 100.0), record("vae_decode", 50.0)]))
    b.write_text(json.dumps([record("unet", 25.0, backend="wgpu"), record("range_decode", 1.0)]))
    assert compare.main([str(a), str(b)]) == 0
    rows = {line.split()[2]: line.split()[3:] for line in capsys.readouterr().out.splitlines()[3:]}
    assert rows["unet"] == ["100.00", "25.00", "0.250"]
    assert rows["vae_decode"] == ["50.00", "-", "-"] and rows["range_decode"] == ["-", "1.00", "-"]
    assert list(rows) == ["range_decode", "unet", "vae_decode"]  # pipeline order


def test_compare_warns_of_an_unsteady_machine(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([record("unet", 100.0, machine_drift=0.01)]))
    b.write_text(json.dumps([record("unet", 90.0, machine_drift=0.12)]))
    assert compare.main([str(a), str(b)]) == 0
    err = capsys.readouterr().err
    assert "b's probes moved by 12.0 %" in err and "a's" not in err


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"), ("[]", "non-empty list"), ('[{"size": 1}]', "lacks"),
    (json.dumps([record("unet", 1.0)] * 2), "two records"),
])
def test_compare_refuses_bad_files(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    p = subprocess.run([sys.executable, os.path.join(TOOLS, "compare.py"), str(bad), str(bad)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr


def test_synthetic_weights_are_the_engines():
    """tools/synthetic.py makes the engine's seeded weights (src/model/synthetic.rs pins the same numbers)."""
    import synthetic as S

    w = S.weight(7, "unet.conv_in.weight", (320, 4, 3, 3))
    assert w.dtype == torch.float32
    assert w.flatten()[:3].tolist() == [np.float32(v) for v in (0.025284609, -0.13699603, 0.017101586)]
    assert abs(w.double().sum().item() + 7.586133746564883) < 1e-9
    assert torch.equal(S.weight(7, "vae.decoder.conv_norm_out.weight", (128,)), torch.ones(128))
    assert torch.equal(S.weight(7, "vae.decoder.conv_norm_out.bias", (128,)), torch.zeros(128))
