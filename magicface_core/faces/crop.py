"""The 512x512 face crop framed like the authors' crops, and pasting an edited crop back.

The authors centre the face detector's box in the crop and map a square of 1.5 x the box width
onto [80, 432], so the box is about 235 of the 512 pixels wide. A detector's box is not a
stable ruler, though (dlib's boxes on one face vary 25% in size with its placement in the
photo), so we frame from the 68 landmarks instead (:func:`frame_from_landmarks`): the
detector only finds the face. The rule is calibrated so that the authors' three portraits,
which are crops in their framing, reproduce themselves. The crop is an axis-aligned scale and
shift (no rotation), described by :class:`CropTransform`; coordinates are continuous (pixel i
spans [i, i+1)).

Pasting back blends the edit into the original photo through a feathered mask around the face,
so pixels away from the face are untouched and no seam shows. With ``keep_detail`` (the
default) the photo's own detail is kept: what is added is the *change* the edit made to the
crop, brought back to the photo's resolution, so an unedited crop returns the photo exactly and
a large face keeps its sharpness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ImageInputError
from .landmarks import FaceBox

CROP_SIZE = 512
FRAME = (80.0, 432.0)  # where the square of BOX_SPAN x box width lands in the crop
BOX_SPAN = 1.5
MIN_FACE_PX = 24  # smaller faces cannot be edited meaningfully
# Landmark framing, in units of the FFHQ alignment size (max(2 x eye distance, 1.8 x eye-to-mouth)):
# the authors' box width is FACE_WIDTH_PER_SIZE of it, and the box centre lies CENTER_DOWN_PER_SIZE
# of it below the FFHQ centre, along the face's vertical. Fitted on the three official portraits
# with dlib's landmarks (width ratios 1.068, 1.009, 1.083; offsets 0.115, 0.077, 0.032).
FACE_WIDTH_PER_SIZE = 1.053
CENTER_DOWN_PER_SIZE = 0.075
BOX_ASPECT = 1.2  # height / width of the face box the paste-back mask is drawn from


@dataclass(frozen=True)
class CropTransform:
    """``crop = scale * (source - center) + size / 2``, per axis."""

    center_x: float
    center_y: float
    scale: float
    source_width: int
    source_height: int
    box_width: float  # the face box in source pixels, for the paste-back mask
    box_height: float
    size: int = CROP_SIZE

    @classmethod
    def from_box(cls, box: FaceBox, image_shape: tuple[int, ...], size: int = CROP_SIZE) -> "CropTransform":
        if min(box.width, box.height) < MIN_FACE_PX:
            raise ImageInputError(
                f"the face is only {box.width:.0f}x{box.height:.0f} pixels; MagicFace needs a face at least "
                f"{MIN_FACE_PX} pixels wide (ideally over 200) to edit"
            )
        scale = (FRAME[1] - FRAME[0]) * size / CROP_SIZE / (BOX_SPAN * box.width)
        cx, cy = box.center
        return cls(cx, cy, scale, image_shape[1], image_shape[0], box.width, box.height, size)

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray, image_shape: tuple[int, ...],
                       size: int = CROP_SIZE) -> "CropTransform":
        """The authors' framing of the face whose 68 landmarks (x, y, image pixels) are given."""
        return cls.from_box(frame_from_landmarks(landmarks), image_shape, size)

    def resized(self, size: int) -> "CropTransform":
        """The same framing at another crop size (an upscaled edit pastes back through this)."""
        return replace(self, scale=self.scale * size / self.size, size=size)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        return (points - [self.center_x, self.center_y]) * self.scale + self.size / 2

    def to_source(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        return (points - self.size / 2) / self.scale + [self.center_x, self.center_y]

    def footprint(self) -> tuple[float, float, float, float]:
        """The crop's square in source coordinates: (x0, y0, x1, y1)."""
        half = self.size / 2 / self.scale
        return self.center_x - half, self.center_y - half, self.center_x + half, self.center_y + half


def frame_from_landmarks(landmarks: np.ndarray) -> FaceBox:
    """The face box the authors' detector would give, placed and sized from 68 landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise ImageInputError(f"framing needs 68 finite (x, y) landmarks, got an array of shape {lm.shape}")
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (lm[48] + lm[54]) / 2 - eye_avg
    # FFHQ's rule: the face's horizontal axis from both eyes and the mouth, its size from the larger
    # of the two distances (stable under yaw, where the eye distance shrinks, and under pitch).
    across = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    down = np.flipud(across) * [-1, 1] / max(np.hypot(*across), 1e-9)
    ffhq_size = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    cx, cy = eye_avg + eye_to_mouth * 0.1 + down * CENTER_DOWN_PER_SIZE * ffhq_size
    width = FACE_WIDTH_PER_SIZE * ffhq_size
    height = BOX_ASPECT * width
    return FaceBox(cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)


def crop_to_transform(image: np.ndarray, transform: CropTransform) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``image`` (HxWx3 uint8); outside the photo is black."""
    from PIL import Image

    x0, y0, x1, y1 = transform.footprint()
    height, width = image.shape[:2]
    # PIL resamples only boxes inside the image: pad with black where the square leaves it.
    pad_left, pad_top = max(0, math.ceil(-x0)), max(0, math.ceil(-y0))
    pad_right, pad_bottom = max(0, math.ceil(x1 - width)), max(0, math.ceil(y1 - height))
    if pad_left or pad_top or pad_right or pad_bottom:
        image = np.pad(image, ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)))
    box = (x0 + pad_left, y0 + pad_top, x1 + pad_left, y1 + pad_top)
    size = (transform.size, transform.size)
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS, box=box))


def crop_face(image: np.ndarray, box: FaceBox) -> tuple[np.ndarray, CropTransform]:
    """Crop ``image`` around the face ``box`` the way the authors framed their portraits."""
    transform = CropTransform.from_box(box, image.shape)
    return crop_to_transform(image, transform), transform


def crop_from_landmarks(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, CropTransform]:
    """Crop ``image`` around the face with these 68 landmarks, framed as the authors framed theirs."""
    transform = CropTransform.from_landmarks(landmarks, image.shape)
    return crop_to_transform(image, transform), transform


def face_mask(transform: CropTransform) -> np.ndarray:
    """A soft ellipse over brows, eyes, cheeks, mouth and chin, in crop coordinates (0..1 floats)."""
    size = transform.size
    width, height = transform.box_width * transform.scale, transform.box_height * transform.scale
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # Wider and longer than the box: edits move the chin (jaw drop) and the brows.
    a, b = 0.55 * width, 0.65 * height
    cy = size / 2 + 0.1 * height
    inside = (((xx - size / 2) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0).astype(np.float32)
    return feather(inside, sigma=0.05 * width)


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-blurred mask, kept inside the crop so the square's border never shows."""
    mask = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    if sigma > 0:
        radius = max(1, int(3 * sigma))
        kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
        kernel = (kernel / kernel.sum())
        padded = F.pad(mask, (radius, radius, radius, radius), mode="constant", value=0.0)
        mask = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    out = mask[0, 0].numpy()
    # Fade to zero over the last pixels of the square.
    size = out.shape[0]
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / max(2.0, 2 * sigma), 0, 1).astype(np.float32)
    return out * ramp[:, None] * ramp[None, :]


def paste_back(original: np.ndarray, edited: np.ndarray, transform: CropTransform,
               mask: np.ndarray | None = None, keep_detail: bool = True) -> np.ndarray:
    """``original`` (HxWx3 uint8) with the edited crop blended in around the face.

    ``mask`` (crop coordinates, 0..1) replaces the default face ellipse; it is feathered here.
    """
    from PIL import Image

    if edited.shape[0] != edited.shape[1]:
        raise ImageInputError(f"the edited crop is {edited.shape[1]}x{edited.shape[0]}; a crop is square")
    if mask is not None and np.asarray(mask).shape != edited.shape[:2]:
        raise ImageInputError(f"the mask is {np.asarray(mask).shape[::-1]}, the edited crop {edited.shape[1::-1]}")
    transform = transform.resized(edited.shape[0])
    size = transform.size
    if original.shape[:2] != (transform.source_height, transform.source_width):
        raise ImageInputError(
            f"the photo is {original.shape[1]}x{original.shape[0]} but the crop was taken from a "
            f"{transform.source_width}x{transform.source_height} image"
        )
    if mask is None:
        weights = face_mask(transform)
    else:
        weights = feather(np.clip(np.asarray(mask, dtype=np.float32), 0, 1), sigma=0.03 * transform.box_width * transform.scale)

    # Source pixels whose whole extent lies inside the crop's square.
    fx0, fy0, fx1, fy1 = transform.footprint()
    x0, y0 = max(0, math.ceil(fx0)), max(0, math.ceil(fy0))
    x1, y1 = min(transform.source_width, math.floor(fx1)), min(transform.source_height, math.floor(fy1))
    if x0 >= x1 or y0 >= y1:
        return original.copy()
    region = (x1 - x0, y1 - y0)
    (u0, v0), (u1, v1) = transform.to_crop([[x0, y0], [x1, y1]])
    box = (max(0.0, u0), max(0.0, v0), min(float(size), u1), min(float(size), v1))

    def to_source(crop_image: np.ndarray) -> np.ndarray:
        resample = Image.Resampling.LANCZOS if crop_image.ndim == 3 else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(crop_image).resize(region, resample, box=box)).astype(np.float32)

    alpha = to_source(weights)[..., None]
    patch = original[y0:y1, x0:x1].astype(np.float32)
    edited_patch = to_source(np.ascontiguousarray(edited))
    if keep_detail:
        unedited_patch = to_source(crop_to_transform(original, transform))
        blended = patch + alpha * (edited_patch - unedited_patch)
    else:
        blended = patch * (1 - alpha) + edited_patch * alpha
    result = original.copy()
    result[y0:y1, x0:x1] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return result
