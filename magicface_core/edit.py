"""One expression edit, top to bottom (what the CLI runs; the ComfyUI nodes split it across a graph).

photo -> 512 face crop -> condition image + identity -> VAE latents -> ID features
      -> AU-guided sampling -> latents -> VAE decode -> paste back into the photo
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .au import AU_NAMES, AUVector
from .devices import DeviceSettings
from .errors import MagicFaceError, SettingsError
from .faces.crop import paste_back
from .faces.toolkit import FaceSettings, FaceToolkit, default_toolkit
from .imaging import as_portrait, check_image_format, from_tensor, load_image, needs_resize_to_portrait, to_tensor
from .model.identity_attention import IdentityFeatures
from .model.magicface import MagicFace
from .model.sd15 import SD15Parts, encode_prompt, vae_decode, vae_encode
from .settings import EditSettings, ModelSettings, as_path, check_au_delta, check_face_index, group, option, require

__all__ = ["EditJob", "EditSettings", "edit_photo"]


def parse_au_delta(au_args: list[str], variants: list[str]) -> AUVector:
    """``--au`` flags (one AU setting) or ``--variant`` flags (one row each), checked."""
    if au_args and variants:
        raise MagicFaceError("use either --au or --variant, not both")
    if variants:
        return check_au_delta(AUVector.cat([AUVector.parse(v) for v in variants]))
    return check_au_delta(AUVector.parse(",".join(au_args)))


def output_paths(out: Path, count: int) -> list[Path]:
    """``out`` for one edit; ``out_0``, ``out_1``, ... for a batch."""
    return [out] if count == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(count)]


@dataclass(frozen=True)
class EditJob:
    """Everything an edit of a photo takes (``python -m magicface_core edit``), checked when made."""

    image: Path | None = option(None, "a 512x512 face crop, or any photo with --crop", required=True)
    condition: Path | None = option(None, "condition image (background + jaw contour); computed from the image "
                                          "when omitted")
    au: list[str] = option(help=f"an AU variation, e.g. AU12=3 (repeatable, or comma-separated); AUs: "
                                f"{' '.join(AU_NAMES)}", repeat=True, metavar="AU=VALUE")
    variant: list[str] = option(help="a whole AU setting such as 'AU12=3,AU6=2'; several --variant give a batch "
                                     "of edits", repeat=True, metavar="SPEC")
    out: Path | None = option(None, "output image (variants get _0, _1, ... suffixes)", required=True)
    model: ModelSettings = group(ModelSettings)
    sampling: EditSettings = group(EditSettings)
    crop: bool = option(False, "find the face in a full photo, edit it and paste it back")
    face_index: int = option(0, "which face with --crop (0 = largest)", min=0)
    offload: bool = option(False, "low GPU memory: keep the UNets on the CPU and move each to the GPU only while "
                                  "it runs")
    overwrite: bool = option(False, "replace output files that already exist")
    device: DeviceSettings = group(DeviceSettings)
    faces: FaceSettings = group(FaceSettings)
    au_delta: AUVector = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        require(self, "image", "out")
        for name in ("image", "condition", "out"):
            object.__setattr__(self, name, as_path(getattr(self, name)))
        object.__setattr__(self, "au_delta", parse_au_delta(self.au, self.variant))
        check_face_index(self.face_index)
        check_image_format(self.out)

    @property
    def outputs(self) -> list[Path]:
        return output_paths(self.out, len(self.au_delta))

    def load_inputs(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The photo and the condition image, refused before any model loads when they cannot be edited
        (a non-square photo needs ``crop``; a condition image is always a square portrait)."""
        photo = load_image(self.image)
        if not self.crop:
            needs_resize_to_portrait(photo.shape[1], photo.shape[0], "the image")
        condition = None
        if self.condition is not None:
            condition = load_image(self.condition)
            needs_resize_to_portrait(condition.shape[1], condition.shape[0], "the condition image")
        return photo, condition


def edit_photo(
    photo: np.ndarray,
    au_delta: AUVector,
    model: MagicFace,
    sd15: SD15Parts,
    faces: FaceToolkit | None = None,
    condition: np.ndarray | None = None,
    crop: bool = False,
    face_index: int = 0,
    settings: EditSettings = EditSettings(),
    on_step: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Edited images (HxWx3 uint8), one per row of ``au_delta``.

    Without ``crop`` the photo must be a portrait framed like the authors' (resized to 512 if
    square). ``condition`` defaults to the background + jaw contour computed from the portrait.
    ``faces`` defaults to :func:`~magicface_core.faces.toolkit.default_toolkit` on the model's device.
    """
    # 0. Every input checked before any network runs.
    au_delta = check_au_delta(au_delta)
    face_index = check_face_index(face_index)
    if not isinstance(settings, EditSettings):
        raise SettingsError(f"settings must be an EditSettings, got {type(settings).__name__}")
    if faces is None and (crop or condition is None):
        faces = default_toolkit(model.device)

    # 1. The 512x512 portrait, and how to put it back into the photo.
    transform = None
    if crop:
        portrait, transform = faces.crop(photo, face_index)
    else:
        portrait = as_portrait(photo)

    # 2. The condition image: background and pose come from the portrait itself.
    if condition is None:
        condition, _ = faces.condition(portrait)
    else:
        condition = as_portrait(condition)

    # 3. Identity features (once for all AU variants) and the fixed prompt's embedding.
    features, text = encode_identity(model, sd15, portrait)

    # 4. Unscaled VAE latents of the condition.
    cond_latents = encode_images(sd15, [condition])

    # 5. AU-guided sampling.
    callback = None if on_step is None else (lambda i, n, _latents: on_step(i, n))
    latents = model.sample(features, cond_latents, au_delta, text, steps=settings.steps, guidance=settings.guidance,
                           sampler=settings.sampler, seed=settings.seed, callback=callback)

    # 6. Decode, and 7. paste back into the full photo.
    edited = decode_images(sd15, latents)
    if transform is not None:
        edited = [paste_back(photo, image, transform) for image in edited]
    return edited


# --- the steps, shared with the video edits (magicface_core.video) ---------------------------

def encode_images(sd15: SD15Parts, images: list[np.ndarray]) -> torch.Tensor:
    """Unscaled VAE latents (posterior mode) of 512x512 HxWx3 uint8 images."""
    return vae_encode(sd15.vae, to_tensor(images))


def encode_identity(model: MagicFace, sd15: SD15Parts, portrait: np.ndarray) -> tuple[IdentityFeatures, torch.Tensor]:
    """The ID encoder's features of a 512 portrait, and the fixed prompt's embedding they were made with."""
    text = encode_prompt(sd15)
    return model.encode_identity(encode_images(sd15, [portrait]), text), text


def decode_images(sd15: SD15Parts, latents: torch.Tensor) -> list[np.ndarray]:
    return from_tensor(vae_decode(sd15.vae, latents))
