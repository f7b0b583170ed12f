"""`python -m magicface_core generate` end to end on tiny SD 2-like weights: what it writes equals the
library's generate(), and bad settings are refused before anything loads."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from magicface_core import cli
from magicface_core.au import AUVector
from magicface_core.fineface.generate import GenerateSettings, generate
from magicface_core.fineface.pipeline import FineFace
from magicface_core.imaging import from_tensor
from magicface_core.model.sd15 import load_sd15
from tests.support.factories import write_tiny_sd15
from tests.support.paths import REPO

sys.path.insert(0, str(REPO / "tools"))
import compare_fineface_with_authors as parity  # noqa: E402 - the tiny SD 2-like weights of the parity check


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base, fineface = parity.write_tiny_fineface(tmp_path_factory.mktemp("fineface"))
    write_tiny_sd15(base, text_dim=1024)  # vae/, text_encoder/ (SD 2's width), tokenizer/ beside unet/, scheduler/
    return base, fineface


def _argv(tiny, out, *extra):
    base, fineface = tiny
    return ["generate", "--prompt", "a photo of a face", "--au", "AU12=4", "--au", "AU6=2", "--base", str(base),
            "--fineface-weights", str(fineface), "--steps", "2", "--device", "cpu", "--dtype", "fp32",
            "--out", str(out), *extra]


def test_generate_writes_what_the_library_computes(tiny, tmp_path):
    out = tmp_path / "face.png"
    assert cli.main(_argv(tiny, out, "--batch", "2", "--seed", "7")) == 0
    written = [np.asarray(Image.open(tmp_path / f"face_{i}.png").convert("RGB")) for i in range(2)]
    assert not out.exists()

    base, fineface = tiny
    model = FineFace.from_pretrained(fineface, base=base)
    aus = AUVector.cat([AUVector.from_dict({"AU12": 4, "AU6": 2})] * 2)
    images = generate(model, load_sd15(base), "a photo of a face", aus, settings=GenerateSettings(steps=2, seed=7))
    expected = from_tensor(images)
    assert written[0].shape == expected[0].shape == (64, 64, 3)
    for got, want in zip(written, expected):
        assert np.array_equal(got, want)
    assert not np.array_equal(written[0], written[1])  # one seed, two start noises


def test_au_scale_zero_ignores_the_aus(tiny):
    base, fineface = tiny
    model = FineFace.from_pretrained(fineface, base=base)
    parts = load_sd15(base)
    settings = GenerateSettings(steps=2, au_scale=0.0)
    a = generate(model, parts, "a face", AUVector.from_dict({"AU12": 5}), settings=settings)
    b = generate(model, parts, "a face", AUVector.zeros(), settings=settings)
    assert torch.equal(a, b)


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "steps"),
    (["--au", "AU9=50"], "far outside"),
    (["--lora-strength", "nan"], "lora_strength"),
    (["--batch", "0"], "--batch"),
])
def test_bad_settings_are_refused_before_loading(tiny, tmp_path, capsys, extra, message):
    argv = _argv(tiny, tmp_path / "face.png", *extra)
    argv[argv.index("--base") + 1] = str(tmp_path / "no-such-base")  # refused before it is looked at
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_outputs_are_checked_before_loading(tiny, tmp_path, capsys):
    existing = tmp_path / "face.png"
    existing.write_bytes(b"the user's file")
    argv = _argv(tiny, existing)
    argv[argv.index("--base") + 1] = str(tmp_path / "no-such-base")
    assert cli.main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"the user's file"
    assert cli.main(_argv(tiny, tmp_path / "face.gif")) == 2
    assert not (tmp_path / "face.gif").exists()
