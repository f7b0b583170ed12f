"""Bad inputs, issue 21 part A: files that would run code, weights that do not fit, downloads cut off,
photos pasted back.

Planted pickles: each file the pack reads that could hold a pickle gets one whose unpickling would
create a marker file. Every loader must refuse it with a message naming the file, and the marker
must never appear. The ``before`` of each row says what happened before issue 21.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest
import torch

from magicface_core import assets
from tests.support.factories import write_tiny_sd15


class RunsCode:
    """Unpickling this object opens (creates) a marker file: the stand-in for any code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant(path: Path, marker: Path, keep: dict | None = None) -> Path:
    """Replace ``path`` with a torch file holding the tensors of ``keep`` plus code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(keep or {}), "payload": RunsCode(marker)}, path)
    return path


def refused(call, marker: Path, *words: str) -> str:
    from magicface_core.errors import MagicFaceError

    with pytest.raises(MagicFaceError) as info:
        call()
    assert not marker.exists(), "the planted pickle ran"
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# --- weights files that the networks load ------------------------------------------------------
# before: refused already (weights_only) -- rows kept so that a new loader cannot regress it.

def _magicface(root: Path, marker: Path, tiny_checkpoint: Path):
    from magicface_core import MagicFace

    folder = root / "magicface"
    shutil.copytree(tiny_checkpoint, folder)
    weights = folder / "denoising_unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    plant(weights.with_suffix(".bin"), marker)
    return lambda: MagicFace.from_pretrained(folder, device="cpu", dtype="fp32"), "diffusion_pytorch_model.bin"


def _face_network(spec_name: str, loader):
    def build(root: Path, marker: Path, tiny_checkpoint: Path):
        spec = getattr(assets, spec_name)
        path = plant(spec.path(root), marker)
        return lambda: loader(path), spec.filename
    return build


def _bisenet(path):
    from magicface_core.faces.parsing import load_bisenet
    return load_bisenet(path)


def _libreface(path):
    from magicface_core.faces.au_estimation import load_libreface
    return load_libreface(path)


def _d3dfr(path):
    from magicface_core.faces.d3dfr import load_d3dfr
    return load_d3dfr(path)


def _fan(root: Path, marker: Path, tiny_checkpoint: Path):
    from face_alignment.detection.sfd.net_s3fd import s3fd

    from magicface_core.faces.landmarks import FaceAlignmentBackend

    detector = assets.S3FD.path(root)
    detector.parent.mkdir(parents=True, exist_ok=True)
    torch.save(s3fd().state_dict(), detector)
    fan = plant(assets.FAN_2D.path(root), marker)
    return lambda: FaceAlignmentBackend(detector, fan), assets.FAN_2D.filename


def _s3fd(root: Path, marker: Path, tiny_checkpoint: Path):
    from magicface_core.faces.landmarks import FaceAlignmentBackend

    detector = plant(assets.S3FD.path(root), marker)
    return lambda: FaceAlignmentBackend(detector, assets.FAN_2D.path(root)), assets.S3FD.filename


def _sd15_part(part: str, weights: str):
    def build(root: Path, marker: Path, tiny_checkpoint: Path):
        from magicface_core.model.sd15 import load_sd15

        folder = write_tiny_sd15(root / "sd15")
        for safetensors in (folder / part).glob("*.safetensors"):
            safetensors.unlink()
        plant(folder / part / weights, marker)
        return lambda: load_sd15(folder, "cpu", torch.float32), "sd15"  # transformers does not say which file
    return build


def _sd15_single_file(root: Path, marker: Path, tiny_checkpoint: Path):
    from magicface_core.model.sd15 import load_sd15

    path = plant(root / "sd15.ckpt", marker)
    return lambda: load_sd15(path, "cpu", torch.float32), "sd15.ckpt"


PLANTED = {
    "magicface_bin": _magicface,
    "bisenet": _face_network("BISENET", _bisenet),
    "libreface": _face_network("LIBREFACE_AU", _libreface),
    "d3dfr": _face_network("D3DFR", _d3dfr),
    "fan_2d": _fan,
    "s3fd": _s3fd,
    "sd15_vae_bin": _sd15_part("vae", "diffusion_pytorch_model.bin"),
    "sd15_text_encoder_bin": _sd15_part("text_encoder", "pytorch_model.bin"),
    "sd15_single_file": _sd15_single_file,
}


@pytest.mark.parametrize("name", PLANTED)
def test_a_planted_pickle_never_runs(name, tmp_path, tiny_checkpoint):
    marker = tmp_path / "code-ran"
    call, filename = PLANTED[name](tmp_path, marker, tiny_checkpoint)
    refused(call, marker, filename)


# --- training checkpoints ----------------------------------------------------------------------
# before: custom_checkpoint_0.pkl (the EMA) ran its code on --resume latest, then an AttributeError;
# a planted random_states_0.pkl was skipped without a word (the run went on with other random draws).

@pytest.fixture()
def training_checkpoint(tmp_path):
    """A checkpoint folder as the training loop writes it (accelerate's save_state, EMA registered),
    and a function that loads it the way --resume does."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    from magicface_core.training.loop import load_training_state

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ema = EMAModel(list(model.parameters()))
    accelerator.register_for_checkpointing(ema)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    ema.step(model.parameters())
    folder = tmp_path / "checkpoints" / "step-0000001"
    accelerator.save_state(str(folder))
    yield folder, lambda: load_training_state(accelerator, folder), ema
    accelerator.free_memory()


def test_a_training_checkpoint_written_by_the_loop_resumes(training_checkpoint):
    folder, load, ema = training_checkpoint
    ema.optimization_step = 0
    load()
    assert ema.optimization_step == 1  # the EMA's state came back, read weights-only


@pytest.mark.parametrize("filename", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin",
                                      "scheduler.bin", "pytorch_model.bin"])
def test_a_planted_pickle_in_a_training_checkpoint_never_runs(filename, training_checkpoint, tmp_path):
    folder, load, _ = training_checkpoint
    marker = tmp_path / "code-ran"
    if filename == "pytorch_model.bin":  # accelerate's older model format, read when no safetensors file
        (folder / "model.safetensors").unlink()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    plant(folder / filename, marker)
    message = refused(load, marker, filename, "--resume")
    assert "could run code" in message
    assert {p.name for p in folder.iterdir()} == set(before) | {filename}  # nothing deleted


def test_resume_latest_of_a_real_run_loads_the_ema_weights_only_and_refuses_a_planted_one(tmp_path):
    """The finding as reported: train --resume latest with use_ema, a code-carrying
    custom_checkpoint_0.pkl in checkpoints/step-N/. before: the code ran, then an AttributeError."""
    from accelerate.state import AcceleratorState

    from magicface_core.errors import CheckpointError
    from magicface_core.training.loop import train
    from tests.test_training import make_dataset, tiny_config

    sd15 = write_tiny_sd15(tmp_path / "sd15", with_unet=True)
    data = make_dataset(tmp_path / "data", clips=1)
    output = tmp_path / "out"

    def run(max_steps: int, **extra):
        try:
            return train(tiny_config(data, sd15, output, max_steps=max_steps, use_ema=True, checkpoint_every=1,
                                     **extra))
        finally:
            AcceleratorState._reset_state(True)

    run(1)
    run(2, resume="latest")  # the EMA state the loop wrote comes back, read weights-only
    marker = tmp_path / "code-ran"
    checkpoint = output / "checkpoints" / "step-0000002"
    plant(checkpoint / "custom_checkpoint_0.pkl", marker)
    with pytest.raises(CheckpointError, match="custom_checkpoint_0.pkl holds more than weights"):
        run(3, resume="latest")
    assert not marker.exists()
    assert checkpoint.is_dir() and not (output / "checkpoints" / "step-0000003").exists()


# --- weights that do not fit their precision or type ---------------------------------------------

def _published_with(root: Path, tiny_parts, change) -> tuple[Path, str]:
    from tests.support.factories import write_published_checkpoint

    parts = {part: (config, dict(state)) for part, (config, state) in tiny_parts.items()}
    state = parts["denoising_unet"][1]
    key = next(k for k, v in state.items() if k.endswith(".weight") and v.ndim == 4)
    state[key] = change(state[key])
    return write_published_checkpoint(root, parts=parts), key


def test_convert_to_fp16_refuses_a_weight_that_overflows_it(tmp_path, tiny_parts, capsys):
    """before: the weight went out as inf, exit 0; the loader then called the file damaged."""
    from magicface_core.cli import main

    def too_large(w):
        w = w.clone()
        w.view(-1)[0] = 1e6  # finite in fp32, past fp16's 65504
        return w

    source, key = _published_with(tmp_path / "weights", tiny_parts, too_large)
    target = tmp_path / "out.safetensors"
    assert main(["convert", str(source), str(target), "--dtype", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for word in (key, "overflows float16", "--dtype bf16", "not written"):
        assert word in err, err
    assert not target.exists() and not list(tmp_path.glob("*partial*"))
    assert main(["convert", str(source), str(target), "--dtype", "bf16"]) == 0  # what the message says works


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_a_weight_stored_as_integers_is_refused_at_load(dtype, tmp_path, tiny_parts):
    """before: it loaded, then a traceback in the first computation (after the face work)."""
    from magicface_core import MagicFace
    from magicface_core.errors import CheckpointError

    source, key = _published_with(tmp_path / "weights", tiny_parts, lambda w: w.to(dtype))
    with pytest.raises(CheckpointError) as info:
        MagicFace.from_pretrained(source, device="cpu", dtype="fp32")
    message = str(info.value)
    assert key in message and str(dtype).replace("torch.", "") in message and "floating point" in message


# --- photos pasted back stay the photo -----------------------------------------------------------

@functools.cache
def _icc() -> bytes:  # once: a new profile carries a new creation time
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _photo(tmp_path: Path, name: str, **save) -> tuple[Path, "np.ndarray", tuple[int, int, int]]:
    """A portrait placed in a larger noisy photo (texture a re-encode would show), with metadata."""
    import numpy as np
    from PIL import Image

    from tests.support.paths import OFFICIAL

    face = np.asarray(Image.open(OFFICIAL / "00512.png").convert("RGB").resize((160, 160)))
    rng = np.random.default_rng(5)
    photo = (rng.normal(128, 12, (280, 320, 3)) + np.linspace(-40, 40, 320)[None, :, None]).clip(0, 255).astype(np.uint8)
    y, x = 50, 90
    photo[y:y + 160, x:x + 160] = face
    exif = Image.Exif()
    exif[0x010F] = "MagicFace test camera"  # Make
    path = tmp_path / name
    Image.fromarray(photo).save(path, icc_profile=_icc(), exif=exif, **save)
    return path, photo, (y, x, 160)


def _crop_edit(path: Path, out: Path, tiny_checkpoint, sd15) -> None:
    from magicface_core.cli import main
    from tests.support.paths import OFFICIAL

    assert main(["edit", "--image", str(path), "--crop", "--detector", "dlib", "--au", "AU12=3", "--steps", "1",
                 "--weights", str(tiny_checkpoint), "--sd15", str(sd15), "--device", "cpu",
                 "--condition", str(OFFICIAL / "00381_bg.png"), "--out", str(out)]) == 0


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    return write_tiny_sd15(tmp_path_factory.mktemp("sd15"))


def _far_from_face(shape, face) -> "np.ndarray":
    import numpy as np

    y, x, size = face
    far = np.ones(shape[:2], bool)
    far[max(0, y - 40):y + size + 40, max(0, x - 40):x + size + 40] = False
    return far


def test_a_crop_edit_in_a_lossless_format_changes_no_pixel_outside_the_face(tmp_path, tiny_checkpoint, sd15):
    """before: held for the pixels (kept as a row); the ICC profile and EXIF were dropped."""
    import numpy as np
    from PIL import Image

    path, photo, (y, x, size) = _photo(tmp_path, "photo.png")
    out = tmp_path / "edited.png"
    _crop_edit(path, out, tiny_checkpoint, sd15)
    with Image.open(out) as written:
        result = np.asarray(written.convert("RGB"))
        assert written.info.get("icc_profile") == _icc()
        assert written.getexif().get(0x010F) == "MagicFace test camera"
    changed = (result != photo).any(axis=2)
    assert changed.any()  # the edit is there
    rows, cols = np.nonzero(changed)
    # Every changed pixel lies in the face's square (the crop is framed from dlib's landmarks, a little
    # larger than the placed portrait).
    assert rows.min() >= y - 40 and rows.max() < y + size + 40 and cols.min() >= x - 40 and cols.max() < x + size + 40
    assert np.array_equal(result[_far_from_face(photo.shape, (y, x, size))],
                          photo[_far_from_face(photo.shape, (y, x, size))])


def test_a_crop_edit_to_jpeg_keeps_the_source_quality_icc_and_exif(tmp_path, tiny_checkpoint, sd15):
    """before: PIL's default quality 75 with 4:2:0 chroma, far from the face mean |diff| 1.7 and max 31
    on a photo; ICC and EXIF dropped."""
    import numpy as np
    from PIL import Image

    path, _, face = _photo(tmp_path, "photo.jpg", quality=92, subsampling=0)
    with Image.open(path) as source:
        source_pixels, tables = np.asarray(source.convert("RGB")).astype(int), source.quantization
    out = tmp_path / "edited.jpg"
    _crop_edit(path, out, tiny_checkpoint, sd15)
    with Image.open(out) as written:
        result = np.asarray(written.convert("RGB")).astype(int)
        assert written.quantization == tables  # the source's quality, not PIL's default
        assert written.info.get("icc_profile") == _icc()
        assert written.getexif().get(0x010F) == "MagicFace test camera"
    far = _far_from_face(source_pixels.shape, face)
    difference = np.abs(result - source_pixels)[far]
    print(f"far from the face: mean |diff| {difference.mean():.3f}, max {difference.max()}")
    assert difference.mean() < 0.5 and difference.max() <= 8


def test_webp_is_written_at_high_quality_with_the_icc_profile_and_exif(tmp_path):
    """before: PIL's default quality 80; ICC and EXIF dropped."""
    import numpy as np
    from PIL import Image

    from magicface_core.imaging import save_image

    from tests.support.paths import OFFICIAL

    photo = np.asarray(Image.open(OFFICIAL / "00512.png").convert("RGB"))  # a real portrait's texture
    path = tmp_path / "photo.png"
    exif = Image.Exif()
    exif[0x010F] = "MagicFace test camera"
    Image.fromarray(photo).save(path, icc_profile=_icc(), exif=exif)
    save_image(photo, tmp_path / "out.webp", source=path)
    with Image.open(tmp_path / "out.webp") as written:
        result = np.asarray(written.convert("RGB")).astype(int)
        assert written.info.get("icc_profile") == _icc()
        assert written.getexif().get(0x010F) == "MagicFace test camera"
    Image.fromarray(photo).save(tmp_path / "pil_default.webp")
    ours = np.abs(result - photo).mean()
    pil = np.abs(np.asarray(Image.open(tmp_path / "pil_default.webp").convert("RGB")).astype(int) - photo).mean()
    print(f"webp mean |diff|: ours {ours:.3f}, PIL's default {pil:.3f}")  # 0.94 and 1.58 when written
    assert ours < 0.7 * pil and np.abs(result - photo).max() <= 12


def test_exif_orientation_is_reset_as_the_pixels_are_upright(tmp_path):
    """The photo was turned upright on reading; a kept orientation tag would turn it again."""
    import numpy as np
    from PIL import Image

    from magicface_core.imaging import load_image, save_image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    upright = load_image(tmp_path / "phone.jpg")
    save_image(upright, tmp_path / "out.jpg", source=tmp_path / "phone.jpg")
    with Image.open(tmp_path / "out.jpg") as written:
        assert written.size == (40, 64) and written.getexif().get(0x0112) == 1


@pytest.mark.parametrize("suffix, words", [(".ico", ("resizes", "256x240", ".png")),
                                           (".gif", ("changes the colours", ".png")),
                                           (".icns", ("resizes", ".png"))])
def test_an_output_format_that_would_change_the_picture_is_refused_before_loading(
        suffix, words, tmp_path, tiny_checkpoint, sd15, capsys, monkeypatch):
    """before: .ico was silently shrunk to 256x256 after the whole edit, .gif cut to 256 colours."""
    from magicface_core.cli import main
    from tests.test_bad_inputs import no_loading

    no_loading(monkeypatch)
    path, _, _ = _photo(tmp_path, "photo.png")
    out = tmp_path / f"edited{suffix}"
    assert main(["edit", "--image", str(path), "--crop", "--au", "AU12=3", "--weights", str(tiny_checkpoint),
                 "--sd15", str(sd15), "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words), err
    assert not out.exists()
