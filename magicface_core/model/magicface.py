"""The MagicFace model: ID encoder + AU-conditioned denoiser, and the AU-guided sampler.

Latent conventions (as the authors'): identity and condition latents are the VAE's *unscaled*
latents (the mode of the posterior, what ComfyUI's VAEEncode returns); the noisy latent lives in
the usual scaled space; :meth:`MagicFace.sample` returns ``final / 0.18215``, ready to decode.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import checkpoint
from .. import devices
from ..au import AUVector
from ..batching import batch_size
from ..errors import ImageInputError, NonFiniteError
from .identity_attention import IdentityFeatures, IdentityInjection, IdentityRecorder
from .schedulers import denoised_estimate, make_scheduler
from ..settings import as_path, check_au_delta, check_guidance, check_seed, check_steps, option, require

logger = logging.getLogger(__name__)

LATENT_SCALE = 0.18215  # SD 1.5's VAE scaling factor
ID_ENCODER_TIMESTEP = 0  # the ID encoder sees the clean identity latent

StepCallback = Callable[[int, int, torch.Tensor], None]
# One denoiser call: (latents + condition [B,8,h,w] in the model's dtype, timestep, text, AU rows) -> noise.
Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# Given the edit's identity, the denoiser that sees it (a host's own UNet, e.g. ComfyUI's under its
# memory management); made once per sampling call, inside the denoiser's placement.
DenoiserFor = Callable[[IdentityFeatures], Denoise]
# Latents are checked for NaN/inf every this many steps and after the last (0: only after the
# last): one reduction and one device sync per check, nothing next to a UNet step.
NONFINITE_CHECK_EVERY = 10


class MagicFace:
    """Both UNets of MagicFace, patched for identity injection.

    ``denoiser`` and ``id_encoder`` are stock :class:`diffusers.UNet2DConditionModel` instances:
    the AU projection is the denoiser's ``simple_projection`` class embedding, and identity
    injection is an attention processor on each self-attention.
    """

    def __init__(self, denoiser: torch.nn.Module, id_encoder: torch.nn.Module,
                 device: torch.device | str = "cpu"):
        """``device``: where the computation runs (the UNets are expected there, see :meth:`to`)."""
        self.denoiser = denoiser
        self.id_encoder = id_encoder
        self.injection = IdentityInjection(denoiser)
        self.recorder = IdentityRecorder(id_encoder)
        self._device = torch.device(device)
        self._offload = False  # enable_model_offload: each UNet visits the device only while it runs
        self._denoise = denoiser  # what the sampling loop calls: the denoiser, or its compiled form

    # --- loading and saving -----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: torch.device | str | None = None,
                        dtype: torch.dtype | str | None = None) -> "MagicFace":
        """Load a published-layout folder, one of our single files, or the hub repo id.

        ``device`` defaults to the GPU when there is one; ``dtype`` to half precision on a GPU
        (bf16 where supported) and fp32 on the CPU.
        """
        from ..assets import resolve_magicface_weights

        device, dtype = devices.resolve(device, dtype)
        parts = checkpoint.read_checkpoint(resolve_magicface_weights(path))
        return cls(
            checkpoint.build_unet(checkpoint.DENOISER, parts[checkpoint.DENOISER], dtype, device),
            checkpoint.build_unet(checkpoint.ID_ENCODER, parts[checkpoint.ID_ENCODER], dtype, device),
            device,
        )

    def checkpoint_parts(self, dtype: torch.dtype | None = None) -> dict[str, checkpoint.UNetCheckpoint]:
        parts = {}
        for part, model in ((checkpoint.DENOISER, self.denoiser), (checkpoint.ID_ENCODER, self.id_encoder)):
            state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
                     for k, v in model.state_dict().items()}
            parts[part] = checkpoint.UNetCheckpoint(
                checkpoint.published_config(part, model.config), checkpoint.to_published_keys(part, state), part
            )
        return parts

    def save_pretrained(self, path: str | os.PathLike, single_file: bool | None = None,
                        dtype: torch.dtype | None = None) -> None:
        """Write the published folder layout, or (``.safetensors`` path) our single file."""
        single_file = str(path).endswith(".safetensors") if single_file is None else single_file
        writer = checkpoint.write_single_file if single_file else checkpoint.write_published_layout
        writer(path, self.checkpoint_parts(dtype))

    # --- placement --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the computation runs: the device given to :meth:`from_pretrained`, :meth:`to`,
        :meth:`enable_model_offload` or :meth:`set_execution_device`."""
        return self._device

    def set_execution_device(self, device: torch.device | str) -> "MagicFace":
        """Compute on ``device`` while the host places the weights (ComfyUI loads each UNet there
        through its memory management before calling)."""
        self._device, self._offload = torch.device(device), False
        return self

    def enable_model_offload(self, execution_device: torch.device | str) -> "MagicFace":
        """Low-VRAM mode: keep both UNets on the CPU and bring each to the GPU only while it runs,
        so the ID encoder and the denoiser never occupy GPU memory together."""
        self.to("cpu")
        self._device, self._offload = torch.device(execution_device), True
        return self

    @contextlib.contextmanager
    def _placed(self, module: torch.nn.Module):
        if not self._offload:
            yield
            return
        torch.nn.Module.to(module, self._device)
        try:
            yield
        finally:
            torch.nn.Module.to(module, "cpu")
            if self._device.type == "cuda":
                torch.cuda.empty_cache()

    def compile(self, **options) -> "MagicFace":
        """``torch.compile`` the denoiser for the sampling loop (the first edit pays the compile time;
        ``options`` go to torch.compile). Weights, saving and offloading are unaffected."""
        self._denoise = torch.compile(self.denoiser, **options)
        return self

    def enable_channels_last(self) -> "MagicFace":
        """NHWC memory layout for the convolutions (often faster on recent GPUs; measure with the benchmark)."""
        for module in (self.denoiser, self.id_encoder):
            module.to(memory_format=torch.channels_last)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.conv_in.weight.dtype

    def to(self, device=None, dtype=None) -> "MagicFace":
        """Move both UNets; computation follows them to ``device`` (and offloading stops)."""
        for module in (self.denoiser, self.id_encoder):
            # nn.Module.to: diffusers' override warns on every dtype cast, even with nothing to keep in fp32.
            torch.nn.Module.to(module, device=device, dtype=dtype)
        if device is not None:
            self._device, self._offload = torch.device(device), False
        return self

    # --- the edit -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_identity(self, id_latents: torch.Tensor, text_embeds: torch.Tensor) -> IdentityFeatures:
        """Run the ID encoder once on unscaled identity latents ``[B,4,h,w]``; text ``[B,77,D]``."""
        _check_latents("id_latents", id_latents)
        _check_text(text_embeds, self.id_encoder.config.cross_attention_dim)
        batch = batch_size({"id_latents": id_latents.shape[0], "text_embeds": text_embeds.shape[0]})
        device, dtype = self.device, self.dtype
        sample = _expand(id_latents, batch).to(device, dtype)
        text = _expand(text_embeds, batch).to(device, dtype)
        timestep = torch.tensor([ID_ENCODER_TIMESTEP], device=device)
        with self._placed(self.id_encoder):
            return self.recorder.record(lambda: self.id_encoder(sample, timestep, encoder_hidden_states=text))

    def _diffusers_denoiser(self, features: IdentityFeatures) -> Denoise:
        identity = self.injection.call_kwargs(features.to(self.device, self.dtype))  # this call's own, not the model's
        return lambda x, t, text, au: self._denoise(x, t, encoder_hidden_states=text, class_labels=au,
                                                    **identity).sample

    @torch.no_grad()
    def sample(
        self,
        features: IdentityFeatures,
        cond_latents: torch.Tensor,
        au_delta: AUVector | torch.Tensor | Sequence[float],
        text_embeds: torch.Tensor,
        steps: int = 50,
        guidance: float = 3.0,
        sampler: str = "uni_pc",
        noise: torch.Tensor | None = None,
        seed: int | None = None,
        callback: StepCallback | None = None,
        per_item_noise: bool = False,
        denoiser: DenoiserFor | None = None,
    ) -> torch.Tensor:
        """Denoise from noise to the edited latents; returns unscaled latents ``[B,4,h,w]``.

        Guidance is on the AU only: ``eps = eps(0) + guidance * (eps(au) - eps(0))``, with text,
        identity and condition the same in both branches (one branch when ``guidance == 1``).
        ``noise`` (N(0,1), ``[B,4,h,w]``) makes the result a deterministic function of the inputs;
        otherwise it is drawn from ``seed`` on the CPU, one draw shared by the whole batch unless
        ``per_item_noise`` (so a batch of AU variants differs only by the AUs).
        ``callback(step, total, denoised)`` runs after every step with the step's estimate of the
        result (unscaled latents, as returned; what a live preview shows); raising from it stops sampling.
        ``denoiser``: run the denoiser some other way than this object's diffusers UNet (same weights).
        """
        steps, guidance, seed = check_steps(steps, sampler), check_guidance(guidance), check_seed(seed)
        if not isinstance(features, IdentityFeatures):
            raise ImageInputError(f"features must be the IdentityFeatures from encode_identity, got {type(features).__name__}")
        _check_latents("cond_latents", cond_latents)
        _check_text(text_embeds, self.denoiser.config.cross_attention_dim)
        au = check_au_delta(au_delta).to_tensor()
        sizes = {
            "AU vectors": au.shape[0], "cond_latents": cond_latents.shape[0],
            "text_embeds": text_embeds.shape[0], "identity features": features.batch_size,
        }
        if noise is not None:
            sizes["noise"] = noise.shape[0]
        batch = batch_size(sizes)
        latent_shape = (batch, cond_latents.shape[1], *cond_latents.shape[2:])
        id_tokens = features.tokens[0].shape[1]
        if id_tokens != cond_latents.shape[2] * cond_latents.shape[3]:
            raise ImageInputError(
                "the identity image and the condition image must have the same size "
                f"(identity features have {id_tokens} tokens, condition latents are {tuple(cond_latents.shape[2:])})"
            )
        if noise is None:
            noise = _draw_noise(latent_shape, seed, per_item_noise)
        elif tuple(noise.shape[1:]) != latent_shape[1:]:
            raise ImageInputError(f"noise has shape {tuple(noise.shape)}, the latents are {latent_shape}")

        device, dtype = self.device, self.dtype
        cond = _expand(cond_latents, batch).to(device, dtype)
        text = _expand(text_embeds, batch).to(device, dtype)
        au = _expand(au, batch).to(device, dtype)
        guided = guidance != 1.0
        if guided:  # rows [AU, zero AU]: the zero-AU branch is the unconditional one
            cond, text = torch.cat([cond, cond]), torch.cat([text, text])
            au = torch.cat([au, torch.zeros_like(au)])

        scheduler = make_scheduler(sampler)
        scheduler.set_timesteps(steps, device=device)
        # The scheduler's state stays in at least fp32 whatever the model's precision.
        state_dtype = torch.promote_types(torch.float32, dtype)
        latents = _expand(noise, batch).to(device, state_dtype) * scheduler.init_noise_sigma
        timesteps = scheduler.timesteps
        with self._placed(self.denoiser):
            denoise = (denoiser or self._diffusers_denoiser)(features)
            for i, t in enumerate(timesteps):
                model_in = torch.cat([latents, latents]) if guided else latents
                model_in = scheduler.scale_model_input(model_in, t)
                eps = denoise(torch.cat([model_in.to(dtype), cond], dim=1), t, text, au).to(state_dtype)
                if guided:
                    eps_au, eps_zero = eps.chunk(2)
                    eps = eps_zero + guidance * (eps_au - eps_zero)
                denoised = None if callback is None else denoised_estimate(scheduler, t, model_in[:batch], eps)
                latents = scheduler.step(eps, t, latents).prev_sample
                done = i + 1
                if done == len(timesteps) or (NONFINITE_CHECK_EVERY and done % NONFINITE_CHECK_EVERY == 0):
                    _check_finite(latents, done, len(timesteps), dtype, guidance, au)
                if callback is not None:
                    callback(done, len(timesteps), denoised / LATENT_SCALE)
        return latents / LATENT_SCALE


def _check_finite(latents: torch.Tensor, step: int, steps: int, dtype: torch.dtype, guidance: float,
                  au: torch.Tensor) -> None:
    if bool(torch.isfinite(latents).all()):
        return
    precision = str(dtype).replace("torch.", "")
    raise NonFiniteError(
        f"sampling produced NaN or infinite latents (seen at step {step} of {steps}); nothing was saved. "
        f"Likely causes: an overflow in {precision}"
        + (" (try bf16 or fp32)" if dtype == torch.float16 else "")
        + f"; the guidance ({guidance:g}; 1.5-3.5 works best); AU variations as large as {float(au.abs().max()):g} "
        "(keep them within +-10); or damaged weights (download them again)."
    )


def _draw_noise(shape: tuple[int, ...], seed: int | None, per_item: bool) -> torch.Tensor:
    generator = torch.Generator("cpu")
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed) % (2**64))
    draw_shape = shape if per_item else (1, *shape[1:])
    return torch.randn(draw_shape, generator=generator, dtype=torch.float32)


def _check_text(text_embeds: torch.Tensor, width: int) -> None:
    if not isinstance(text_embeds, torch.Tensor) or text_embeds.ndim != 3 or text_embeds.shape[-1] != width:
        shape = tuple(text_embeds.shape) if isinstance(text_embeds, torch.Tensor) else type(text_embeds).__name__
        raise ImageInputError(
            f"text_embeds must be [B, 77, {width}] CLIP hidden states (Stable Diffusion 1.5's text encoder, "
            f"prompt \"A close up of a person.\"), got {shape}"
        )


def _check_latents(name: str, latents: torch.Tensor) -> None:
    if latents.ndim != 4 or latents.shape[1] != 4:
        raise ImageInputError(f"{name} must be VAE latents [B,4,h,w], got shape {tuple(latents.shape)}")


def _expand(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t if t.shape[0] == batch else t.expand(batch, *t.shape[1:])


@dataclass(frozen=True)
class ConvertJob:
    """``python -m magicface_core convert``: MagicFace weights to one .safetensors file, or back."""

    source: str | None = option(None, "published folder, .safetensors file or hub repo id", positional=True)
    target: Path | None = option(None, "a .safetensors file, or a folder for the published layout", positional=True)
    dtype: str = option("fp16", "precision of the written weights", choices=tuple(devices.DTYPES))
    overwrite: bool = option(False, "replace the target if it exists")

    def __post_init__(self):
        require(self, "source", "target")
        object.__setattr__(self, "target", as_path(self.target))
        if self.dtype not in devices.DTYPES:
            raise devices.SettingsError(f"unknown dtype {self.dtype!r}: use one of {', '.join(devices.DTYPES)}")
