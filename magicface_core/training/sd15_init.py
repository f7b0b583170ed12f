"""The starting point of training: SD 1.5's UNet as both the ID encoder and the denoiser.

The denoiser's ``conv_in`` grows from 4 to 8 input channels (the new condition channels start at
zero, so it first behaves exactly like SD 1.5) and its AU projection starts at zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..au import NUM_AUS
from ..errors import WeightsNotFoundError
from ..model.magicface import MagicFace


@dataclass
class SD15Training:
    unet: torch.nn.Module
    vae: torch.nn.Module
    tokenizer: object
    text_encoder: torch.nn.Module


def load_sd15_for_training(source: str | os.PathLike) -> SD15Training:
    """UNet, VAE, tokenizer and text encoder from a diffusers folder, a single-file checkpoint or the hub."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(source)
    if path.is_file():
        from diffusers import StableDiffusionPipeline

        try:  # the file holds the weights; diffusers supplies the SD 1.5 configs (cached, or from the hub)
            pipe = StableDiffusionPipeline.from_single_file(str(path), safety_checker=None)
        except Exception as exc:
            raise WeightsNotFoundError(
                f"could not read {path} as a Stable Diffusion 1.5 checkpoint ({exc}). Offline, use a diffusers "
                "folder (unet/, vae/, text_encoder/, tokenizer/) instead."
            ) from exc
        return SD15Training(pipe.unet, pipe.vae, pipe.tokenizer, pipe.text_encoder)
    if not path.is_dir():
        from ..assets import SD15_PATTERNS, local_folder, snapshot

        patterns = SD15_PATTERNS + ["unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
        path = snapshot(str(source), patterns, local_folder(str(source)), 4.3,
                        "Stable Diffusion 1.5 (UNet, VAE, text encoder)")
    return SD15Training(
        UNet2DConditionModel.from_pretrained(path, subfolder="unet"),
        AutoencoderKL.from_pretrained(path, subfolder="vae"),
        CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
        CLIPTextModel.from_pretrained(path, subfolder="text_encoder"),
    )


def magicface_from_sd15(unet: torch.nn.Module) -> MagicFace:
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    state = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    id_encoder = UNet2DConditionModel.from_config(config)
    id_encoder.load_state_dict(state, strict=True)

    denoiser = UNet2DConditionModel.from_config({
        **config, "in_channels": 2 * config["in_channels"],
        "class_embed_type": "simple_projection", "projection_class_embeddings_input_dim": NUM_AUS,
    })
    conv_in = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([conv_in, torch.zeros_like(conv_in)], dim=1)
    embedding = denoiser.class_embedding
    state["class_embedding.weight"] = torch.zeros_like(embedding.weight)
    state["class_embedding.bias"] = torch.zeros_like(embedding.bias)
    denoiser.load_state_dict(state, strict=True)
    return MagicFace(denoiser, id_encoder)
