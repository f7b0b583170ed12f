"""FineFace's sampling loop: the authors' StableDiffusionPipeline (diffusers 0.27) up to ``vae.decode``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..au import AUVector
from ..errors import NonFiniteError
from ..model.sd15 import load_scheduler, load_unet
from . import weights
from .attention import install_processors
from .au_token import AUEncoder, au_tokens


class FineFace:
    def __init__(self, unet, encoder: AUEncoder, base: Path):
        self.unet, self.encoder, self.base = unet, encoder, Path(base)

    @classmethod
    def from_pretrained(cls, fineface_dir: str | os.PathLike, base: str | os.PathLike, device="cpu",
                        dtype: torch.dtype = torch.float32, lora_strength: float = 1.0,
                        sd15_variant: bool = False) -> "FineFace":
        """The base UNet (``<base>/unet``) with FineFace's attention weights and LoRA (merged at
        ``lora_strength`` times the trained scale) and the AU encoder."""
        folder = Path(fineface_dir)
        attn_name = weights.SD15_ATTN_PROCESSORS if sd15_variant else weights.ATTN_PROCESSORS
        enc_name = weights.SD15_AU_ENCODER if sd15_variant else weights.AU_ENCODER
        paths = [weights.file_path(folder, attn_name), weights.file_path(folder, enc_name)]
        lora = None if sd15_variant else weights.file_path(folder, weights.LORA)
        unet = load_unet(base, "cpu", torch.float32)
        width = unet.config.cross_attention_dim
        from .checks import check_base_width

        check_base_width(width, sd15_variant, str(base))
        install_processors(unet)
        weights.load_attn_processors(unet, paths[0])
        if lora is not None:
            weights.merge_lora(unet, lora, lora_strength)
        encoder = AUEncoder.for_width(width)
        weights.load_au_encoder(encoder, paths[1])
        if dtype != torch.float32 or str(device) != "cpu":
            unet.to(device=device, dtype=dtype)
        unet.eval().requires_grad_(False)
        encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return cls(unet, encoder, Path(base))

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @torch.no_grad()
    def noise_pred(self, latents, t, text_embeds, au_token, au_scale: float = 1.0) -> torch.Tensor:
        return self.unet(latents.to(self.device, self.dtype), t, encoder_hidden_states=text_embeds.to(self.device, self.dtype),
                         cross_attention_kwargs={"au_embedding": au_token, "au_scale": au_scale}).sample

    @torch.no_grad()
    def sample(self, prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor, aus: AUVector | torch.Tensor,
               steps: int = 50, guidance: float = 7.5, au_scale: float = 1.0, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None, scheduler=None, callback=None) -> torch.Tensor:
        """Scaled latents (as held before ``vae.decode(latents / scaling_factor)``) ``[B, 4, h, w]``."""
        aus = aus if isinstance(aus, AUVector) else AUVector(aus)
        batch = len(aus)
        prompt_embeds = prompt_embeds.to(self.device, self.dtype).expand(batch, -1, -1) if prompt_embeds.shape[0] == 1 else prompt_embeds.to(self.device, self.dtype)
        negative_embeds = negative_embeds.to(self.device, self.dtype).expand(batch, -1, -1) if negative_embeds.shape[0] == 1 else negative_embeds.to(self.device, self.dtype)
        uncond, cond = au_tokens(self.encoder, aus.to_tensor(self.device, self.dtype))
        if noise is None:
            size = self.unet.config.sample_size
            noise = torch.randn(batch, self.unet.config.in_channels, size, size, generator=generator)
        scheduler = scheduler or load_scheduler(self.base)
        scheduler.set_timesteps(steps, device=self.device)
        latents = noise.to(self.device, self.dtype) * scheduler.init_noise_sigma
        cfg = guidance > 1
        text = torch.cat([negative_embeds, prompt_embeds]) if cfg else prompt_embeds
        token = torch.cat([uncond, cond]) if cfg else cond
        for i, t in enumerate(scheduler.timesteps):
            model_in = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
            pred = self.noise_pred(model_in, t, text, token, au_scale)
            if cfg:
                pred_uncond, pred_text = pred.chunk(2)
                pred = pred_uncond + guidance * (pred_text - pred_uncond)
            latents = scheduler.step(pred, t, latents).prev_sample
            if callback is not None:
                callback(i + 1, steps)
        if not bool(torch.isfinite(latents).all()):
            raise NonFiniteError("FineFace's sampling produced NaN or infinite latents; nothing was saved")
        return latents
