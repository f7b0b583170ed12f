"""Training settings checked as a whole before anything loads, and a run's folder kept safe:
no silent restart over a run, atomic checkpoints, a crash's leftovers cleaned, one run per log."""

import hashlib
import logging

import pytest

from magicface_core.errors import SettingsError, DataError, OutputPathError
from magicface_core.training import loop
from magicface_core.cli.train import load_config
from magicface_core.training.config import TrainConfig
from tests.test_training import fresh_accelerate_state, losses, make_dataset, sd15, tiny_config  # noqa: F401


def test_yaml_numbers_booleans_and_enums_in_any_spelling(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "learning_rate: 1e-5\n"  # PyYAML reads this as the string '1e-5'
        "max_steps: 1e3\n"
        "gradient_checkpointing: 'no'\n"  # a string: must be False, not truthy
        "use_ema: yes\n"
        "mixed_precision: no\n"  # YAML 1.1: the boolean false
        "save_dtype: BF16\n"
    )
    config = load_config(["--config", str(tmp_path / "c.yaml"), "--data", "d"])
    assert config.learning_rate == 1e-5 and config.max_steps == 1000
    assert config.gradient_checkpointing is False and config.use_ema is True
    assert config.mixed_precision == "no" and config.save_dtype == "bf16"
    flags = load_config(["--data", "d", "--use-ema", "false", "--gradient-checkpointing", "--learning-rate", "3e-4"])
    assert flags.use_ema is False and flags.gradient_checkpointing is True and flags.learning_rate == 3e-4


@pytest.mark.parametrize("yaml_text, message", [
    ("save_dtype: fp8\n", "save_dtype: expected one of fp32, fp16, bf16; got 'fp8'"),
    ("mixed_precision: fp64\n", "mixed_precision: expected one of no, fp16, bf16; got 'fp64'"),
    ("gradient_checkpointing: maybe\n", "gradient_checkpointing: expected true or false, got 'maybe'"),
    ("learning_rate: fast\n", "learning_rate: expected a number, got 'fast'"),
    ("max_steps: 2.5\n", "max_steps: expected a whole number, got 2.5"),
    ("validation_deltas: ['AU12=3', 'AU13=1']\n", "validation_deltas: unknown action unit 'AU13'"),
    ("batch_size: 0\n", "batch_size: must be at least 1, got 0"),
    ("resolution: 100\n", "resolution: must be a multiple of 64"),
])
def test_bad_settings_are_named_before_anything_loads(tmp_path, yaml_text, message):
    (tmp_path / "c.yaml").write_text(yaml_text)
    with pytest.raises(SettingsError) as error:
        load_config(["--config", str(tmp_path / "c.yaml"), "--data", "d"])
    assert message in str(error.value)


def test_every_bad_setting_is_reported_at_once():
    with pytest.raises(SettingsError) as error:
        TrainConfig(data="d", learning_rate="1e-5x", save_dtype="fp8", use_ema="perhaps")
    text = str(error.value)
    assert "learning_rate" in text and "save_dtype" in text and "use_ema" in text


def test_bad_flags_are_config_errors_not_system_exit():
    with pytest.raises(SettingsError, match="invalid choice: 'fp8'"):
        load_config(["--data", "d", "--save-dtype", "fp8"])
    with pytest.raises(SettingsError, match="unknown arguments: --learnin-rate"):
        load_config(["--data", "d", "--learnin-rate", "1"])


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if training gets as far as loading SD 1.5."""
    from magicface_core.model import sd15

    def refuse(*args, **kwargs):
        raise AssertionError("SD 1.5 was loaded before the settings were checked")

    monkeypatch.setattr(sd15, "load_sd15", refuse)


@pytest.mark.parametrize("case", ["missing", "empty", "no index"])
def test_missing_or_empty_data_is_reported_before_sd15_loads(tmp_path, no_model_loading, case):
    data = tmp_path / "data"
    if case != "missing":
        data.mkdir()
    if case == "empty":
        make_dataset(data, clips=1, frames_per_clip=1)  # an index with no pairs
    config = TrainConfig(data=str(data) if case != "missing" else "", output_dir=str(tmp_path / "out"))
    with pytest.raises((SettingsError, DataError)) as error:
        loop.train(config)
    expected = {"missing": "--data is required", "empty": "has no training pairs",
                "no index": "holds no prepared training set"}[case]
    assert expected in str(error.value)
    assert not (tmp_path / "out").exists()


def _snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


class Crash(BaseException):
    """Stands for the process dying: nothing in the loop catches it."""


def test_a_crash_while_checkpointing_is_cleaned_up_and_the_run_resumes(tmp_path, sd15, monkeypatch, caplog):
    data = make_dataset(tmp_path / "data", clips=1)
    output = tmp_path / "out"
    export = loop.export

    def crash_in_step_4(magicface, ema, params, path, config):
        if "step-0000004.partial" in str(path):
            raise Crash
        export(magicface, ema, params, path, config)

    monkeypatch.setattr(loop, "export", crash_in_step_4)
    with pytest.raises(Crash):
        loop.train(tiny_config(data, sd15, output, max_steps=4, checkpoint_every=2))
    monkeypatch.setattr(loop, "export", export)
    crashed = losses(output)
    assert sorted(crashed) == [1, 2, 3, 4]
    assert (output / "checkpoints" / "step-0000004.partial").is_dir()
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step-0000002", "step-0000004.partial"]

    # Training into the folder again without saying what to do with the run there: refused, nothing touched.
    before = _snapshot(output)
    with pytest.raises(OutputPathError, match="--resume latest .* or --overwrite"):
        loop.train(tiny_config(data, sd15, output, max_steps=4))
    assert _snapshot(output) == before

    # Resuming reports and removes the leftover, continues from step 2, and the log holds one run.
    with caplog.at_level(logging.WARNING):
        loop.train(tiny_config(data, sd15, output, max_steps=4, checkpoint_every=2, resume="latest"))
    assert "step-0000004.partial, left incomplete by an interrupted run" in caplog.text
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert losses(output) == crashed  # steps 3 and 4 again, exactly, and each once
    assert not list(output.rglob("*.partial"))

    # --overwrite starts over: the earlier run's checkpoints and log rows are gone, other files stay.
    (output / "notes.txt").write_text("mine")
    loop.train(tiny_config(data, sd15, output, max_steps=1, overwrite=True))
    assert sorted(losses(output)) == [1]
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step-0000001"]
    assert (output / "notes.txt").read_text() == "mine"


def test_resuming_with_another_process_count_warns(tmp_path, caplog):
    (tmp_path / "layout.json").write_text('{"processes": 2, "batch_size": 2, "gradient_accumulation_steps": 1}')
    layout = {"processes": 4, "batch_size": 2, "gradient_accumulation_steps": 1, "seed": 0}
    with caplog.at_level(logging.WARNING):
        loop._warn_if_layout_changed(tmp_path, layout, main=True)
    assert "resuming with processes 2 -> 4: the run continues, but not exactly" in caplog.text
