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
