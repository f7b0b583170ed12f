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


# --- the run folder ---------------------------------------------------------------------------------------

class Stop(Exception):
    """Raised where SD 1.5 would load: the run folder's handling before it is under test."""


@pytest.fixture
def stop_at_loading(monkeypatch):
    from magicface_core.model import sd15 as sd15_module

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(sd15_module, "load_sd15", stop)


def _snapshot(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in folder.rglob("*")}


def _yours(output):
    """A folder with no earlier run, holding files of yours under the names a run uses."""
    (output / "logs").mkdir(parents=True)
    (output / "logs" / "notes.txt").write_text("my notes")
    (output / "validation").mkdir()
    (output / "validation" / "holdout.png").write_bytes(b"my image")
    (output / "readme.txt").write_text("mine")
    return _snapshot(output)


def test_overwrite_in_a_folder_with_no_earlier_run_deletes_nothing(tmp_path, stop_at_loading):
    """Finding 7: `train --overwrite` in a folder with no earlier run deleted your logs/ and validation/."""
    data = make_dataset(tmp_path / "data", clips=1)
    output = tmp_path / "out"
    before = _yours(output)
    with pytest.raises(Stop):
        loop.train(TrainConfig(data=str(data), output_dir=str(output), overwrite=True, batch_size=1))
    after = _snapshot(output)
    assert {k: after[k] for k in before} == before  # all yours is there, unchanged
    assert set(after) - set(before) == {"config.yaml", "magicface-run.json"}  # and the run's record of it


def test_your_config_and_folders_survive_a_resumed_run_and_its_overwrite(tmp_path, sd15, monkeypatch):
    """Finding 6: `train --config OUT/config.yaml --output-dir OUT --resume latest` replaced your commented
    config.yaml with the pack's dump. Finding 7: --overwrite then deletes the run's files, and only those.
    Running twice at once: the run holds the folder's lock while it trains."""
    from magicface_core.files import exclusive_output
    from magicface_core.cli.train import load_config

    data = make_dataset(tmp_path / "data", clips=1)
    output = tmp_path / "out"
    yours = _yours(output)
    config = output / "config.yaml"
    config.write_text(f"# my settings\ndata: {data}\nsd15: {sd15}\nresolution: 64\nbatch_size: 2\nmax_steps: 1\n"
                      "checkpoint_every: 1\nvalidate_every: 1\nvalidation_steps: 2\nvalidation_identities: 1\n"
                      "num_workers: 0\nsave_dtype: fp32\n")
    mine = config.read_bytes()
    locked = []

    def second_run_meanwhile(report):
        with pytest.raises(OutputPathError, match="another run is writing"):
            with exclusive_output(output, option="--output-dir", inside=True):
                pass
        locked.append(report.step)

    loop.train(load_config(["--config", str(config), "--output-dir", str(output), "--resume", "latest"]),
               on_step=second_run_meanwhile)
    assert locked == [1]
    assert config.read_bytes() == mine
    record = json.loads((output / "magicface-run.json").read_text())
    assert record["settings"]["max_steps"] == 1 and record["names"]["config.yaml"] == "yours"
    assert (output / "validation" / "step-0000001.png").is_file()
    assert (output / "checkpoints" / "step-0000001").is_dir() and (output / "magicface.safetensors").is_file()

    class Stop(Exception):
        pass

    from magicface_core.model import sd15 as sd15_module

    monkeypatch.setattr(sd15_module, "load_sd15", lambda *a, **k: (_ for _ in ()).throw(Stop()))
    with pytest.raises(Stop):
        loop.train(load_config(["--config", str(config), "--output-dir", str(output), "--overwrite"]))
    after = _snapshot(output)
    assert {k: after[k] for k in yours} == yours and config.read_bytes() == mine
    assert set(after) - set(yours) == {"config.yaml", "magicface-run.json"}  # checkpoints, log, grid, weights gone
    assert not list(output.glob(".magicface.lock"))


def test_a_run_that_failed_before_its_first_checkpoint_can_be_run_again(tmp_path, stop_at_loading):
    """A failed run blocked its own re-run: its config.yaml made the same command refuse with "already holds
    a training run". A run that stopped before writing anything a restart would lose starts over; one that
    logged steps starts over with the same settings (it computes the same log), and with others is refused."""
    data = make_dataset(tmp_path / "data", clips=1)
    output = tmp_path / "out"
    settings = dict(data=str(data), output_dir=str(output), batch_size=1, learning_rate=1e-4)
    with pytest.raises(Stop):  # e.g. SD 1.5 not found
        loop.train(TrainConfig(**settings))
    with pytest.raises(Stop):  # the same command again: it runs
        loop.train(TrainConfig(**settings))
    with pytest.raises(Stop):  # with a setting fixed: it runs too, nothing of the first run is lost
        loop.train(TrainConfig(**settings, seed=3))

    (output / "train_log.csv").write_text("step,loss,lr,seconds\n1,0.5,0.0001,1.0\n")  # it got as far as a step
    with pytest.raises(OutputPathError, match=r"stopped before its first checkpoint, with other settings "
                                              r"\(learning_rate 0.0001 -> 0.0002\)"):
        loop.train(TrainConfig(**{**settings, "learning_rate": 2e-4}, seed=3))
    with pytest.raises(Stop):
        loop.train(TrainConfig(**settings, seed=3))

    (output / "checkpoints" / "step-0000005").mkdir(parents=True)  # a checkpoint: a restart would lose it
    with pytest.raises(OutputPathError, match="already holds a training run; pass --resume latest"):
        loop.train(TrainConfig(**settings, seed=3))


def test_a_second_run_on_a_running_folder_is_refused_and_the_first_stays_whole(tmp_path, stop_at_loading):
    """Running twice at once: a second `train --resume latest` crashed with a traceback (and first deleted the
    running one's checkpoint in progress as a crash's leftover)."""
    from magicface_core.files import exclusive_output

    data = make_dataset(tmp_path / "data", clips=1)
    output = tmp_path / "out"
    settings = dict(data=str(data), output_dir=str(output), batch_size=1)
    with pytest.raises(Stop):
        loop.train(TrainConfig(**settings))
    (output / "train_log.csv").write_text("step,loss,lr,seconds\n1,0.5,0.0001,1.0\n")
    (output / "checkpoints" / "step-0000002.partial").mkdir(parents=True)  # being written by the running run
    (output / "checkpoints" / "step-0000002.partial" / "optimizer.bin").write_bytes(b"half")
    with exclusive_output(output, option="--output-dir", inside=True):  # what the running run holds (see above)
        before = _snapshot(output)
        with pytest.raises(OutputPathError, match=f"another run is writing {output} right now; wait for it"):
            loop.train(TrainConfig(**settings, resume="latest"))
        assert _snapshot(output) == before


@pytest.mark.parametrize("name", ["validation/step-0000001.png", "checkpoints/step-0000001/notes.txt",
                                  "train_log.csv", "magicface.safetensors"])
def test_a_file_of_yours_under_a_name_the_run_writes_is_refused(tmp_path, no_model_loading, name):
    """Finding 7's rule for new runs: a run never replaces a file of yours, so one named as a run's file is refused
    before anything is written (before, a grid, checkpoint, log or weights of yours was replaced or deleted)."""
    data = make_dataset(tmp_path / "data", clips=1)
    output = tmp_path / "out"
    (output / name).parent.mkdir(parents=True, exist_ok=True)
    (output / name).write_text("mine")
    before = _snapshot(output)
    for flags in ({}, {"overwrite": True}):
        with pytest.raises(OutputPathError, match="was not written by a training run, and a run writes that name"):
            loop.train(TrainConfig(data=str(data), output_dir=str(output), batch_size=1, **flags))
        assert _snapshot(output) == before


def test_resume_latest_with_a_damaged_latest_checkpoint_says_so(tmp_path, no_model_loading):
    """Training data item (--resume latest): a latest checkpoint missing its state files was accelerate's traceback."""
    data = make_dataset(tmp_path / "data", clips=1)
    output = tmp_path / "out"
    (output / "checkpoints" / "step-0000004").mkdir(parents=True)
    (output / "checkpoints" / "step-0000004" / "optimizer.bin").write_bytes(b"")  # the rest deleted
    with pytest.raises(SettingsError, match=r"step-0000004 is not a training checkpoint \(no model.safetensors, "
                                            r"scheduler.bin, random_states_0.pkl\)"):
        loop.train(TrainConfig(data=str(data), output_dir=str(output), batch_size=1, resume="latest"))


def test_an_output_dir_that_is_a_file_is_refused_before_loading(tmp_path, no_model_loading):
    """Tracebacks after the work: an --output-dir that is a file failed in mkdir; now refused up front."""
    data = make_dataset(tmp_path / "data", clips=1)
    (tmp_path / "out").write_text("mine")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        loop.train(TrainConfig(data=str(data), output_dir=str(tmp_path / "out"), batch_size=1))
    assert (tmp_path / "out").read_text() == "mine"


def test_the_config_dump_is_rewritten_only_while_it_is_the_runs(tmp_path, caplog):
    """Finding 6, the other way in: the dump of an earlier run is the run's to rewrite, until you edit it."""
    import logging

    from magicface_core.training.run_folder import RunFolder

    output = tmp_path / "out"
    RunFolder(output).start(TrainConfig(data="d", output_dir=str(output), max_steps=5))
    assert "max_steps: 5" in (output / "config.yaml").read_text()
    RunFolder(output).start(TrainConfig(data="d", output_dir=str(output), max_steps=6, resume="latest"))
    assert "max_steps: 6" in (output / "config.yaml").read_text()  # the run's own dump follows the run
    (output / "config.yaml").write_text((output / "config.yaml").read_text() + "# tried 7 too\n")
    edited = (output / "config.yaml").read_bytes()
    with caplog.at_level(logging.INFO):
        RunFolder(output).start(TrainConfig(data="d", output_dir=str(output), max_steps=8, resume="latest"))
    assert (output / "config.yaml").read_bytes() == edited and "keeping your" in caplog.text
    assert json.loads((output / "magicface-run.json").read_text())["settings"]["max_steps"] == 8
