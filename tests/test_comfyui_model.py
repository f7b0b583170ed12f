"""MagicFace as a ComfyUI MODEL equals the core (float32), checked inside a real ComfyUI.

Skipped unless COMFYUI_DIR is set; runs tests/comfyui_model_check.py with ComfyUI's Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.paths import REPO

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set (no ComfyUI checkout to run in)")


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    out = tmp_path_factory.mktemp("model-check") / "figures.json"
    run = subprocess.run([COMFYUI_PYTHON, str(REPO / "tests" / "comfyui_model_check.py"), COMFYUI_DIR, str(out)],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


def test_identity_features_from_comfyuis_unet_equal_the_cores(figures):
    assert figures["identity_features"] < 1e-5


def test_the_models_noise_prediction_equals_the_cores(figures):
    assert figures["noise_prediction_unet"] < 1e-5
    assert figures["noise_prediction_apply_model"] < 1e-5


def test_ksampler_ddim_edit_lands_on_the_cores_ddim(figures):
    # Same start point; KSampler's ddim_uniform ends at sigma 0, the core's DDIM (SD 1.5's set_alpha_to_one=False)
    # one step short of it, at the smallest training sigma: KSampler's result is the core's last clean estimate.
    assert figures["ddim_ksampler_vs_core_last_estimate"] < 1e-3
    assert figures["ddim_sigmas"][-1] == 0.0


def test_sampler_custom_advanced_parts_sample_the_model(figures):
    assert figures["custom_advanced_euler_vs_ksampler_ddim"] < 1e-6  # KSampler's ddim is euler on these sigmas
    assert figures["custom_advanced_dpmpp_2m_karras_finite"]


def test_both_unets_use_the_patcher_class_comfyuis_checkpoint_loader_uses(figures):
    # v0.33.0: CoreModelPatcher as main.py rebinds it (MainPyPatcher stands in for ModelPatcherDynamic, which
    # needs a GPU); v0.8.0: ModelPatcher. One patcher per UNet: both sampling paths run under it.
    expected = ["MainPyPatcher"] if figures["has_core_model_patcher"] else ["ModelPatcher"]
    assert figures["patcher_classes"] == expected and figures["patchers"] == 2


def test_the_pack_sampler_through_comfyuis_unet_equals_the_core(figures):
    assert figures["pack_sampler_comfy_unet_vs_core"] < 1e-4


def test_identity_patch_stacks_with_another_packs_attn1_replacement_in_either_order(figures):
    assert figures["stacked_other_then_ours_vs_hand"] < 1e-5
    assert figures["stacked_ours_then_other_vs_hand"] < 1e-5
