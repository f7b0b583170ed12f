"""The pack's own sampling nodes: encode the identity once, then sample edits guided by AU variations."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..magicface_core import SAMPLER_NAMES, AUVector
from ..magicface_core.batching import ChunkProgress, batch_size, chunks, pick_noise, rows, start_noise
from ..magicface_core.settings import EditSettings, check_au_delta, default_of
from ..magicface_core.video.edit import VideoSettings
from . import host
from .images import portrait_pixels, text_embeds, vae_encode
from .loaded_model import LoadedMagicFace
from .schema import AUDelta, Identity, MagicFaceModel, schema

FRAMES_PER_CHUNK = default_of(VideoSettings, "frames_per_chunk")  # the CLI's video and animate default too
PROMPT_TIP = 'SD 1.5 CLIP encoding of "A close up of a person." (the prompt MagicFace was trained with)'


class MagicFaceIDEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceIDEncoder", "MagicFace ID Encoder",
                      "Runs MagicFace's ID encoder once on the portrait; its features keep identity and details.", [
                          MagicFaceModel.Input("magicface_model"),
                          io.Image.Input("image", tooltip="the 512x512 portrait to edit"),
                          io.Vae.Input("vae", tooltip="Stable Diffusion 1.5's VAE"),
                          io.Conditioning.Input("conditioning", tooltip=PROMPT_TIP),
                      ], [Identity.Output(display_name="identity")])

    @classmethod
    def execute(cls, magicface_model: LoadedMagicFace, image, vae, conditioning):
        latents = vae_encode(vae, portrait_pixels(image, "the identity image"), "the identity image")
        text = text_embeds(conditioning, magicface_model.text_dim)
        features = magicface_model.encode_identity(latents, text)
        return io.NodeOutput(features.to(host.intermediate_device()))


class MagicFaceKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceKSampler", "MagicFace KSampler",
                      "Samples the edited portrait(s): one per AU variation, all from one identity. "
                      "Decode the LATENT with VAE Decode.", [
                          MagicFaceModel.Input("magicface_model"),
                          Identity.Input("identity"),
                          io.Image.Input("condition", tooltip="background + jaw contour (MagicFace Face Parse + Contour)"),
                          io.Vae.Input("vae"),
                          AUDelta.Input("au_delta"),
                          io.Conditioning.Input("conditioning", tooltip=PROMPT_TIP),
                          io.Int.Input("seed", default=default_of(EditSettings, "seed"), min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                          io.Int.Input("steps", default=default_of(EditSettings, "steps"), min=1, max=200, tooltip=(
                              "the authors use 50 UniPC steps; dpmpp_2m_karras does well with 20-25")),
                          io.Float.Input("au_guidance", default=default_of(EditSettings, "guidance"), min=0.0, max=10.0, step=0.1, tooltip=(
                              "guidance on the AUs only; the paper finds 1.5-3.5 best, 4.5 and more shifts colours")),
                          io.Combo.Input("sampler", options=list(SAMPLER_NAMES), default=default_of(EditSettings, "sampler")),
                          io.Boolean.Input("noise_per_edit", default=False, optional=True, tooltip=(
                              "off: every edit of the batch starts from the same noise, so they differ only by "
                              "their AUs")),
                          io.Int.Input("frames_per_chunk", default=FRAMES_PER_CHUNK, min=1, max=4096, optional=True, tooltip=(
                              "edits sampled together; a long clip is sampled this many frames at a time, so "
                              "memory does not grow with its length")),
                      ], [io.Latent.Output()])

    @classmethod
    def execute(cls, magicface_model: LoadedMagicFace, identity, condition, vae, au_delta: AUVector, conditioning,
                seed: int, steps: int, au_guidance: float, sampler: str, noise_per_edit: bool = False,
                frames_per_chunk: int = FRAMES_PER_CHUNK):
        EditSettings(steps=steps, guidance=au_guidance, seed=seed, sampler=sampler)  # before any model loads
        au_delta = check_au_delta(au_delta)
        condition = portrait_pixels(condition, "the condition image")
        text = text_embeds(conditioning, magicface_model.text_dim)
        batch = batch_size({"AU variations": len(au_delta), "condition images": condition.shape[0],
                            "identities": identity.batch_size})
        progress = ChunkProgress(batch, steps, host.sampling_callback(batch * steps))  # previews and Cancel
        noise = start_noise(seed, batch, noise_per_edit)
        out = []
        for index in chunks(batch, frames_per_chunk):
            cond_latents = vae_encode(vae, rows(condition, index), "the condition image")
            ids = identity if identity.batch_size == 1 else identity.select(index)
            latents = magicface_model.sample(ids, cond_latents, rows(au_delta, index), text, steps=steps,
                                             guidance=au_guidance, sampler=sampler, noise=pick_noise(noise, index),
                                             seed=seed, callback=progress.for_chunk(index.stop - index.start))
            out.append(latents.to(host.intermediate_device()))
        return io.NodeOutput({"samples": torch.cat(out)})
