"""The face pipeline on real photos with real weights: dlib's detector, 68-point model and face descriptor.

dlib-bin and face_recognition_models are test requirements (requirements-dev.txt); the photos are
the authors' portraits in ../shared/testdata/official.
"""

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from magicface_core import NoFaceError
from magicface_core.evaluation.evaluate import face_recognition_embedder
from magicface_core.evaluation.metrics import id_distance
from magicface_core.faces.condition import render_condition
from magicface_core.faces.d3dfr import five_points_from_68
from magicface_core.faces.toolkit import FaceToolkit
from tests.support.paths import OFFICIAL

pytest.importorskip("dlib")
NAMES = ("00025", "00381", "00512")
# (scale, offset, background): the portrait placed into a 1400x1300 photo.
PLACEMENTS = ((0.6, (30, 700), "noise"), (0.8, (800, 100), "gray"), (1.0, (0, 0), "gradient"),
              (1.0, (500, 400), "noise"), (1.4, (100, 200), "gray"), (2.0, (300, 250), "gradient"))


def _portrait(name: str) -> np.ndarray:
    return np.asarray(Image.open(OFFICIAL / f"{name}.png").convert("RGB"))


def _place(portrait, scale, offset, background, size=(1400, 1300), seed=0):
    width, height = size
    if background == "noise":
        photo = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    elif background == "gray":
        photo = np.full((height, width, 3), 128, np.uint8)
    else:
        photo = np.broadcast_to(np.linspace(0, 255, width)[None, :, None], (height, width, 3)).astype(np.uint8)
    side = round(512 * scale)
    dx, dy = offset
    photo[dy:dy + side, dx:dx + side] = np.asarray(Image.fromarray(portrait).resize((side, side), Image.LANCZOS))
    return photo


@pytest.fixture(scope="module")
def faces(face_weights):
    """Random parsing, AU and 3DMM weights; detection and landmarks are dlib's real ones."""
    return FaceToolkit(face_weights, "cpu", detector="dlib", jaw="2d")


@pytest.mark.parametrize("name", NAMES)
def test_crops_frame_the_face_alike_wherever_it_is(faces, name):
    portrait = _portrait(name)
    scales, centres = [], []
    for scale, offset, background in PLACEMENTS:
        _, transform = faces.crop(_place(portrait, scale, offset, background))
        # In the portrait's own pixels: scale 1 and centre (256, 256) reproduce the authors' crop.
        scales.append(transform.scale * scale)
        centres.append(((transform.center_x - offset[0]) / scale, (transform.center_y - offset[1]) / scale))
    scales, centres = np.array(scales), np.array(centres)
    assert scales.max() / scales.min() - 1 < 0.05
    assert np.hypot(*(centres - centres.mean(0)).T).max() < 8
    assert np.abs(scales - 1).max() < 0.15
    assert np.hypot(*(centres - 256).T).max() < 30


def test_no_face_and_two_faces(faces):
    background = np.asarray(Image.fromarray(_portrait("00381")[:180, :180]).resize((512, 512), Image.LANCZOS))
    for call in (faces.crop, faces.landmarks):
        with pytest.raises(NoFaceError, match="no face found in the 512x512 image"):
            call(background)
    pair = np.full((700, 1300, 3), 90, np.uint8)
    pair[50:562, 50:562] = _portrait("00025")
    pair[100:460, 800:1160] = np.asarray(Image.fromarray(_portrait("00512")).resize((360, 360), Image.LANCZOS))
    _, larger = faces.crop(pair, face_index=0)
    _, other = faces.crop(pair, face_index=1)
    assert 50 < larger.center_x < 562 and 800 < other.center_x < 1160
    assert larger.scale < other.scale  # the larger face needs less magnification
    with pytest.raises(NoFaceError, match="only 2 face"):
        faces.crop(pair, face_index=2)


def _authors_dots(name: str) -> np.ndarray:
    """The 17 jaw dot centres of the authors' condition image, index 0 on the image's left."""
    from scipy import ndimage

    portrait = _portrait(name)
    theirs = np.asarray(Image.open(OFFICIAL / f"{name}_bg.png").convert("RGB"))
    dots = (np.abs(theirs.astype(int) - portrait).sum(-1) > 30) & (theirs.sum(-1) > 0)
    labels, count = ndimage.label(dots)
    assert count == 17
    centres = np.array(ndimage.center_of_mass(dots, labels, range(1, 18)))[:, ::-1]
    order = np.argsort(np.arctan2(centres[:, 1] - centres[:, 1].min(), centres[:, 0] - centres[:, 0].mean()))[::-1]
    return centres[order]


def test_condition_with_real_landmarks_and_the_2d_jaw(faces):
    portrait = _portrait("00381")
    landmarks = faces.landmarks(portrait)
    jaw = faces.jaw_landmarks(portrait)
    assert np.array_equal(jaw, landmarks)
    # A real 2D jaw lies near the authors' 3DMM dots, but not on them (median ~14 px measured).
    distance = np.hypot(*(landmarks[:17] - _authors_dots("00381")).T)
    assert np.median(distance) < 20 and distance.max() < 35
    condition, mask = faces.condition(portrait)
    assert np.array_equal(condition, render_condition(portrait, faces.parse(portrait), landmarks))
    assert mask.shape == (512, 512)


def test_condition_through_the_3dmm_jaw_ignores_expression(face_weights):
    import torch

    faces = FaceToolkit(face_weights, "cpu", detector="dlib")  # jaw="3dmm" is the default
    assert faces.jaw == "3dmm"
    portrait = _portrait("00025")
    landmarks = faces.landmarks(portrait)
    fit = faces._d3dfr
    jaw = faces.jaw_landmarks(portrait, landmarks)
    assert np.array_equal(jaw, fit.landmarks68(portrait, five_points_from_68(landmarks)))
    condition, _ = faces.condition(portrait, landmarks)
    assert np.array_equal(condition, render_condition(portrait, faces.parse(portrait), jaw))

    class ChangedExpression(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, x):
            out = self.network(x).clone()
            out[:, 80:144] += torch.linspace(-3, 3, 64)
            return out

    original = fit.network
    try:
        fit.network = ChangedExpression(original)
        assert np.array_equal(faces.jaw_landmarks(portrait, landmarks), jaw)
        fit.neutral_expression = False  # the public get_lm68's behaviour: now the jaw moves
        assert np.hypot(*(faces.jaw_landmarks(portrait, landmarks) - jaw).T).max() > 1
    finally:
        fit.network, fit.neutral_expression = original, True


def test_id_metric_with_real_face_embeddings():
    embed = face_recognition_embedder()
    portraits = {name: _portrait(name) for name in NAMES}
    embeddings = {name: embed(image) for name, image in portraits.items()}
    assert all(e is not None and e.shape == (128,) for e in embeddings.values())
    assert id_distance(embeddings["00381"], embed(portraits["00381"].copy())) == 0
    for i, a in enumerate(NAMES):
        for b in NAMES[i + 1:]:
            assert id_distance(embeddings[a], embeddings[b]) > 0.6
    buffer = io.BytesIO()
    Image.fromarray(portraits["00512"]).filter(ImageFilter.GaussianBlur(1.0)).save(buffer, "JPEG", quality=70)
    degraded = np.asarray(Image.open(buffer).convert("RGB"))
    assert id_distance(embeddings["00512"], embed(degraded)) < 0.3
    assert embed(np.full((256, 256, 3), 128, np.uint8)) is None


def test_cli_and_nodes_expose_the_detector_and_jaw(face_weights, tmp_path, pack):
    from magicface_core import cli

    out = tmp_path / "condition.png"
    argv = ["condition", "--image", str(OFFICIAL / "00381.png"), "--out", str(out), "--detector", "dlib",
            "--jaw", "2d", "--face-weights", str(face_weights), "--device", "cpu"]
    assert cli.main(argv) == 0
    portrait = _portrait("00381")
    faces = FaceToolkit(face_weights, "cpu", detector="dlib", jaw="2d")
    expected, _ = faces.condition(portrait)
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), expected)
    defaults = cli.build_parser().parse_args(["condition", "--image", "a.png", "--out", "b.png"])
    assert (defaults.detector, defaults.jaw) == ("face_alignment", "3dmm")

    nodes = pack.NODE_CLASS_MAPPINGS
    crop_inputs = nodes["MagicFaceFaceCrop"].INPUT_TYPES()
    # V3 combos: ("COMBO", {"options": [...], "default": ...})
    assert crop_inputs["optional"]["detector"][1]["options"] == ["face_alignment", "dlib"]
    condition_inputs = nodes["MagicFaceFaceParseContour"].INPUT_TYPES()["optional"]
    assert condition_inputs["jaw"][1]["options"] == ["3dmm", "2d"] and condition_inputs["jaw"][1]["default"] == "3dmm"
