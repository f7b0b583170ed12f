"""One expression edit, top to bottom (what the CLI runs; the ComfyUI nodes split it across a graph).

photo -> 512 face crop -> condition image + identity -> VAE latents -> ID features
      -> AU-guided sampling -> latents -> VAE decode -> paste back into the photo
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .au import AUVector
from .errors import SettingsError
from .faces.crop import paste_back
from .faces.toolkit import FaceToolkit, default_toolkit
from .imaging import as_portrait, from_tensor, to_tensor
from .model.identity_attention import IdentityFeatures
from .model.magicface import MagicFace
from .model.sd15 import SD15Parts, encode_prompt, vae_decode, vae_encode
from .settings import EditSettings, check_au_delta, check_face_index

__all__ = ["EditSettings", "edit_photo"]


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
