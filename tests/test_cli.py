import numpy as np
import pytest
import torch
from PIL import Image

from magicface_core import AUVector, MagicFace
from magicface_core.cli import main
from magicface_core.faces.toolkit import FaceToolkit
from magicface_core.faces.landmarks import FaceBox
from tests.support.paths import OFFICIAL
from tests.support.factories import write_tiny_sd15


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    return write_tiny_sd15(tmp_path_factory.mktemp("sd15"))


def _edit(tiny_checkpoint, sd15, *extra):
    return ["edit", "--weights", str(tiny_checkpoint), "--sd15", str(sd15), "--steps", "2", "--device", "cpu",
            *extra]


def test_edit_writes_the_edited_portrait(tiny_checkpoint, sd15, tmp_path):
    out = tmp_path / "edited.png"
    code = main(_edit(tiny_checkpoint, sd15, "--image", str(OFFICIAL / "00381.png"),
                      "--condition", str(OFFICIAL / "00381_bg.png"), "--au", "AU12=3", "--au", "AU6=2",
                      "--out", str(out)))
    assert code == 0
    image = Image.open(out)
    assert image.size == (512, 512) and image.mode == "RGB"
    # The CLI is the library's edit and nothing else: the same pixels as edit_photo with its defaults.
    from magicface_core.edit import EditSettings, edit_photo
    from magicface_core.imaging import load_image
    from magicface_core.model.sd15 import load_sd15

    model = MagicFace.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)
    (expected,) = edit_photo(load_image(OFFICIAL / "00381.png"), AUVector.from_dict({"AU12": 3, "AU6": 2}), model,
                             load_sd15(sd15), condition=load_image(OFFICIAL / "00381_bg.png"),
                             settings=EditSettings(steps=2))
    assert np.array_equal(np.asarray(image), expected)


def test_variants_make_a_batch(tiny_checkpoint, sd15, tmp_path):
    out = tmp_path / "sweep.png"
    code = main(_edit(tiny_checkpoint, sd15, "--image", str(OFFICIAL / "00381.png"),
                      "--condition", str(OFFICIAL / "00381_bg.png"), "--variant", "AU12=3",
                      "--variant", "AU12=-3,AU1=1", "--out", str(out)))
    assert code == 0
    assert (tmp_path / "sweep_0.png").is_file() and (tmp_path / "sweep_1.png").is_file()


def test_full_photo_with_crop_comes_back_at_full_size(tiny_checkpoint, sd15, face_weights, tmp_path, monkeypatch):
    photo = np.asarray(Image.open(OFFICIAL / "00512.png").convert("RGB").resize((600, 600)))
    photo = np.pad(photo, ((50, 150), (300, 100), (0, 0)), constant_values=120)
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    # The detector is not what this test checks: give it the face's box.
    monkeypatch.setattr(FaceToolkit, "detect", lambda self, image: [FaceBox(
        image.shape[1] * 0.42, image.shape[0] * 0.3, image.shape[1] * 0.68, image.shape[0] * 0.62)])
    out = tmp_path / "edited.jpg"
    code = main(_edit(tiny_checkpoint, sd15, "--image", str(tmp_path / "photo.jpg"), "--crop", "--au", "AU26=3",
                      "--out", str(out), "--face-weights", str(face_weights)))
    assert code == 0
    assert Image.open(out).size == (1000, 800)


@pytest.mark.parametrize("args, message", [
    (["--au", "AU13=2"], "unknown action unit"),
    (["--au", "AU12=lots"], "cannot read AU setting"),
])
def test_bad_au_input_gets_a_message_not_a_traceback(tiny_checkpoint, sd15, tmp_path, capsys, args, message):
    code = main(_edit(tiny_checkpoint, sd15, "--image", str(OFFICIAL / "00381.png"), "--out", str(tmp_path / "x.png"),
                      *args))
    assert code == 2 and message in capsys.readouterr().err


def test_offline_without_weights_says_what_to_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MAGICFACE_CACHE", str(tmp_path / "cache"))
    code = main(["edit", "--image", str(OFFICIAL / "00381.png"), "--condition", str(OFFICIAL / "00381_bg.png"),
                 "--au", "AU12=2", "--out", str(tmp_path / "x.png"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "https://huggingface.co/mengtingwei/magicface" in err and "denoising_unet" in err


def test_convert_to_a_half_precision_single_file(tiny_checkpoint, tmp_path):
    target = tmp_path / "magicface_fp16.safetensors"
    assert main(["convert", str(tiny_checkpoint), str(target), "--dtype", "fp16"]) == 0
    model = MagicFace.from_pretrained(target, device="cpu", dtype=torch.float32)
    reference = MagicFace.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)
    a, b = model.denoiser.state_dict(), reference.denoiser.state_dict()
    assert all(torch.equal(a[k], b[k].half().float()) for k in a)
