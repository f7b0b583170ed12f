"""Our AU alignment against LibreFace's ``image_align`` on the same landmark sets.

tests/data/libreface_align_reference.npz holds what LibreFace's own function made of dlib's
landmarks on the official portraits, placed so that every branch runs (as is; cut by the border:
blurred padding; three times larger: shrink). tools/libreface_alignment_parity.py wrote it, running
LibreFace's code beside ours (bit-identical there).
"""

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from magicface_core.faces.au_estimation import align_face, ffhq_quad

REPO = Path(__file__).resolve().parents[1]
FIXTURE = np.load(REPO / "tests" / "data" / "libreface_align_reference.npz")


def _tool():
    spec = importlib.util.spec_from_file_location("libreface_alignment_parity",
                                                  REPO / "tools" / "libreface_alignment_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()


@pytest.mark.parametrize("index", range(len(TOOL.CASES)))
def test_alignment_matches_libreface(index):
    photo = TOOL.place(*TOOL.CASES[index])
    ours = align_face(photo, FIXTURE["landmarks"][index])
    assert ours.shape == (512, 512, 3)
    blocks = TOOL.block_means(ours)
    assert np.abs(blocks - FIXTURE["block_means"][index]).max() < 0.5
    # Exact with the same Pillow and SciPy builds as the fixture's; resampling code may differ elsewhere.
    if hashlib.sha256(ours.tobytes()).hexdigest() != str(FIXTURE["sha256"][index]):
        assert np.abs(blocks - FIXTURE["block_means"][index]).mean() < 0.1


def test_mouth_corners_are_the_outermost_lip_points():
    landmarks = np.zeros((68, 2))
    landmarks[36:42], landmarks[42:48] = (200, 200), (300, 200)
    landmarks[48:68] = (250, 320)
    landmarks[48], landmarks[54] = (225, 320), (275, 320)
    landmarks[60], landmarks[64] = (215, 322), (285, 318)  # inner corners further out: they count
    quad = ffhq_quad(landmarks)
    mouth = ((215 + 285) / 2, 320)
    centre = np.array([250, 200]) + (np.array(mouth) - [250, 200]) * 0.1
    assert quad.mean(axis=0) == pytest.approx(centre)
