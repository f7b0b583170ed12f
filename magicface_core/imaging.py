"""Image conversions at the library's seams.

Face processing works on ``HxWx3 uint8`` arrays (what PIL and the face networks expect); the
VAE on float tensors ``[B,3,H,W]`` in 0..1; ComfyUI on ``[B,H,W,3]`` floats in 0..1.

Photos decode as they display, one rule for files and arrays alike: the EXIF orientation is
applied; 8-bit, 16-bit (uint16, PIL's ``I;16``/``I``) and float (0..1, PIL's ``F``) pixels are
scaled to 0..255; transparency is composited on **white**, as image viewers show it.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageInputError, NonFiniteError

logger = logging.getLogger(__name__)

PORTRAIT_SIZE = 512  # the authors' crops, and the resolution MagicFace was trained at
# Smaller images hold no face the detector, parser and AU network can work on (faces.crop
# needs a face of 24 pixels); below it their convolutions fail with shape errors.
MIN_IMAGE_SIZE = 32
# Decoding more pixels than this is refused before any memory is spent (PIL's own default
# limit, about 9459x9459); raise it with MAGICFACE_MAX_PIXELS or load_image(max_pixels=...).
DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_ENV = "MAGICFACE_MAX_PIXELS"


def to_rgb_uint8(image) -> np.ndarray:
    """``HxWx3 uint8`` from a PIL image or an array (gray HxW, HxWx1, RGB or RGBA; see the module's rule)."""
    if hasattr(image, "convert"):  # PIL
        image = _pil_pixels(image)
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageInputError(f"expected an image HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageInputError("the image is empty")
    if array.shape[2] in (1, 2):  # gray, gray + alpha
        array = np.concatenate([np.repeat(array[..., :1], 3, axis=2), array[..., 1:]], axis=2)
    if array.dtype == np.uint8 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    unit = _unit_range(array)
    if unit.shape[2] == 4:  # composite on white, as image viewers show transparency
        unit = unit[..., :3] * unit[..., 3:4] + (1.0 - unit[..., 3:4])
    return np.ascontiguousarray(np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8))


RANGE_TOLERANCE = 1e-3  # float rounding of 0..1 pixels, not a different scale


def check_pixel_batch(images: torch.Tensor, what: str = "the image") -> torch.Tensor:
    """A batch of float images ``[B,H,W,C]`` in 0..1 (ComfyUI's IMAGE): a channels-first batch, or
    floats on another scale (0..255, -1..1), is refused with what to do, never silently clipped."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ImageInputError(f"{what}: expected an IMAGE batch [B,H,W,C], got {shape}")
    if images.shape[0] == 0:
        raise ImageInputError(f"{what} is an empty batch: connect a node that outputs at least one image")
    if images.shape[-1] not in (1, 2, 3, 4) and images.shape[1] in (1, 3, 4):
        raise ImageInputError(
            f"{what} is channels-first [B,C,H,W] (shape {tuple(images.shape)}); IMAGE batches are channels-last "
            "[B,H,W,C]: convert it with images.movedim(1, -1) (or use a node that outputs an IMAGE)")
    if images.is_floating_point() and images.numel():
        low, high = (float(v) for v in torch.aminmax(images.detach().float()))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ImageInputError(f"{what} holds NaN or infinite values")
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            hint = ("divide it by 255" if high > 1.5 and low >= -RANGE_TOLERANCE else
                    "map it with (x + 1) / 2" if low >= -1 - RANGE_TOLERANCE and high <= 1 + RANGE_TOLERANCE else
                    "rescale it")
            raise ImageInputError(f"{what} has values from {low:.3g} to {high:.3g}; IMAGE pixels are floats in "
                                  f"0..1: {hint} (it was not clipped)")
    return images


def _unit_range(array: np.ndarray) -> np.ndarray:
    """Floats in 0..1: uint8 / 255, uint16 / 65535, bool as 0/1, floats as they are."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        unit = array.astype(np.float32)
        if not np.isfinite(unit).all():
            raise ImageInputError("the image holds NaN or infinite values")
        return unit
    raise ImageInputError(
        f"cannot read {array.dtype} pixels: give uint8 (0..255), uint16 (0..65535) or float (0..1) images"
    )


def _pil_pixels(image) -> np.ndarray:
    """The pixels of a PIL image as displayed (EXIF orientation), 16-bit and float modes unscaled."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":  # 32-bit integers: what some readers give for 16-bit gray
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    if mode == "F":
        return np.asarray(image, dtype=np.float32)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def pixel_limit() -> int:
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        return int(float(value))
    except ValueError:
        raise ImageInputError(f"{MAX_PIXELS_ENV}={value!r} is not a number of pixels") from None


def check_image_size(width: int, height: int, what: str = "the image") -> None:
    """Refuse images too small for the face networks."""
    if min(width, height) < MIN_IMAGE_SIZE:
        raise ImageInputError(
            f"{what} is only {width}x{height} pixels; MagicFace needs images at least "
            f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} (a face ideally over 200 pixels wide)"
        )


def load_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """An ``HxWx3 uint8`` photo as it displays; more than ``max_pixels`` pixels (default: see
    :data:`DEFAULT_MAX_PIXELS`) are refused before decoding."""
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels or pixel_limit()
    try:
        with warnings.catch_warnings():  # PIL's bomb warning: our own limit decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if limit > (Image.MAX_IMAGE_PIXELS or limit):  # the user raised the limit: PIL must not refuse
                Image.MAX_IMAGE_PIXELS = limit
            with Image.open(path) as image:
                width, height = image.size
                if width * height > limit:
                    raise _too_large(path, width, height, limit)
                check_image_size(width, height, str(path))
                return to_rgb_uint8(image)
    except Image.DecompressionBombError as exc:  # past twice PIL's own limit it refuses in open()
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, int(found.group(1)) if found else 0, 1, limit) from exc
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageInputError(f"cannot read the image {path}: {exc}") from exc


def _too_large(path, width: int, height: int, limit: int) -> ImageInputError:
    size = (f"{width * height:,} pixels" if height == 1 else f"{width}x{height} = {width * height:,} pixels") \
        if width else "more pixels than allowed"
    return ImageInputError(
        f"{path} is {size}, over the limit of {limit:,} pixels (a guard against decompression bombs). "
        f"Downscale the photo, or raise the limit: set {MAX_PIXELS_ENV}={2 * limit} (or load_image(max_pixels=...))."
    )


# Formats that re-encode the whole picture: written at the source photo's JPEG quality where PIL
# can read it, else at high quality. Every other output format must give back every pixel as is.
LOSSY_FORMATS = ("JPEG", "WEBP", "AVIF")
JPEG_QUALITY = 95
LOSSY_QUALITY = 95  # WebP and AVIF
_EXIF_ORIENTATION = 0x0112


def check_image_format(path: str | Path) -> str:
    """The PIL format that ``path``'s extension names, if PIL can write an RGB image in it without
    changing it behind the user's back (ICO shrinks to 256x256, GIF to 256 colours: refused)."""
    from PIL import Image

    Image.init()
    suffix = Path(path).suffix.lower()
    image_format = Image.registered_extensions().get(suffix)
    if image_format is not None and image_format in Image.SAVE:
        if image_format in LOSSY_FORMATS:
            return image_format
        keeps = _keeps_pixels(image_format)
        if keeps is True:
            return image_format
        if keeps:  # what it changes
            raise ImageInputError(
                f"cannot write {Path(path).name}: a {suffix} file {keeps}, so the result would not be the edit. "
                "Use .png (lossless), or .jpg / .webp"
            )
    raise ImageInputError(
        f"cannot write an image named {Path(path).name}: {suffix or 'no extension'} is not an image format PIL "
        "can write; use .png, .jpg or .webp"
    )


@functools.lru_cache(maxsize=None)
def _keeps_pixels(image_format: str) -> bool | str | None:
    """True when a 300x320 RGB picture comes back from ``image_format`` exactly; else what it changes
    (a string), or None when PIL cannot write RGB in it (XBM) or needs a plugin (HDF5)."""
    from PIL import Image

    picture = np.random.default_rng(0).integers(0, 256, (300, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    try:
        Image.fromarray(picture).save(buffer, format=image_format)
    except Exception:
        return None
    try:
        with Image.open(io.BytesIO(buffer.getvalue())) as back:
            size = back.size
            pixels = np.asarray(back.convert("RGB"))
    except Exception:
        return "cannot be read back to check it"
    if size != (320, 300):
        return f"resizes pictures (a 320x300 one comes back at {size[0]}x{size[1]})"
    if not np.array_equal(pixels, picture):
        return "changes the colours (it is not lossless for RGB pictures)"
    return True


def save_image(image: np.ndarray, path: str | Path, overwrite: bool = True,
               source: str | Path | None = None) -> None:
    """Write ``image`` atomically (a crash leaves no half-written file); the extension picks the format.

    ``source``: the photo it was edited from. Its ICC profile and EXIF go with it (the orientation tag
    reset, as the pixels are already upright), and a JPEG from a JPEG keeps the source's quantisation
    tables and chroma subsampling, so unchanged parts of the photo stay as close to it as a lossy
    format allows. Without a source, JPEG, WebP and AVIF are written at quality 95 (4:4:4 for JPEG)."""
    from PIL import Image

    from .files import atomic_path

    image_format = check_image_format(path)
    options = _save_options(image_format, source)
    with atomic_path(path, overwrite=overwrite) as temporary:
        Image.fromarray(image).save(temporary, format=image_format, **options)


def _save_options(image_format: str, source: str | Path | None) -> dict:
    from PIL import Image

    options: dict = {}
    if image_format == "JPEG":
        options = {"quality": JPEG_QUALITY, "subsampling": 0}
    elif image_format in LOSSY_FORMATS:
        options = {"quality": LOSSY_QUALITY}
    if source is None or image_format not in ("JPEG", "WEBP", "AVIF", "PNG", "TIFF"):
        return options
    try:
        with Image.open(source) as original:
            icc = original.info.get("icc_profile")
            exif = original.getexif()
            if image_format == "JPEG" and original.format == "JPEG" and getattr(original, "quantization", None):
                from PIL import JpegImagePlugin

                sampling = JpegImagePlugin.get_sampling(original)
                options = {"qtables": original.quantization, "subsampling": sampling if sampling >= 0 else 0}
    except (OSError, ValueError):  # the source was read before; if it is gone now, write without its metadata
        return options
    if icc:
        options["icc_profile"] = icc
    if len(exif):
        if _EXIF_ORIENTATION in exif:
            exif[_EXIF_ORIENTATION] = 1  # the pixels were turned upright when the photo was read
        options["exif"] = exif.tobytes()
    return options


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
    image = to_rgb_uint8(image)
    check_image_size(image.shape[1], image.shape[0], "the portrait")
    if not needs_resize_to_portrait(image.shape[1], image.shape[0]):
        return image
    return from_tensor(resize_portraits(to_tensor([image])))[0]


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """``[B,3,H,W]`` float in 0..1."""
    if len(images) == 0:
        raise ImageInputError("no images: the batch is empty")
    arrays = [to_rgb_uint8(image) for image in images]
    if len({a.shape for a in arrays}) > 1:
        raise ImageInputError(f"images of one batch must have one size, got {sorted({a.shape[:2] for a in arrays})}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def from_tensor(images: torch.Tensor) -> list[np.ndarray]:
    """``HxWx3 uint8`` arrays from ``[B,3,H,W]`` floats in 0..1."""
    if not bool(torch.isfinite(images).all()):
        raise NonFiniteError("the decoded image holds NaN or infinite values (it would save as black); nothing was saved")
    array = (images.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(array)
