import json
from pathlib import Path

import numpy as np
import pytest
import torch

from magicface_core import AUVector, CheckpointError, NoFaceError
from magicface_core.faces.au_estimation import LibreFaceAUNet, ffhq_quad, load_libreface
from magicface_core.faces.parsing import BiSeNet, BiSeNetParser, load_bisenet
from magicface_core.faces.toolkit import FaceToolkit
from magicface_core.faces.landmarks import FaceBox
from tests.support.paths import OFFICIAL
from tests.support.factories import bisenet_state, libreface_checkpoint, libreface_shapes

PUBLISHED_BISENET = json.loads((Path(__file__).parent / "data" / "bisenet_79999_iter_keys.json").read_text())


def test_bisenet_has_the_published_keys_and_loads_the_file(tmp_path):
    ours = {k: list(v.shape) for k, v in BiSeNet().state_dict().items()}
    assert ours == PUBLISHED_BISENET
    path = tmp_path / "79999_iter.pth"
    torch.save(bisenet_state(), path)
    model = load_bisenet(path)
    labels = BiSeNetParser(model).parse(np.zeros((300, 300, 3), np.uint8))
    assert labels.shape == (300, 300) and labels.dtype == np.uint8 and labels.max() < 19
    # Files from older torch lack num_batches_tracked; still fine.
    torch.save({k: v for k, v in bisenet_state().items() if "num_batches" not in k}, path)
    load_bisenet(path)


def test_libreface_has_the_published_keys_and_loads_the_file(tmp_path):
    assert {k: list(v.shape) for k, v in LibreFaceAUNet().state_dict().items()} == libreface_shapes()
    path = tmp_path / "resnet.pt"
    torch.save(libreface_checkpoint(), path)
    model = load_libreface(path)
    out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 12) and out.min() >= 0 and out.max() <= 5


def test_wrong_files_are_refused_with_a_clear_error(tmp_path):
    bisenet_file, libreface_file = tmp_path / "a.pth", tmp_path / "b.pt"
    torch.save(bisenet_state(), bisenet_file)
    torch.save(libreface_checkpoint(), libreface_file)
    with pytest.raises(CheckpointError, match="not the BiSeNet face parser"):
        load_bisenet(libreface_file)
    with pytest.raises(CheckpointError, match="not LibreFace"):
        load_libreface(bisenet_file)


def test_ffhq_alignment_follows_the_face():
    landmarks = np.zeros((68, 2))
    landmarks[36:42] = (200, 200)
    landmarks[42:48] = (300, 200)
    landmarks[48:68] = (250, 320)  # the lips; their outermost points are the corners
    landmarks[48], landmarks[54] = (220, 320), (280, 320)
    quad = ffhq_quad(landmarks)
    assert quad[0, 0] < quad[2, 0] and quad[0, 1] < quad[2, 1]  # upright: top-left to bottom-right
    assert quad.mean(axis=0) == pytest.approx((250, 212))  # between the eyes, a tenth toward the mouth
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rotated = ffhq_quad(landmarks @ rotation.T)
    assert np.allclose(rotated, quad @ rotation.T)


@pytest.fixture(scope="module")
def toolkit(face_weights):
    return FaceToolkit(face_weights, "cpu", jaw="2d")  # random 2D-FAN points need not be a face; the 3dmm jaw: test_real_faces


def _portrait():
    from magicface_core.imaging import load_image

    return load_image(OFFICIAL / "00025.png")


def test_toolkit_runs_every_network_from_the_weights_folder(toolkit, monkeypatch):
    image = _portrait()
    box = FaceBox(140, 130, 372, 420)
    landmarks = toolkit._alignment.landmarks(image, box)
    assert landmarks.shape == (68, 2) and np.isfinite(landmarks).all()
    assert all(isinstance(b, FaceBox) for b in toolkit.detect(image))
    # With the detector's answer fixed, everything downstream is wired end to end.
    monkeypatch.setattr(toolkit._alignment, "detect", lambda img: [box])
    condition, mask = toolkit.condition(image)
    assert condition.shape == image.shape and mask.shape == image.shape[:2]
    aus = toolkit.estimate_aus([image, image[:, ::-1].copy()])
    assert isinstance(aus, AUVector) and len(aus) == 2
    assert float(aus.values.min()) >= 0 and float(aus.values.max()) <= 5
    crop, transform = toolkit.crop(np.pad(image, ((100, 100), (300, 0), (0, 0))))
    assert crop.shape == (512, 512, 3)


def test_no_face_is_a_clear_error(toolkit, monkeypatch):
    monkeypatch.setattr(toolkit._alignment, "detect", lambda img: [])
    blank = np.zeros((512, 512, 3), np.uint8)
    for call in (toolkit.crop, toolkit.landmarks, toolkit.condition):
        with pytest.raises(NoFaceError, match="no face found"):
            call(blank)


def test_every_network_goes_through_the_placement_before_each_use(face_weights, monkeypatch):
    """What ComfyUI's memory management hooks into: each network is registered once and loaded before each use."""
    registered, loads = [], []

    def placement(module):
        registered.append(module)
        return lambda: loads.append(module)

    toolkit = FaceToolkit(face_weights, "cpu", jaw="2d", placement=placement)
    image = _portrait()
    box = FaceBox(140, 130, 372, 420)
    toolkit.detect(image)
    monkeypatch.setattr(toolkit._alignment, "detect", lambda img: [box])
    toolkit.condition(image)
    toolkit.condition(image)
    toolkit.estimate_aus([image])
    detector, fan = toolkit._alignment.detector.face_detector, toolkit._alignment.fan
    bisenet, libreface = toolkit._parsers["bisenet"].model, toolkit._au_estimator.model
    assert [id(m) for m in registered] == [id(m) for m in (detector, bisenet, fan, libreface)]
    condition = (bisenet, detector, fan)  # parse, find the face, landmarks
    expected = (detector, *condition, *condition, detector, fan, libreface)
    names = {id(detector): "detector", id(fan): "fan", id(bisenet): "bisenet", id(libreface): "libreface"}
    assert [names[id(m)] for m in loads] == [names[id(m)] for m in expected]


def test_the_parser_is_chosen_per_call(toolkit):
    with pytest.raises(ValueError, match="unknown face parser 'nope'"):
        toolkit.parse(np.zeros((512, 512, 3), np.uint8), parser="nope")
    assert toolkit.parser_name == "bisenet"  # nothing shared changed
