"""Conversions between ComfyUI's IMAGE/MASK/VAE/CONDITIONING and what the core takes."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..magicface_core import ImageInputError
from ..magicface_core.imaging import check_pixel_batch, needs_resize_to_portrait, resize_portraits, to_rgb_uint8

logger = logging.getLogger(__name__)


def check_batch(images, what: str) -> torch.Tensor:
    """An IMAGE batch ``[B,H,W,C]`` of at least one image, pixels in 0..1 (the core's check)."""
    return check_pixel_batch(images, what)


def to_arrays(images: torch.Tensor, what: str = "the image") -> list[np.ndarray]:
    """IMAGE ``[B,H,W,C]`` floats -> HxWx3 uint8 arrays (the core's rule: gray expanded, alpha on white)."""
    return [to_rgb_uint8(image) for image in check_batch(images, what).detach().float().cpu().numpy()]


def to_image(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).float() / 255.0


def to_mask(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays).astype(np.float32))


def portrait_pixels(images: torch.Tensor, what: str) -> torch.Tensor:
    """IMAGE at 512x512: square images are resized, others need the Face Crop node first."""
    images = check_batch(images, what)
    if images.shape[-1] == 4:  # the core's rule: transparency composited on white
        images = images[..., :3] * images[..., 3:] + (1 - images[..., 3:])
    images = images[..., :3]
    if not needs_resize_to_portrait(images.shape[2], images.shape[1], what):
        return images
    return resize_portraits(images.movedim(-1, 1)).movedim(1, -1)


def vae_encode(vae, pixels: torch.Tensor, what: str) -> torch.Tensor:
    """Unscaled SD 1.5 latents of ``pixels`` with ComfyUI's VAE (what VAEEncode returns)."""
    latents = vae.encode(pixels)
    if latents.ndim != 4 or latents.shape[1] != 4:
        raise ImageInputError(
            f"{what}: this VAE makes latents of shape {tuple(latents.shape[1:])}; MagicFace needs Stable "
            "Diffusion 1.5's VAE (4 channels). Load an SD 1.5 checkpoint or VAE."
        )
    return latents


def text_embeds(conditioning, expected_dim: int) -> torch.Tensor:
    """The CLIP hidden states from CONDITIONING (the prompt should be "A close up of a person.")."""
    if not conditioning:
        raise ImageInputError("the CONDITIONING input is empty; encode \"A close up of a person.\" with SD 1.5's CLIP")
    if len(conditioning) > 1:
        logger.warning("MagicFace uses only the first of %d conditionings", len(conditioning))
    embeds = conditioning[0][0]
    if embeds.ndim != 3 or embeds.shape[-1] != expected_dim:
        raise ImageInputError(
            f"the CONDITIONING has {embeds.shape[-1]} features per token, MagicFace needs {expected_dim} "
            "(Stable Diffusion 1.5's CLIP text encoder). Use the CLIP of an SD 1.5 checkpoint."
        )
    return embeds
