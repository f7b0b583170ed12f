import numpy as np
import pytest
from PIL import Image

from magicface_core import ImageInputError, NoFaceError
from magicface_core.faces.crop import CropTransform, crop_face, crop_to_transform, face_mask, paste_back
from magicface_core.imaging import as_portrait, to_rgb_uint8
from magicface_core.faces.landmarks import FaceBox, pick_face
from tests.support.paths import OFFICIAL


def _photo(width=1200, height=900):
    """A photo with texture everywhere and the official portrait scaled into it."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    portrait = Image.open(OFFICIAL / "00512.png").convert("RGB").resize((700, 700))
    photo[100:800, 300:1000] = np.asarray(portrait)
    return photo


def test_framing_matches_the_authors():
    box = FaceBox(400, 300, 700, 660)
    t = CropTransform.from_box(box, (900, 1200, 3))
    (x0, y0), (x1, y1) = t.to_crop([[box.x0, box.y0], [box.x1, box.y1]])
    assert x1 - x0 == pytest.approx(352 / 1.5)  # about 235 of 512 pixels
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((256, 256))
    # 1.5 box widths around the centre land on [80, 432]
    (a, _), (b, _) = t.to_crop([[550 - 225, 0], [550 + 225, 0]])
    assert (a, b) == pytest.approx((80, 432))
    points = np.array([[10.5, 20.25], [1000, 5]])
    assert np.allclose(t.to_source(t.to_crop(points)), points)


def test_crop_centres_the_box_and_handles_the_image_border():
    photo = np.zeros((600, 800, 3), np.uint8)
    photo[295:305, 395:405] = (255, 0, 0)  # a red mark at the box centre
    crop, t = crop_face(photo, FaceBox(300, 200, 500, 400))
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    assert crop[256, 256].tolist() == [255, 0, 0]
    # A face at the corner: the part of the square outside the photo is black.
    photo[:] = 200
    crop, t = crop_face(photo, FaceBox(0, 0, 120, 140))
    assert crop[5, 5].tolist() == [0, 0, 0] and crop[300, 300].tolist() == [200, 200, 200]


def test_unedited_crop_pasted_back_returns_the_photo():
    photo = _photo()
    crop, t = crop_face(photo, FaceBox(520, 300, 780, 620))
    assert np.array_equal(paste_back(photo, crop, t), photo)  # keep_detail: exact
    replaced = paste_back(photo, crop, t, keep_detail=False)
    weights = face_mask(t)
    support = crop_to_transform((np.ones(photo.shape[:2] + (3,), np.uint8) * 255), t)  # where the crop saw the photo
    assert support.shape == (512, 512, 3)
    changed = np.abs(replaced.astype(int) - photo).max(-1) > 0
    ys, xs = np.nonzero(changed)
    # Only pixels under the (feathered) face mask can change, and only by resampling.
    (fx0, fy0), (fx1, fy1) = t.to_source([[0, 0], [512, 512]])
    assert xs.min() >= fx0 and xs.max() <= fx1 and ys.min() >= fy0 and ys.max() <= fy1
    assert np.abs(replaced.astype(int) - photo).mean() < 3
    assert weights.max() == pytest.approx(1.0) and weights[0, 0] == 0


def test_edit_lands_on_the_face_and_nowhere_else():
    photo = _photo()
    crop, t = crop_face(photo, FaceBox(520, 300, 780, 620))
    edited = crop.copy()
    edited[300:360, 200:312] = (0, 255, 0)  # "open the mouth"
    result = paste_back(photo, edited, t)
    centre = t.to_source([[256, 330]])[0].round().astype(int)
    assert result[centre[1], centre[0], 1] > 200 and result[centre[1], centre[0], 0] < 60
    far = np.ones(photo.shape[:2], bool)
    (fx0, fy0), (fx1, fy1) = t.to_source([[60, 40], [452, 500]])
    far[int(fy0):int(fy1), int(fx0):int(fx1)] = False
    assert np.array_equal(result[far], photo[far])
    # The blend is feathered: along a row through the edit, values change gradually at the mask's edge.
    alpha = face_mask(t)[330]
    assert ((alpha > 0.05) & (alpha < 0.95)).sum() >= 10


def test_crop_transform_guards():
    photo = _photo()
    crop, t = crop_face(photo, FaceBox(520, 300, 780, 620))
    with pytest.raises(ImageInputError):
        paste_back(photo[:500], crop, t)
    with pytest.raises(ImageInputError, match="square"):
        paste_back(photo, crop[:256], t)
    with pytest.raises(ImageInputError, match="at least"):
        crop_face(photo, FaceBox(10, 10, 20, 22))
    small = np.full((64, 64, 3), 128, np.uint8)  # a 64x64 photo still crops (upscaled)
    crop, t = crop_face(small, FaceBox(12, 10, 52, 58))
    assert crop.shape == (512, 512, 3) and np.array_equal(paste_back(small, crop, t), small)


def test_face_choice_and_errors():
    boxes = [FaceBox(0, 0, 50, 50), FaceBox(100, 100, 300, 300), FaceBox(0, 0, 100, 100)]
    assert pick_face(boxes, 0, (400, 400)) == boxes[1]
    assert pick_face(boxes, 2, (400, 400)) == boxes[0]
    with pytest.raises(NoFaceError, match="only 3"):
        pick_face(boxes, 3, (400, 400))
    with pytest.raises(NoFaceError, match="no face"):
        pick_face([], 0, (400, 400))


def test_image_formats_are_normalised():
    gray = np.full((30, 40), 0.5, np.float32)
    assert to_rgb_uint8(gray).shape == (30, 40, 3) and to_rgb_uint8(gray)[0, 0].tolist() == [128] * 3
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 0  # fully transparent: white
    assert to_rgb_uint8(rgba)[0, 0].tolist() == [255, 255, 255]
    rgba[..., 3] = 255
    assert to_rgb_uint8(rgba)[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(ImageInputError):
        to_rgb_uint8(np.zeros((4, 4, 5)))
    with pytest.raises(ImageInputError, match="Crop the face first"):
        as_portrait(np.zeros((300, 200, 3), np.uint8))
    assert as_portrait(np.zeros((256, 256, 3), np.uint8)).shape == (512, 512, 3)


def test_an_upscaled_edit_pastes_back_at_its_own_resolution():
    photo = _photo()
    crop, t = crop_face(photo, FaceBox(520, 300, 780, 620))
    big_unedited = crop_to_transform(photo, t.resized(1024))
    assert big_unedited.shape == (1024, 1024, 3)
    assert np.array_equal(paste_back(photo, big_unedited, t), photo)
    upscaled = np.asarray(Image.fromarray(crop).resize((1024, 1024), Image.LANCZOS))
    result = paste_back(photo, upscaled, t, keep_detail=False)
    assert np.abs(result.astype(int) - photo).mean() < 3
