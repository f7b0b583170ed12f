"""Sampling nodes: encode the identity once, then sample edits guided by AU variations."""

from __future__ import annotations

import torch

from ..magicface_core import SAMPLER_NAMES, AUVector, ImageInputError
from ..magicface_core.imaging import PORTRAIT_SIZE
from ..magicface_core.settings import EditSettings, check_au_delta
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
                "frames_per_chunk": ("INT", {"default": 16, "min": 1, "max": 4096, "tooltip":
                                     "edits sampled together; a long clip is sampled this many frames at a "
                                     "time, so memory does not grow with its length"}),
            },
        }

    def sample(self, magicface_model: LoadedMagicFace, identity, condition, vae, au_delta: AUVector, conditioning,
               seed: int, steps: int, au_guidance: float, sampler: str, noise_per_edit: bool = False,
               frames_per_chunk: int = 16):
        EditSettings(steps=steps, guidance=au_guidance, seed=seed, sampler=sampler)  # before any model loads
        au_delta = check_au_delta(au_delta)
        text = text_embeds(conditioning, magicface_model.text_dim)
        batch = max(len(au_delta), condition.shape[0], identity.batch_size)
        for name, size in (("AU variations", len(au_delta)), ("condition images", condition.shape[0]),
                           ("identities", identity.batch_size)):
            if size not in (1, batch):
                raise ImageInputError(f"{size} {name} for a batch of {batch}; give 1 or {batch}")
        progress = host.sampling_callback(batch * steps)  # frames x steps, with live previews and Cancel
        noise = _start_noise(seed, batch, noise_per_edit)
        chunks = []
        for start in range(0, batch, frames_per_chunk):
            rows = slice(start, min(batch, start + frames_per_chunk))
            count = rows.stop - rows.start
            cond = condition if condition.shape[0] == 1 else condition[rows]
            cond_latents = vae_encode(vae, portrait_pixels(cond, "the condition image"), "the condition image")

            def step(i: int, n: int, denoised, done=start * steps, count=count) -> None:
                progress(done + i * count, batch * steps, denoised)

            latents = magicface_model.sample(
                identity if identity.batch_size == 1 else identity.select(rows), cond_latents,
                au_delta if len(au_delta) == 1 else au_delta[rows], text, steps=steps, guidance=au_guidance,
                sampler=sampler, noise=None if noise is None else noise[rows] if len(noise) > 1 else noise,
                seed=seed, callback=step,
            )
            chunks.append(latents.to(host.intermediate_device()))
        return ({"samples": torch.cat(chunks)},)


def _start_noise(seed: int, batch: int, per_edit: bool) -> torch.Tensor | None:
    """Per-edit noise must not depend on the chunking: draw the whole batch's at once (latent 64x64)."""
    if not per_edit or batch == 1:
        return None  # the sampler draws one noise from the seed, shared by every edit
    generator = torch.Generator("cpu").manual_seed(int(seed) % (2**64))
    size = PORTRAIT_SIZE // 8  # SD 1.5's VAE: 512 pixels -> 64 latents
    return torch.randn((batch, 4, size, size), generator=generator)
