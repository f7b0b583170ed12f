"""Image conversions at the library's seams.

Face processing works on ``HxWx3 uint8`` arrays (what PIL and the face networks expect); the
VAE on float tensors ``[B,3,H,W]`` in 0..1; ComfyUI on ``[B,H,W,3]`` floats in 0..1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageInputError

logger = logging.getLogger(__name__)

PORTRAIT_SIZE = 512  # the authors' crops, and the resolution MagicFace was trained at


def to_rgb_uint8(image) -> np.ndarray:
    """``HxWx3 uint8`` from a PIL image, or an array that is gray (HxW), RGB or RGBA, uint8 or 0..1 float."""
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageInputError(f"expected an image HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageInputError("the image is empty")
    if array.dtype != np.uint8:
        array = np.clip(np.round(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:  # composite on white, as image viewers show transparency
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        rgb = array[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        array = np.round(rgb).astype(np.uint8)
    return np.ascontiguousarray(array)


def load_image(path: str | Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return to_rgb_uint8(image)
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageInputError(f"cannot read the image {path}: {exc}") from exc


def save_image(image: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``(width, height)`` with a good filter."""
    from PIL import Image

    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def needs_resize_to_portrait(width: int, height: int, what: str = "the image") -> bool:
    """Whether a portrait must be resized to 512x512; non-square images need a face crop first."""
    if (height, width) == (PORTRAIT_SIZE, PORTRAIT_SIZE):
        return False
    if height != width:
        raise ImageInputError(
            f"{what} is {width}x{height}; MagicFace edits 512x512 face crops. Crop the face first "
            "(CLI: --crop; ComfyUI: a MagicFace Face Crop node before, MagicFace Paste Back after decoding) "
            "or give a square portrait."
        )
    logger.info("%s: resizing %dx%d to 512x512", what, width, height)
    return True


def resize_portraits(images: torch.Tensor) -> torch.Tensor:
    """Square images ``[B,3,H,W]`` (0..1 floats) to 512x512: the one resize rule of the CLI and the nodes.

    Antialiased bicubic: as sharp as Lanczos when shrinking and without its ringing, and it runs on
    float tensors on any device, so ComfyUI's images keep their precision (no uint8 round trip).
    """
    resized = F.interpolate(images.float(), (PORTRAIT_SIZE, PORTRAIT_SIZE), mode="bicubic", antialias=True,
                            align_corners=False)
    return resized.clamp(0, 1)


def as_portrait(image: np.ndarray) -> np.ndarray:
    """A 512x512 portrait: square images are resized; anything else needs a face crop first."""
    if not needs_resize_to_portrait(image.shape[1], image.shape[0]):
        return image
    return from_tensor(resize_portraits(to_tensor([image])))[0]


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """``[B,3,H,W]`` float in 0..1."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def from_tensor(images: torch.Tensor) -> list[np.ndarray]:
    """``HxWx3 uint8`` arrays from ``[B,3,H,W]`` floats in 0..1."""
    array = (images.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(array)
