"""MagicFace as a ComfyUI MODEL: the edit done by the stock KSampler / SamplerCustomAdvanced.

MagicFace Identity MODEL patches the identity into the denoiser; MagicFace Edit Conditioning
puts the condition image and the AU rows into positive (the AUs) and negative (zero AUs)
conditioning. KSampler's ``cfg`` is then MagicFace's AU guidance.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..magicface_core import AUVector, ImageInputError
from ..magicface_core.batching import batch_size
from . import host
from .images import portrait_pixels, vae_encode
from .loaded_model import LoadedMagicFace
from .schema import AUDelta, Identity, MagicFaceModel, schema
from .types import AU_KEY


class MagicFaceIdentityModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceIdentityModel", "MagicFace Identity MODEL", (
            "MagicFace's denoiser as a MODEL that keeps this identity, for KSampler, KSampler (Advanced) or "
            "SamplerCustomAdvanced with any sampler and scheduler. Feed it MagicFace Edit Conditioning."), [
            MagicFaceModel.Input("magicface_model"),
            Identity.Input("identity", tooltip="from MagicFace ID Encoder"),
        ], [io.Model.Output(display_name="model")])

    @classmethod
    def execute(cls, magicface_model: LoadedMagicFace, identity):
        return io.NodeOutput(magicface_model.identity_model(identity))


class MagicFaceEditConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceEditConditioning", "MagicFace Edit Conditioning", (
            "Positive (the AU variations) and negative (no AU change) conditioning for the MagicFace MODEL, and an "
            "empty latent with one image per edit. Sample with KSampler: cfg is the AU guidance (the paper: "
            "1.5-3.5), denoise 1.0."), [
            io.Conditioning.Input("conditioning", tooltip='SD 1.5 CLIP encoding of "A close up of a person."'),
            io.Image.Input("condition", tooltip="background + jaw contour (MagicFace Face Parse + Contour)"),
            io.Vae.Input("vae"),
            AUDelta.Input("au_delta"),
        ], [io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
            io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, conditioning, condition, vae, au_delta: AUVector):
        if not conditioning:
            raise ImageInputError('the CONDITIONING input is empty; encode "A close up of a person." with SD 1.5\'s CLIP')
        cond_latents = vae_encode(vae, portrait_pixels(condition, "the condition image"), "the condition image")
        au = au_delta.to_tensor().float()
        batch = batch_size({"AU variations": au.shape[0], "condition images": cond_latents.shape[0]})
        positive = [[text, {**extra, "concat_latent_image": cond_latents, AU_KEY: au}] for text, extra in conditioning]
        negative = [[text, {**extra, "concat_latent_image": cond_latents, AU_KEY: torch.zeros_like(au)}]
                    for text, extra in conditioning]
        latent = torch.zeros(batch, 4, *cond_latents.shape[2:], device=host.intermediate_device())
        return io.NodeOutput(positive, negative, {"samples": latent})
