"""Sampling nodes: encode the identity once, then sample edits guided by AU variations."""

from __future__ import annotations

from ..magicface_core import SAMPLER_NAMES, AUVector
from . import host
from .images import portrait_pixels, text_embeds, vae_encode
from .types import AU_DELTA, CATEGORY, MAGICFACE_ID, MAGICFACE_MODEL, LoadedMagicFace

PROMPT_TIP = 'SD 1.5 CLIP encoding of "A close up of a person." (the prompt MagicFace was trained with)'


class MagicFaceIDEncoder:
    DESCRIPTION = "Runs MagicFace's ID encoder once on the portrait; its features keep identity and details."
    CATEGORY = CATEGORY
    RETURN_TYPES = (MAGICFACE_ID,)
    RETURN_NAMES = ("identity",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "magicface_model": (MAGICFACE_MODEL,),
            "image": ("IMAGE", {"tooltip": "the 512x512 portrait to edit"}),
            "vae": ("VAE", {"tooltip": "Stable Diffusion 1.5's VAE"}),
            "conditioning": ("CONDITIONING", {"tooltip": PROMPT_TIP}),
        }}

    def encode(self, magicface_model: LoadedMagicFace, image, vae, conditioning):
        latents = vae_encode(vae, portrait_pixels(image, "the identity image"), "the identity image")
        text = text_embeds(conditioning, magicface_model.text_dim)
        features = host.encode_identity(magicface_model, latents, text)
        return (features.to(host.intermediate_device()),)


class MagicFaceKSampler:
    DESCRIPTION = ("Samples the edited portrait(s): one per AU variation, all from one identity. "
                   "Decode the LATENT with VAE Decode.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "magicface_model": (MAGICFACE_MODEL,),
                "identity": (MAGICFACE_ID,),
                "condition": ("IMAGE", {"tooltip": "background + jaw contour (MagicFace Face Parse + Contour)"}),
                "vae": ("VAE",),
                "au_delta": (AU_DELTA,),
                "conditioning": ("CONDITIONING", {"tooltip": PROMPT_TIP}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 200,
                                  "tooltip": "the authors use 50 UniPC steps; dpmpp_2m_karras does well with 20-25"}),
                "au_guidance": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                          "tooltip": "guidance on the AUs only; the paper finds 1.5-3.5 best, "
                                                     "4.5 and more shifts colours"}),
                "sampler": (list(SAMPLER_NAMES), {"default": "uni_pc"}),
            },
            "optional": {
                "noise_per_edit": ("BOOLEAN", {"default": False, "tooltip":
                                   "off: every edit of the batch starts from the same noise, so they differ "
                                   "only by their AUs"}),
            },
        }

    def sample(self, magicface_model: LoadedMagicFace, identity, condition, vae, au_delta: AUVector, conditioning,
               seed: int, steps: int, au_guidance: float, sampler: str, noise_per_edit: bool = False):
        cond_latents = vae_encode(vae, portrait_pixels(condition, "the condition image"), "the condition image")
        text = text_embeds(conditioning, magicface_model.text_dim)
        magicface_model.denoiser.load()
        latents = magicface_model.model.sample(
            identity, cond_latents, au_delta, text, steps=steps, guidance=au_guidance, sampler=sampler,
            seed=seed, callback=host.sampling_callback(steps), per_item_noise=noise_per_edit,
        )
        return ({"samples": latents.to(host.intermediate_device())},)
