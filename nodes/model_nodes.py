"""MagicFace as a ComfyUI MODEL: the edit done by the stock KSampler / SamplerCustomAdvanced.

MagicFace Identity MODEL patches the identity into the denoiser; MagicFace Edit Conditioning
puts the condition image and the AU rows into positive (the AUs) and negative (zero AUs)
conditioning. KSampler's ``cfg`` is then MagicFace's AU guidance.
"""

from __future__ import annotations

import torch

from ..magicface_core import AUVector, ImageInputError
from . import host
from .images import portrait_pixels, vae_encode
from .types import AU_DELTA, AU_KEY, CATEGORY, MAGICFACE_ID, MAGICFACE_MODEL, LoadedMagicFace


class MagicFaceIdentityModel:
    DESCRIPTION = ("MagicFace's denoiser as a MODEL that keeps this identity, for KSampler, KSampler (Advanced) "
                   "or SamplerCustomAdvanced with any sampler and scheduler. Feed it MagicFace Edit Conditioning.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "magicface_model": (MAGICFACE_MODEL,),
            "identity": (MAGICFACE_ID, {"tooltip": "from MagicFace ID Encoder"}),
        }}

    def apply(self, magicface_model: LoadedMagicFace, identity):
        return (host.identity_model(magicface_model, identity),)


class MagicFaceEditConditioning:
    DESCRIPTION = ("Positive (the AU variations) and negative (no AU change) conditioning for the MagicFace MODEL, "
                   "and an empty latent with one image per edit. Sample with KSampler: cfg is the AU guidance "
                   "(the paper: 1.5-3.5), denoise 1.0.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "conditioning": ("CONDITIONING", {"tooltip": 'SD 1.5 CLIP encoding of "A close up of a person."'}),
            "condition": ("IMAGE", {"tooltip": "background + jaw contour (MagicFace Face Parse + Contour)"}),
            "vae": ("VAE",),
            "au_delta": (AU_DELTA,),
        }}

    def encode(self, conditioning, condition, vae, au_delta: AUVector):
        if not conditioning:
            raise ImageInputError('the CONDITIONING input is empty; encode "A close up of a person." with SD 1.5\'s CLIP')
        cond_latents = vae_encode(vae, portrait_pixels(condition, "the condition image"), "the condition image")
        au = au_delta.to_tensor().float()
        batch = max(au.shape[0], cond_latents.shape[0])
        if {au.shape[0], cond_latents.shape[0]} - {1, batch}:
            raise ImageInputError(f"{au.shape[0]} AU variations and {cond_latents.shape[0]} condition images: "
                                  f"give one condition image or one per variation")
        positive = [[text, {**extra, "concat_latent_image": cond_latents, AU_KEY: au}] for text, extra in conditioning]
        negative = [[text, {**extra, "concat_latent_image": cond_latents, AU_KEY: torch.zeros_like(au)}]
                    for text, extra in conditioning]
        latent = torch.zeros(batch, 4, *cond_latents.shape[2:], device=host.intermediate_device())
        return (positive, negative, {"samples": latent})
