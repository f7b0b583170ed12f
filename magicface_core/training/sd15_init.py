"""The starting point of training: SD 1.5's UNet (from :func:`magicface_core.model.sd15.load_sd15`)
as both the ID encoder and the denoiser.

The denoiser's ``conv_in`` grows from 4 to 8 input channels (the new condition channels start at
zero, so it first behaves exactly like SD 1.5) and its AU projection starts at zero.
"""

from __future__ import annotations

import torch

from ..au import NUM_AUS
from ..model.magicface import MagicFace


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
