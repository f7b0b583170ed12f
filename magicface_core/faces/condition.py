"""The condition image: background with the person blacked out, plus the jaw contour as dots.

The rule (the authors' example ``00381_bg.png`` shows it): every pixel a face parser assigns to
any person class (anything but CelebAMask-HQ class 0, background) becomes black; then the 17
jaw points of the 68-point scheme are drawn as filled dots and *added* to the image, saturating
at 255. Dot i has colour ``int(255 * c)`` for ``c = (cos(pi x / 2), sin(pi x), |2x - 0.5|)``,
``x = i / 69``: matplotlib's 'rainbow' over 70 points with red and blue swapped.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ImageInputError

NUM_JAW_POINTS = 17
DOT_RADIUS_AT_512 = 4.25  # the authors' dots cover about 57 pixels at 512x512
BACKGROUND_LABEL = 0


def jaw_colors() -> np.ndarray:
    """``[17, 3]`` uint8 RGB colours of the jaw dots, index 0 first."""
    colors = []
    for i in range(NUM_JAW_POINTS):
        x = i / 69.0
        c = (math.cos(math.pi * x / 2), math.sin(math.pi * x), abs(2 * x - 0.5))
        colors.append([int(255 * min(max(v, 0.0), 1.0)) for v in c])
    return np.array(colors, dtype=np.uint8)


JAW_COLORS = jaw_colors()


def person_mask(parsing: np.ndarray) -> np.ndarray:
    """True where the parser saw any part of the person."""
    return np.asarray(parsing) != BACKGROUND_LABEL


def render_condition(image: np.ndarray, parsing: np.ndarray, landmarks: np.ndarray,
                     dot_radius: float | None = None) -> np.ndarray:
    """The condition image for ``image`` (HxWx3 uint8), its parsing (HxW labels) and 68 landmarks (x, y)."""
    image = np.asarray(image)
    parsing = np.asarray(parsing)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageInputError(f"render_condition needs an HxWx3 uint8 image, got {image.shape} {image.dtype}")
    if parsing.shape != image.shape[:2]:
        raise ImageInputError(f"the parsing map is {parsing.shape}, the image {image.shape[:2]}")
    if landmarks.ndim != 2 or landmarks.shape[0] < NUM_JAW_POINTS or landmarks.shape[1] != 2:
        raise ImageInputError(f"expected 68 landmarks as (x, y) rows, got shape {landmarks.shape}")
    height, width = parsing.shape
    radius = DOT_RADIUS_AT_512 * min(height, width) / 512.0 if dot_radius is None else dot_radius

    out = image.astype(np.int32)
    out[person_mask(parsing)] = 0
    out += jaw_dots(landmarks[:NUM_JAW_POINTS], (height, width), radius)
    return np.clip(out, 0, 255).astype(np.uint8)


def jaw_dots(points: np.ndarray, shape: tuple[int, int], radius: float) -> np.ndarray:
    """An int32 HxWx3 layer with one filled disc per jaw point (pixel centres within ``radius``)."""
    height, width = shape
    layer = np.zeros((height, width, 3), dtype=np.int32)
    reach = int(math.ceil(radius))
    for (x, y), color in zip(points, JAW_COLORS):
        cx, cy = int(round(x)), int(round(y))
        y0, y1 = max(cy - reach, 0), min(cy + reach + 1, height)
        x0, x1 = max(cx - reach, 0), min(cx + reach + 1, width)
        if y0 >= y1 or x0 >= x1:
            continue  # the point is off the image
        yy, xx = np.mgrid[y0:y1, x0:x1]
        inside = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
        # Overlapping dots keep one colour each (later index wins), as drawing them does.
        layer[y0:y1, x0:x1][inside] = color
    return layer
