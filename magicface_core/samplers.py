"""The samplers MagicFace offers, by name, and the most steps each survives.

A plain table on the library's ground floor (it imports nothing of the library): the settings
checks, the CLI's choices and the nodes' combo read it; :mod:`magicface_core.model.schedulers`
builds the diffusers schedulers from it.
"""

from __future__ import annotations

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
