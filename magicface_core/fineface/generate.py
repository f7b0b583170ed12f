"""FineFace end to end: prompt + AUs -> images, with the text encoder and VAE of the same base folder.

prompt -> CLIP embeddings (prompt, negative) -> FineFace.sample (AU tokens, PNDM, CFG) -> latents
-> VAE decode (latents / scaling_factor) -> images in 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..au import AUVector
from ..model.sd15 import SD15Parts, encode_prompt, vae_decode
from ..settings import check_guidance, check_seed, check_steps
from .checks import check_aus, check_scale
from .pipeline import FineFace

DEFAULT_STEPS, DEFAULT_GUIDANCE = 50, 7.5  # the authors' pipeline defaults


@dataclass(frozen=True)
class GenerateSettings:
    """Every setting of a FineFace generation, checked when made (before anything loads)."""

    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    au_scale: float = 1.0
    lora_strength: float = 1.0
    seed: int | None = 0

    def __post_init__(self):
        object.__setattr__(self, "steps", check_steps(self.steps, "PNDM", limit=1000))
        object.__setattr__(self, "guidance", check_guidance(self.guidance))
        object.__setattr__(self, "au_scale", check_scale(self.au_scale, "au_scale", 10.0))
        object.__setattr__(self, "lora_strength", check_scale(self.lora_strength, "lora_strength", 10.0))
        object.__setattr__(self, "seed", check_seed(self.seed))


@torch.no_grad()
def generate(model: FineFace, parts: SD15Parts, prompt: str, aus: AUVector, negative_prompt: str = "",
             settings: GenerateSettings = GenerateSettings(), on_step=None) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` in 0..1, one per AU row; the start noise comes from ``settings.seed``."""
    aus = check_aus(aus)
    prompt_embeds = encode_prompt(parts, prompt)
    negative_embeds = encode_prompt(parts, negative_prompt)
    config = model.unet.config
    generator = torch.Generator().manual_seed(settings.seed if settings.seed is not None else torch.seed())
    noise = torch.randn(len(aus), config.in_channels, config.sample_size, config.sample_size, generator=generator)
    latents = model.sample(prompt_embeds, negative_embeds, aus, steps=settings.steps, guidance=settings.guidance,
                           au_scale=settings.au_scale, noise=noise, callback=on_step)
    return vae_decode(parts.vae, latents / parts.vae.config.scaling_factor)
