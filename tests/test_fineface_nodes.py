"""FineFace nodes: what they return, and (in a real ComfyUI) the patched MODEL against the core."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.support.paths import REPO

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)


def _cls(pack, key):
    return pack.NODE_CLASS_MAPPINGS[key]


def test_au_conditioning_attaches_slider_aus(pack):
    node = _cls(pack, "MagicFaceFineFaceAUConditioning")
    sliders = {k: 0.0 for k in sys.modules[f"{pack.__name__}.nodes.au_nodes"].SLIDERS}
    key = next(k for k in sliders if k.startswith("AU12_"))
    sliders[key] = 4.0
    cond = [[torch.zeros(1, 77, 1024), {"pooled_output": None}]]
    out = node.execute(cond, **sliders).result[0]
    aus = out[0][1]["fineface_au"]
    assert float(aus.get("AU12")) == 4.0 and float(aus.values.abs().sum()) == 4.0
    assert "fineface_au" not in cond[0][1]  # the input conditioning is not changed


def test_au_conditioning_takes_au_estimates_output(pack):
    AUVector = sys.modules[f"{pack.__name__}.magicface_core.au"].AUVector  # the pack's own class

    node = _cls(pack, "MagicFaceFineFaceAUConditioning")
    given = AUVector.from_dict({"AU6": 2.5, "AU25": 1})
    out = node.execute([[torch.zeros(1, 77, 1024), {}]], aus=given).result[0]
    assert out[0][1]["fineface_au"].allclose(given)


def test_au_conditioning_refuses_aus_far_outside_0_to_5(pack):
    AUVector = sys.modules[f"{pack.__name__}.magicface_core.au"].AUVector
    AUInputError = sys.modules[f"{pack.__name__}.magicface_core.errors"].AUInputError

    with pytest.raises(AUInputError, match="0..5"):
        _cls(pack, "MagicFaceFineFaceAUConditioning").execute([[torch.zeros(1, 2, 1024), {}]],
                                                              aus=AUVector.from_dict({"AU1": 50}))


def test_au_conditioning_adds_an_au_sweep_one_row_per_image(pack):
    AUVector = sys.modules[f"{pack.__name__}.magicface_core.au"].AUVector
    sweep = _cls(pack, "MagicFaceAUSweep").execute("AU12", 0.0, 5.0, 1.0).result[0]
    node = _cls(pack, "MagicFaceFineFaceAUConditioning")
    out = node.execute([[torch.zeros(1, 77, 1024), {}]], aus=AUVector.from_dict({"AU6": 1.0}), au_delta=sweep).result[0]
    aus = out[0][1]["fineface_au"]
    assert len(aus) == 6
    assert aus.get("AU12").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and aus.get("AU6").tolist() == [1.0] * 6


def test_au_rows_must_match_the_latent_batch(pack):
    AUVector = sys.modules[f"{pack.__name__}.magicface_core.au"].AUVector
    SettingsError = sys.modules[f"{pack.__name__}.magicface_core.errors"].SettingsError
    check = sys.modules[f"{pack.__name__}.nodes.fineface_patch"].check_au_rows
    rows = AUVector.zeros().repeat_to(6)
    check(rows, 6)
    check(AUVector.zeros(), 4)  # one row: the whole batch
    with pytest.raises(SettingsError, match="6 rows of FineFace AUs but the latent batch has 1: set .*batch_size.* to 6"):
        check(rows, 1)


def test_fineface_weights_are_listed_from_the_model_folder_and_a_missing_one_says_what_to_do(pack, tmp_path, monkeypatch):
    nodes = sys.modules[f"{pack.__name__}.nodes.fineface_nodes"]
    WeightsNotFoundError = sys.modules[f"{pack.__name__}.magicface_core.errors"].WeightsNotFoundError
    monkeypatch.setenv("MAGICFACE_MODELS", str(tmp_path))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "attn_processors.ckpt").write_bytes(b"")
    (tmp_path / "other").mkdir()  # not FineFace's
    assert nodes.available_weights() == {"mine": tmp_path / "mine"}
    assert nodes.resolve("mine", sd15_variant=False) == tmp_path / "mine"
    with pytest.raises(WeightsNotFoundError, match="no FineFace weights named 'gone'.*download Tvaranka/fineface"):
        nodes.resolve("gone", sd15_variant=False)


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    if not COMFYUI_DIR:
        pytest.skip("COMFYUI_DIR is not set (no ComfyUI checkout to run in)")
    out = tmp_path_factory.mktemp("fineface-check") / "figures.json"
    run = subprocess.run([COMFYUI_PYTHON, str(REPO / "tests" / "fineface_comfy_check.py"), COMFYUI_DIR, str(out)],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


def test_patched_models_noise_prediction_equals_the_cores(figures):
    assert figures["noise_pred"] < 1e-5
    assert figures["lora_applied"] > 1e-3  # the LoRA at the trained scale really changed the MODEL


def test_patch_stacks_on_an_earlier_attn2_replacement(figures):
    assert figures["chained_before"] < 1e-6


def test_a_later_pack_chaining_on_ours_keeps_ours(figures):
    assert figures["chained_after"] < 1e-6
