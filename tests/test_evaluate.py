"""The paper's metrics on inputs whose answers are known."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from magicface_core import AUVector
from magicface_core.evaluation import metrics
from magicface_core.evaluation.evaluate import EvalTools, evaluate, evaluate_edit
from tests.support.paths import OFFICIAL

SIZE = 128


def _landmarks_for_pose(yaw, pitch, roll, size=SIZE):
    """68 points whose six pose points are the generic head seen at (yaw, pitch, roll)."""
    rotation = metrics.rotation_matrix(yaw, pitch, roll)
    camera = metrics.camera_matrix(size, size)
    landmarks = np.zeros((68, 2))
    for index, point in metrics.POSE_POINTS.items():
        p = rotation @ np.array(point) + [0, 0, 1000.0]
        projected = camera @ p
        landmarks[index] = projected[:2] / projected[2]
    return landmarks


def _tools(aus_by_image=None, pose_by_image=None):
    """Instruments with known outputs, keyed on an image's mean brightness."""
    parsing = np.zeros((SIZE, SIZE), np.uint8)
    parsing[40:90, 40:90] = 1  # the face: a square in the middle

    def key(image):
        return int(round(float(image.mean())))

    return EvalTools(
        estimate_aus=lambda images: AUVector.cat([AUVector.from_dict((aus_by_image or {}).get(key(i), {})) for i in images]),
        parse=lambda image: parsing,
        landmarks=lambda image: _landmarks_for_pose(*(pose_by_image or {}).get(key(image), (0.0, 0.0, 0.0))),
        embed=lambda image: np.asarray(Image.fromarray(image).resize((8, 8)), np.float64).ravel() / 255.0,
    )


def test_pose_is_recovered_from_projected_landmarks():
    for pose in [(0.0, 0.0, 0.0), (0.3, -0.15, 0.1), (-0.4, 0.2, -0.05)]:
        recovered = metrics.head_pose(_landmarks_for_pose(*pose), (SIZE, SIZE))
        assert recovered == pytest.approx(pose, abs=1e-4)


def test_identical_images_score_zero_except_the_intended_au_change():
    image = np.full((SIZE, SIZE, 3), 100, np.uint8)
    tools = _tools(aus_by_image={100: {"AU12": 1.0}})
    result = evaluate_edit(image, image.copy(), AUVector.from_dict({"AU12": 3}), tools)
    assert result["background_rmse"] == 0 and result["id_distance"] == 0 and result["pose_rmse"] == pytest.approx(0, abs=1e-6)
    assert result["au_mse"] == pytest.approx(3.0**2 / 12)  # intended AU12 = 4, measured 1


def test_background_error_counts_only_outside_the_face():
    image = np.full((SIZE, SIZE, 3), 100, np.uint8)
    inside = image.copy()
    inside[50:80, 50:80] = 250  # only the face changes
    outside = image.copy()
    outside[:20] = 100 + 51  # 0.2 of the range on a band away from the face
    tools = _tools()
    face = metrics.face_region(tools.parse(image))
    assert metrics.background_rmse(image, inside, face) == 0
    band_share = (20 * SIZE) / (~face).sum()
    assert metrics.background_rmse(image, outside, face) == pytest.approx(0.2 * np.sqrt(band_share), rel=1e-6)


def test_au_targets_are_clipped_to_the_scale():
    source = AUVector.from_dict({"AU12": 4.5, "AU1": 0.5})
    intended = metrics.intended_aus(source, AUVector.from_dict({"AU12": 3, "AU1": -2}))
    assert intended.get("AU12").item() == 5 and intended.get("AU1").item() == 0


def test_evaluate_writes_per_edit_rows_and_a_summary(tmp_path):
    a, b = np.full((SIZE, SIZE, 3), 100, np.uint8), np.full((SIZE, SIZE, 3), 120, np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    tools = _tools(aus_by_image={100: {}, 120: {"AU26": 2}}, pose_by_image={120: (0.1, 0.0, 0.0)})
    triples = [(tmp_path / "a.png", AUVector.from_dict({"AU26": 2}), tmp_path / "b.png"),
               (tmp_path / "a.png", AUVector.zeros(), tmp_path / "a.png")]
    summary = evaluate(triples, tools, tmp_path / "out")
    rows = list(csv.DictReader(open(tmp_path / "out" / "per_edit.csv")))
    assert [r["au_delta"] for r in rows] == ["AU26=2", ""]
    assert float(rows[0]["au_mse"]) == pytest.approx(0) and float(rows[0]["background_rmse"]) == pytest.approx(20 / 255)
    assert float(rows[0]["pose_rmse"]) == pytest.approx(0.1 / np.sqrt(3), abs=1e-4)
    assert summary["edits"] == 2 and summary["background_rmse"] == pytest.approx(10 / 255)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["edits"] == 2
    assert "0.261" in (tmp_path / "out" / "summary.md").read_text()  # the paper's number beside ours


def test_generate_mode_edits_then_measures(tmp_path, tiny_checkpoint, face_weights, monkeypatch):
    from magicface_core.cli import main
    from magicface_core.faces.toolkit import FaceToolkit
    from magicface_core.faces.landmarks import FaceBox
    from tests.support.factories import write_tiny_sd15

    portraits = tmp_path / "portraits"
    portraits.mkdir()
    Image.open(OFFICIAL / "00025.png").save(portraits / "00025.png")
    (tmp_path / "deltas.txt").write_text("AU12=3,AU6=2\nAU26=4\n")
    monkeypatch.setattr(FaceToolkit, "detect", lambda self, image: [FaceBox(140, 130, 372, 420)])
    code = main(["evaluate", "--generate", "--identities", str(portraits), "--deltas", str(tmp_path / "deltas.txt"),
                 "--weights", str(tiny_checkpoint), "--sd15", str(write_tiny_sd15(tmp_path / "sd15")),
                 "--steps", "2", "--out", str(tmp_path / "out"), "--id-backend", "none", "--device", "cpu",
                 "--face-weights", str(face_weights)])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "per_edit.csv")))
    assert len(rows) == 2 and rows[1]["au_delta"] == "AU26=4"
    assert all(np.isfinite(float(r["background_rmse"])) for r in rows)
    assert (tmp_path / "out" / "edits" / "00025_001.png").is_file()
