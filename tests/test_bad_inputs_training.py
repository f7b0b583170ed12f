"""Bad-input rows for training runs and their data (issue 21): the run folder, its lock, the prepared
data and the resume folder. Each row reproduces a finding of the sweep and checks what a user expects."""

from __future__ import annotations

import json
import math

import pytest

from magicface_core.errors import DataError, MagicFaceError, OutputPathError, SettingsError
from magicface_core.training import loop
from magicface_core.training.config import TrainConfig
from tests.test_training import fresh_accelerate_state, make_dataset, sd15, tiny_config  # noqa: F401


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if training gets as far as loading SD 1.5."""
    from magicface_core.model import sd15 as sd15_module

    def refuse(*args, **kwargs):
        raise AssertionError("SD 1.5 was loaded before the problem was reported")

    monkeypatch.setattr(sd15_module, "load_sd15", refuse)


def _damage(data, change):
    index = data / "index.json"
    payload = json.loads(index.read_text())
    change(payload)
    index.write_text(json.dumps(payload))


def _frame_aus(payload, frame, aus):
    payload["frames"][frame]["aus"] = aus


DAMAGE = {
    "a pair pointing at a missing frame": (lambda p: p["pairs"].append([0, 99]),
                                           ["pair 6 points at frame 99", "frames 0..2"]),
    "a missing image": (lambda p: None, ["frame 1: its image", "000001.png is missing"]),
    "NaN AU rows": (lambda p: _frame_aus(p, 2, [math.nan] * 12), ["frame 2", "not finite numbers"]),
    "11 AUs per frame": (lambda p: [_frame_aus(p, i, f["aus"][:11]) for i, f in enumerate(p["frames"])],
                         ["frame 0", "has 11 AU values, not 12", "frame 1", "... and 1 more"]),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_index_is_reported_before_any_model_loads(tmp_path, no_model_loading, case):
    """Training data item: these were tracebacks mid-run (IndexError, FileNotFoundError, a NaN loss, a shape error)."""
    data = make_dataset(tmp_path / "data", clips=1)
    change, words = DAMAGE[case]
    _damage(data, change)
    if case == "a missing image":
        (data / "clips" / "clip0" / "000001.png").unlink()
    if case == "11 AUs per frame":  # more problems than are shown: the first ones are named
        for frame in range(3):
            (data / "clips" / "clip0" / f"{frame:06d}_cond.png").unlink()
    with pytest.raises(DataError) as error:
        loop.train(TrainConfig(data=str(data), output_dir=str(tmp_path / "out"), resolution=64, batch_size=1))
    message = str(error.value)
    assert "index.json is damaged" in message and all(word in message for word in words), message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, words", [
    ("empty folder", "is not a training checkpoint (no model.safetensors, optimizer.bin"),
    ("run folder", "this is a run's output folder: pass --output-dir"),
    ("partial", "left incomplete by an interrupted run"),
])
def test_resume_from_a_folder_that_is_not_a_checkpoint(tmp_path, no_model_loading, case, words):
    """Training data item: `--resume` given a folder that is not a checkpoint gave a traceback from accelerate."""
    data = make_dataset(tmp_path / "data", clips=1)
    folder = {"empty folder": tmp_path / "nothing", "run folder": tmp_path / "run",
              "partial": tmp_path / "run" / "checkpoints" / "step-0000002.partial"}[case]
    folder.mkdir(parents=True)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True, exist_ok=True)
    with pytest.raises(SettingsError, match="--resume") as error:
        loop.train(TrainConfig(data=str(data), output_dir=str(tmp_path / "out"), resume=str(folder), batch_size=1))
    assert words in str(error.value)


def test_a_huge_learning_rate_is_refused_up_front():
    """Training data item: lr 1e30 trained, then stopped with a FloatingPointError traceback."""
    with pytest.raises(SettingsError, match=r"learning_rate: must be positive and at most 1 .* got 1e\+30"):
        TrainConfig(data="d", learning_rate=1e30)


def test_a_diverging_run_stops_with_a_clear_error(tmp_path, sd15, monkeypatch):
    """Training data item: a loss that becomes NaN (a diverged run) was a FloatingPointError traceback; now an
    error the CLI reports, naming the fix, with no checkpoint or weights saved from it."""
    data = make_dataset(tmp_path / "data", clips=1)
    real = loop.training_inputs

    def diverged(*args, **kwargs):  # what a far too high learning rate leads to, in one step
        inputs, target = real(*args, **kwargs)
        return inputs, target * float("nan")

    monkeypatch.setattr(loop, "training_inputs", diverged)
    with pytest.raises(MagicFaceError, match=r"the loss became nan at step 1: training diverged.*--learning-rate"):
        loop.train(tiny_config(data, sd15, tmp_path / "out", max_steps=1, checkpoint_every=1))
    assert not (tmp_path / "out" / "checkpoints").exists() and not (tmp_path / "out" / "magicface.safetensors").exists()
