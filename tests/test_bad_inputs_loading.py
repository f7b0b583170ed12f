"""Bad inputs, issue 21 part A: files that would run code, weights that do not fit, downloads cut off,
photos pasted back.

Planted pickles: each file the pack reads that could hold a pickle gets one whose unpickling would
create a marker file. Every loader must refuse it with a message naming the file, and the marker
must never appear. The ``before`` of each row says what happened before issue 21.
"""

from __future__ import annotations

import json
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
