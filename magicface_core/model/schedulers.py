"""Samplers by name: diffusers schedulers built from SD 1.5's scheduler config.

``uni_pc`` is the authors' choice; with ``final_sigmas_type="sigma_min"`` its last step ends at
the smallest training sigma, as in the diffusers 0.25.1 they used (newer diffusers default to
ending at zero, which changes results slightly at low step counts).
"""

from __future__ import annotations

import torch

from ..errors import MagicFaceError

# scheduler/scheduler_config.json of stable-diffusion-v1-5 (a PNDM config the others are built from).
SD15_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "clip_sample": False,
    "prediction_type": "epsilon",
}

# name -> (diffusers class name, settings on top of the SD 1.5 config, what a user reads)
SAMPLERS: dict[str, tuple[str, dict, str]] = {
    "uni_pc": ("UniPCMultistepScheduler", {"final_sigmas_type": "sigma_min"}, "UniPC (the authors' sampler)"),
    "ddim": ("DDIMScheduler", {}, "DDIM, eta 0"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, "Euler, Karras sigmas"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "DPM++ 2M"),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M Karras (good results in fewer steps)",
    ),
}

SAMPLER_NAMES = tuple(SAMPLERS)

# The most steps each sampler survives with SD 1.5's 1000 training timesteps, measured with
# benchmarks/sampler_step_limits.py: from 1000 steps uni_pc and dpmpp_2m return NaN latents and
# ddim indexes past its table; dpmpp_2m_karras fails from 1360. Where nothing breaks, 1000 is the
# cap: more steps than training timesteps add time, not quality (the authors use 50).
MAX_STEPS: dict[str, int] = {
    "uni_pc": 999,
    "ddim": 999,
    "euler": 1000,
    "euler_karras": 1000,
    "dpmpp_2m": 999,
    "dpmpp_2m_karras": 1000,
}


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
