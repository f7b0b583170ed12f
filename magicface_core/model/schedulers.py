"""Samplers by name: diffusers schedulers built from SD 1.5's scheduler config (the table of names,
settings and step limits is :mod:`magicface_core.samplers`, which imports nothing of the library).

``uni_pc`` is the authors' choice; with ``final_sigmas_type="sigma_min"`` its last step ends at
the smallest training sigma, as in the diffusers 0.25.1 they used (newer diffusers default to
ending at zero, which changes results slightly at low step counts).
"""

from __future__ import annotations

import torch

from ..errors import MagicFaceError
from ..samplers import SAMPLER_NAMES, SAMPLERS, SD15_SCHEDULER_CONFIG  # noqa: F401 - the table's one home


def make_scheduler(name: str):
    """A fresh scheduler for ``name`` (schedulers keep per-run state, so one per sampling run)."""
    import diffusers

    try:
        class_name, settings, _ = SAMPLERS[name]
    except KeyError:
        raise MagicFaceError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLER_NAMES)}") from None
    # from_config keeps the keys the class knows and drops the PNDM-only ones.
    return getattr(diffusers, class_name).from_config({**SD15_SCHEDULER_CONFIG, **settings})


def denoised_estimate(scheduler, t, model_input: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The clean latents implied by noise prediction ``eps`` at the current step (call before ``step``).

    ``model_input`` is the scaled model input (variance-preserving for every scheduler here); the
    noise level is the scheduler's current sigma where it keeps one, else its timestep's alpha.
    """
    sigmas, index = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
    if sigmas is not None and index is not None:
        alpha_bar = 1.0 / (1.0 + sigmas[index].to(torch.float64) ** 2)
    else:
        alpha_bar = scheduler.alphas_cumprod[int(t)].to(torch.float64)
    alpha_bar = float(alpha_bar)
    return (model_input - (1.0 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5
