"""estimate_freqs.py and convert_oscar.py --freqs: static rANS tables on the tiny model."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import convert_oscar as C
import estimate_freqs as E
import oscar_torch as O
from conftest import FIXTURES
from test_convert import file_hash, read_header

MODEL = os.path.join(FIXTURES, "oscar-tiny.safetensors")
CROPS = {"a.png": (30, 40, 130, 120), "b.jpg": (100, 60, 164, 256)}  # left, top, right, bottom


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder with two crops of the fixture photo that are not multiples of 64 (and a file to skip)."""
    d = tmp_path_factory.mktemp("images")
    photo = Image.open(os.path.join(FIXTURES, "astronaut_256.png")).convert("RGB")
    for name, box in CROPS.items():
        photo.crop(box).save(d / name, quality=95)
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def freqs_json(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("freqs") / "freqs.json"
    assert E.main(["--model", MODEL, "--images", str(images), "-o", str(out)]) == 0
    return out


def test_counts_are_the_encoder_tokens_plus_one(images, freqs_json):
    freqs = json.loads(freqs_json.read_text())
    tensors, meta = C.read_model(MODEL)
    levels = json.loads(meta["levels"])
    assert sorted(freqs, key=int) == [str(i) for i in range(8)]
    vae, hes = O.vae_model(tensors, meta), O.hyper_encoders_from_model(tensors)
    want = {lv["level"]: np.ones(lv["codebook_size"], dtype=np.int64) for lv in levels}
    for name in sorted(CROPS):  # padded by hand: numpy edge mode on the 8-bit pixels
        img = np.array(Image.open(images / name).convert("RGB"))
        h, w = img.shape[:2]
        img = np.pad(img, ((0, -h % 64), (0, -w % 64), (0, 0)), mode="edge")
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            lat = O.encode_latents(vae, x)
            for lvl, he in hes.items():
                want[lvl] += np.bincount(he.quantize(he.backbone(lat))[0].flatten().numpy(),
                                         minlength=len(want[lvl]))
    for lv in levels:
        got = freqs[str(lv["level"])]
        assert got == want[lv["level"]].tolist()
        tokens = (128 * 128 + 64 * 256) // (8 * lv["stride"]) ** 2  # padded: 100x80 -> 128x128, 64x196 -> 64x256
        assert sum(got) - len(got) == tokens and min(got) >= 1


def test_convert_with_freqs_and_write_into_agree(tiny, images, freqs_json, tmp_path):
    converted = tmp_path / "c.safetensors"
    assert C.main(["--sd", os.path.join(tiny, "sd"), "--oscar", os.path.join(tiny, "oscar.pkl"), "-o",
                   str(converted), "--freqs", str(freqs_json)]) == 0
    loaded = load_file(converted)
    freqs = json.loads(freqs_json.read_text())
    for lvl in range(8):
        t = loaded[f"rans.{lvl}.freq"]
        assert t.dtype == torch.int32 and t.tolist() == freqs[str(lvl)]
    meta = read_header(converted)[0]["__metadata__"]
    assert file_hash(converted) == meta["content_hash"]
    base = read_header(MODEL)[0]["__metadata__"]
    assert meta["content_hash"] != base["content_hash"] and dict(meta, content_hash=0) == dict(base, content_hash=0)

    copied = tmp_path / "w.safetensors"
    assert E.main(["--model", MODEL, "--images", str(images), "--write-into", MODEL,
                   "-o", str(copied)]) == 0
    (h1, start1), (h2, start2) = read_header(copied), read_header(converted)
    assert h1 == h2  # same tensors, offsets and metadata (content_hash included); only key order may differ
    assert copied.read_bytes()[start1:] == converted.read_bytes()[start2:]


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"8": [1]}', "levels"),
    ('[1, 2]', "levels"),
    ('{"0": [1, 2]}', "2 values, the codebook has 256"),
    ('{"4": [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}', "no zero-probability"),
    ('{"4": [1.5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}', "integers"),
    ('{"4": [2147483648, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}', "integers"),
], ids=["json", "level", "list", "length", "zero", "float", "overflow"])
def test_convert_refuses_bad_freqs(tiny, tmp_path, capsys, content, message):
    bad, out = tmp_path / "f.json", tmp_path / "o.safetensors"
    bad.write_text(content)
    rc = C.main(["--sd", os.path.join(tiny, "sd"), "--oscar", os.path.join(tiny, "oscar.pkl"), "-o", str(out),
                 "--freqs", str(bad)])
    assert rc == 2 and message in capsys.readouterr().err and not out.exists()


def test_estimate_refuses_bad_input(images, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    existing = tmp_path / "exists.json"
    existing.write_text("{}")
    for args, message in (
        (["--model", MODEL, "--images", str(tmp_path / "empty"), "-o", str(tmp_path / "f.json")], "no png"),
        (["--model", MODEL, "--images", str(tmp_path / "nope"), "-o", str(tmp_path / "f.json")], "not a folder"),
        (["--model", str(tmp_path / "m"), "--images", str(images), "-o", str(tmp_path / "f.json")], "does not exist"),
        (["--model", os.path.join(FIXTURES, "blocks.safetensors"), "--images", str(images), "-o",
          str(tmp_path / "f.json")], "not an oscar-wgpu model"),
        (["--model", MODEL, "--images", str(images), "-o", str(existing)], "--force"),
        (["--model", MODEL, "--images", str(images), "--write-into", str(existing), "-o", str(tmp_path / "m")],
         "cannot read"),
    ):
        assert E.main(args) == 2 and message in capsys.readouterr().err, args
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    rc = E.main(["--model", MODEL, "--images", str(tmp_path / "empty"), "-o", str(tmp_path / "f.json")])
    assert rc == 2 and "cannot read image" in capsys.readouterr().err and not (tmp_path / "f.json").exists()
