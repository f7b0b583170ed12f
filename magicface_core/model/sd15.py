"""Stable Diffusion 1.5's parts as MagicFace uses them outside ComfyUI, and its latent conventions.

One loader serves inference (VAE, tokenizer, text encoder) and training (the same, plus the
UNet both of MagicFace's UNets start from). One pair of helpers moves between images and
latents. MagicFace conditions both UNets on one fixed prompt and works on *unscaled* VAE
latents: the identity and condition images are encoded to the mode of the posterior, and the
sampler's output (already divided by 0.18215) decodes directly.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError, NonFiniteError, WeightsNotFoundError

MAGICFACE_PROMPT = "A close up of a person."


@dataclass
class SD15Parts:
    vae: torch.nn.Module
    tokenizer: object
    text_encoder: torch.nn.Module
    unet: torch.nn.Module | None = None  # loaded for training only

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device


def load_sd15(source: str | os.PathLike | None, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32, with_unet: bool = False) -> SD15Parts:
    """SD 1.5 from a diffusers folder, a single-file checkpoint, or a hub repo id (default: SD 1.5).

    The VAE and text encoder go to ``device``/``dtype``, frozen; the UNet (``with_unet``) stays
    on the CPU in fp32, as training's starting point.
    """
    path = Path(source).expanduser() if source is not None else None
    if path is not None and path.is_file():
        parts = _from_single_file(path)
    else:
        parts = _from_folder(source, with_unet)
    if not with_unet:
        parts.unet = None
    for module in (parts.vae, parts.text_encoder):
        torch.nn.Module.to(module, device=device, dtype=dtype)
        module.eval().requires_grad_(False)
    parts.vae.enable_slicing()  # a batch decodes one image at a time: same result, less peak memory
    return parts


def _from_folder(source, with_unet: bool) -> SD15Parts:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from ..assets import SD15_REPO, resolve_sd15

    folder = resolve_sd15(source, with_unet)
    try:
        return SD15Parts(
            AutoencoderKL.from_pretrained(folder, subfolder="vae"),
            CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
            UNet2DConditionModel.from_pretrained(folder, subfolder="unet") if with_unet else None,
        )
    except pickle.UnpicklingError as exc:  # transformers/diffusers read .bin files weights-only
        raise CheckpointError(
            f"{folder} holds a .bin weights file that is more than plain tensors, so it was not loaded (it could "
            f"run code: {str(exc).splitlines()[0]}). Download the folder again, keeping its .safetensors files."
        ) from exc
    except (OSError, ValueError) as exc:
        needs = "unet/, vae/, text_encoder/ and tokenizer/" if with_unet else "vae/, text_encoder/ and tokenizer/"
        raise WeightsNotFoundError(
            f"{folder} is not a complete Stable Diffusion 1.5 folder ({exc}). It needs {needs} as in "
            f"https://huggingface.co/{SD15_REPO}"
        ) from exc


def _from_single_file(path: Path) -> SD15Parts:
    from diffusers import StableDiffusionPipeline

    from ..assets import offline

    try:  # the file holds the weights; diffusers supplies the SD 1.5 configs (cached, or from the hub)
        pipe = StableDiffusionPipeline.from_single_file(str(path), safety_checker=None, local_files_only=offline())
    except Exception as exc:
        raise WeightsNotFoundError(
            f"could not read {path} as a Stable Diffusion 1.5 checkpoint ({exc}). Offline, use a diffusers "
            "folder (unet/, vae/, text_encoder/, tokenizer/) instead."
        ) from exc
    return SD15Parts(pipe.vae, pipe.tokenizer, pipe.text_encoder, pipe.unet)


@torch.no_grad()
def encode_prompt(parts: SD15Parts, prompt: str = MAGICFACE_PROMPT) -> torch.Tensor:
    """CLIP's last hidden states for ``prompt``, padded to 77 tokens: ``[1, 77, D]``."""
    ids = parts.tokenizer(prompt, padding="max_length", max_length=parts.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids
    return parts.text_encoder(ids.to(parts.text_encoder.device))[0]


@torch.no_grad()
def vae_encode(vae: torch.nn.Module, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unscaled latents of images ``[B,3,H,W]`` in 0..1: the posterior's mode, or a sample drawn
    with ``generator`` (training's targets)."""
    param = next(vae.parameters())
    posterior = vae.encode(images.to(param.device, param.dtype) * 2 - 1).latent_dist
    return posterior.mode() if generator is None else posterior.sample(generator=generator)


@torch.no_grad()
def vae_decode(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Images ``[B,3,H,W]`` in 0..1 (fp32) from unscaled latents."""
    param = next(vae.parameters())
    images = vae.decode(latents.to(param.device, param.dtype)).sample
    if not bool(torch.isfinite(images).all()):
        raise NonFiniteError(
            "the VAE decoded NaN or infinite pixels; nothing was saved. "
            + ("SD 1.5's VAE overflows in float16: load it in bf16 or fp32 (--dtype). " if param.dtype == torch.float16 else "")
            + ("The latents were finite, so the VAE weights may be damaged." if bool(torch.isfinite(latents).all())
               else "The latents already held NaN or infinity.")
        )
    return (images.float() / 2 + 0.5).clamp(0, 1)


def load_unet(folder: str | os.PathLike, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The ``unet/`` of any Stable Diffusion diffusers folder (1.5, 2.x), frozen, on ``device``/``dtype``."""
    from diffusers import UNet2DConditionModel

    try:
        unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet")
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{folder}/unet holds a .bin file that is more than plain tensors ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise WeightsNotFoundError(f"{folder} has no readable unet/ folder ({exc})") from exc
    return unet.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_scheduler(folder: str | os.PathLike):
    """A fresh scheduler from ``<folder>/scheduler`` (its own class: PNDM for SD 1.5 and 2.1-base)."""
    import json

    import diffusers

    config_path = Path(folder) / "scheduler" / "scheduler_config.json"
    try:
        config = json.loads(config_path.read_text())
        cls = getattr(diffusers, config.get("_class_name", "PNDMScheduler"))
    except (OSError, ValueError, AttributeError) as exc:
        raise WeightsNotFoundError(f"{config_path} is not a readable diffusers scheduler config ({exc})") from exc
    return cls.from_config(config)
