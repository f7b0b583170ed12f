"""FineFace end to end: prompt + AUs -> images, with the text encoder and VAE of the same base folder.

prompt -> CLIP embeddings (prompt, negative) -> FineFace.sample (AU tokens, PNDM, CFG) -> latents
-> VAE decode (latents / scaling_factor) -> images in 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..au import AUVector
from ..devices import DeviceSettings
from ..imaging import check_image_format
from ..model.sd15 import SD15Parts, encode_prompt, vae_decode
from ..settings import MAX_SEED, as_path, check_guidance, check_limits, check_seed, check_steps, group, option, require
from .checks import check_aus, check_scale
from .pipeline import FineFace

DEFAULT_STEPS, DEFAULT_GUIDANCE = 50, 7.5  # the authors' pipeline defaults
PNDM_MAX_STEPS = 1000  # one step per training timestep
SCALE_LIMIT = 10.0
MAX_BATCH = 64


@dataclass(frozen=True)
class GenerateSettings:
    """Every setting of a FineFace generation, checked when made (before anything loads)."""

    steps: int = option(DEFAULT_STEPS, "PNDM sampling steps", min=1, max=PNDM_MAX_STEPS)
    guidance: float = option(DEFAULT_GUIDANCE, "text guidance (the authors use 7.5)")
    au_scale: float = option(1.0, "weight of the AU term", min=-SCALE_LIMIT, max=SCALE_LIMIT)
    lora_strength: float = option(1.0, "1.0 = the trained scale; 0 = the authors' pinned code; 4.0 = diffusers >= 0.29",
                                  min=-SCALE_LIMIT, max=SCALE_LIMIT)
    seed: int | None = option(0, "the start noise", min=0, max=MAX_SEED)

    def __post_init__(self):
        object.__setattr__(self, "steps", check_steps(self.steps, "PNDM", limit=PNDM_MAX_STEPS))
        object.__setattr__(self, "guidance", check_guidance(self.guidance))
        object.__setattr__(self, "au_scale", check_scale(self.au_scale, "au_scale", SCALE_LIMIT))
        object.__setattr__(self, "lora_strength", check_scale(self.lora_strength, "lora_strength", SCALE_LIMIT))
        object.__setattr__(self, "seed", check_seed(self.seed))


@dataclass(frozen=True)
class GenerateJob:
    """Everything a FineFace generation takes (``python -m magicface_core generate``), checked when made."""

    prompt: str | None = option(None, "what to draw", required=True)
    negative_prompt: str = option("", "what to steer away from")
    au: list[str] = option(help="an absolute AU intensity 0..5, e.g. AU12=4 (repeatable, or comma-separated)",
                           repeat=True, metavar="AU=VALUE")
    base: str | None = option(None, "Stable Diffusion 2.1-base diffusers folder (unet/, scheduler/, vae/, "
                                    "text_encoder/, tokenizer/)", required=True)
    fineface_weights: str = option("Tvaranka/fineface", "folder with FineFace's three files, or the hub id "
                                                        "(downloaded on first use)")
    settings: GenerateSettings = group(GenerateSettings)
    batch: int = option(1, "images from one seed: out_0, out_1, ...", min=1, max=MAX_BATCH)
    out: Path | None = option(None, "the image (a batch: out_0, out_1, ...)", required=True)
    overwrite: bool = option(False, "replace --out if it exists")
    device: DeviceSettings = group(DeviceSettings)
    aus: AUVector = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        require(self, "prompt", "base", "out")
        object.__setattr__(self, "out", as_path(self.out))
        check_limits(self, flag_style=True)
        object.__setattr__(self, "aus", check_aus(AUVector.cat([AUVector.parse(",".join(self.au))] * self.batch)))
        check_image_format(self.out)


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
