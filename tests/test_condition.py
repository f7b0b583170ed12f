import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from magicface_core import ImageInputError
from magicface_core.faces.condition import JAW_COLORS, render_condition
from tests.support.paths import OFFICIAL


def _synthetic(size=256, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    parsing = np.zeros((size, size), dtype=np.uint8)
    parsing[40:200, 60:190] = 1  # skin
    parsing[20:60, 50:200] = 17  # hair
    parsing[200:256, 30:220] = 16  # cloth
    landmarks = np.zeros((68, 2))
    for i in range(17):  # jaw from left to right, away from each other
        angle = np.pi * (1 - i / 16)
        landmarks[i] = (128 + 90 * np.cos(angle), 120 + 80 * np.sin(angle))
    landmarks[17:] = (128, 100)  # non-jaw points must not be drawn
    return image, parsing, landmarks


def test_jaw_colours_follow_the_reference():
    assert JAW_COLORS.shape == (17, 3)
    assert JAW_COLORS[0].tolist() == [255, 0, 127]
    assert JAW_COLORS[16].tolist() == [238, 169, 9]


def test_person_is_black_background_kept_and_exactly_17_dots():
    image, parsing, landmarks = _synthetic()
    out = render_condition(image, parsing, landmarks, dot_radius=3.0)
    dots = np.zeros(parsing.shape, bool)
    yy, xx = np.mgrid[0:256, 0:256]
    for x, y in landmarks[:17]:
        dots |= (xx - x) ** 2 + (yy - y) ** 2 <= 9.0
    person = parsing != 0
    assert (out[person & ~dots] == 0).all()
    assert (out[~person & ~dots] == image[~person & ~dots]).all()
    labels, count = ndimage.label(dots)
    assert count == 17
    for i, (x, y) in enumerate(landmarks[:17]):
        cx, cy = int(round(x)), int(round(y))
        expected = np.minimum(255, (0 if person[cy, cx] else image[cy, cx].astype(int)) + JAW_COLORS[i])
        assert out[cy, cx].tolist() == expected.tolist()
        area = (labels == labels[cy, cx]).sum()
        assert abs(area - np.pi * 9) < 6  # a filled disc of radius 3
    assert (out[dots & person] != 0).any(axis=-1).all()


def test_default_radius_scales_with_size_and_bad_inputs_are_refused():
    image, parsing, landmarks = _synthetic(512)
    out = render_condition(image, np.ones_like(parsing), landmarks)
    nonblack = (out.sum(-1) > 0).sum()
    assert 17 * 45 < nonblack < 17 * 70  # about 57 pixels per dot at 512
    with pytest.raises(ImageInputError):
        render_condition(image, parsing[:100], landmarks)
    with pytest.raises(ImageInputError):
        render_condition(image.astype(np.float32), parsing, landmarks)
    with pytest.raises(ImageInputError):
        render_condition(image, parsing, landmarks[:10])


def test_reproduces_the_authors_condition_image():
    """Given the parsing and jaw points of 00381_bg.png, rendering gives back that image."""
    portrait = np.asarray(Image.open(OFFICIAL / "00381.png").convert("RGB"))
    theirs = np.asarray(Image.open(OFFICIAL / "00381_bg.png").convert("RGB"))
    dot_pixels = (np.abs(theirs.astype(int) - portrait).sum(-1) > 30) & (theirs.sum(-1) > 0)
    labels, count = ndimage.label(dot_pixels)
    assert count == 17
    centres = np.array(ndimage.center_of_mass(dot_pixels, labels, range(1, 18)))[:, ::-1]  # (x, y)
    # Their dot index runs along the jaw from the image's left: order by angle around the chin.
    order = np.argsort(np.arctan2(centres[:, 1] - centres[:, 1].min(), centres[:, 0] - centres[:, 0].mean()))[::-1]
    landmarks = np.zeros((68, 2))
    landmarks[:17] = centres[order]
    parsing = ((theirs.sum(-1) == 0) | dot_pixels).astype(np.uint8)
    ours = render_condition(portrait, parsing, landmarks)

    our_mask, their_mask = ours.sum(-1) == 0, theirs.sum(-1) == 0
    assert (our_mask == their_mask).mean() > 0.99
    our_dots = (ours.sum(-1) > 0) & (parsing == 1)
    our_labels, our_count = ndimage.label(our_dots)
    assert our_count == 17
    our_centres = np.array(ndimage.center_of_mass(our_dots, our_labels, range(1, 18)))[:, ::-1]
    for (x, y), colour in zip(landmarks[:17], JAW_COLORS):
        nearest = our_centres[np.argmin(np.hypot(*(our_centres - (x, y)).T))]
        assert np.hypot(*(nearest - (x, y))) < 2.0
        their_colour = theirs[int(round(y)), int(round(x))].astype(int)
        assert np.abs(their_colour - colour).max() <= 12
