"""Stable Diffusion 1.5's VAE and CLIP text encoder, as MagicFace uses them (outside ComfyUI).

MagicFace conditions both UNets on one fixed prompt and works on *unscaled* VAE latents: the
identity and condition images are encoded to the mode of the posterior, and the sampler's
output (already divided by 0.18215) decodes directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import NonFiniteError, WeightsNotFoundError

MAGICFACE_PROMPT = "A close up of a person."


@dataclass
class SD15Parts:
    vae: torch.nn.Module
    tokenizer: object
    text_encoder: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device


def load_sd15(path: str | os.PathLike | None, device: torch.device | str, dtype: torch.dtype) -> SD15Parts:
    """VAE, tokenizer and text encoder from a diffusers SD 1.5 folder (or the hub, when online)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    from ..assets import resolve_sd15

    folder = resolve_sd15(path)
    try:
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise WeightsNotFoundError(
            f"{folder} is not a complete Stable Diffusion 1.5 folder ({exc}). It needs vae/, text_encoder/ and "
            "tokenizer/ as in https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5"
        ) from exc
    for module in (vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    vae.enable_slicing()  # a batch of edits decodes one image at a time: same result, less peak memory
    return SD15Parts(vae, tokenizer, text_encoder)


@torch.no_grad()
def encode_prompt(parts: SD15Parts, prompt: str = MAGICFACE_PROMPT) -> torch.Tensor:
    """CLIP's last hidden states for ``prompt``, padded to 77 tokens: ``[1, 77, D]``."""
    ids = parts.tokenizer(prompt, padding="max_length", max_length=parts.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids
    return parts.text_encoder(ids.to(parts.text_encoder.device))[0]


@torch.no_grad()
def vae_encode(vae: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Unscaled latents (posterior mode) of images ``[B,3,H,W]`` in 0..1."""
    param = next(vae.parameters())
    return vae.encode(images.to(param.device, param.dtype) * 2 - 1).latent_dist.mode()


@torch.no_grad()
def vae_decode(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Images ``[B,3,H,W]`` in 0..1 from unscaled latents."""
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
