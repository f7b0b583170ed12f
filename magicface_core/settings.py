"""Every edit setting checked in one place, before any model loads or any download starts.

The CLI, the Python API (:class:`EditSettings`, :meth:`MagicFace.sample`, ``edit_photo``) and
the ComfyUI nodes all call these, so a bad value gets the same message everywhere.

Each job's settings are a dataclass next to the job (:class:`EditSettings` here, ``EditJob`` in
``edit.py``, ``VideoSettings`` in ``video/settings.py``, ...). A field made with :func:`option`
holds its default, its limits and its help text; the CLI (``magicface_core.cli``) makes every flag
from these fields, and the nodes take their defaults from them.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from .au import AU_DELTA_HARD_LIMIT, RECOMMENDED_DELTA_LIMIT, AUVector
from .errors import AUInputError, SettingsError
from .samplers import MAX_STEPS, SAMPLER_NAMES

logger = logging.getLogger(__name__)


def option(default=None, help: str = "", *, choices=None, min=None, max=None, required: bool = False,
           repeat: bool = False, flag: str | None = None, positional: bool = False, metavar: str | None = None,
           switches: dict[str, object] | None = None, nargs: str | None = None):
    """A settings field: its default, its limits (``choices``, ``min``, ``max``, ``required``) and its help.

    How the CLI spells it: ``--name-with-dashes`` unless ``flag`` names it; ``repeat`` collects a
    repeatable flag into a list; ``positional`` makes it an argument; ``switches`` maps flags to the
    value each one sets (``{"--relative": "relative", "--absolute": "absolute"}``).
    """
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "min": min, "max": max,
                "required": required, "flag": flag, "positional": positional, "metavar": metavar,
                "switches": switches, "nargs": nargs}
    if repeat:
        return field(default_factory=list, metadata={**metadata, "repeat": True})
    return field(default=default, metadata=metadata)


def group(kind: type, *, skip: tuple[str, ...] = ()):
    """A field holding a whole settings dataclass (its fields become flags of the job; ``skip`` leaves some out)."""
    return field(default_factory=kind, metadata={"group": True, "skip": skip})


def default_of(kind: type, name: str):
    """The default of ``kind``'s field ``name``: what the nodes show and the CLI starts from."""
    (found,) = [f for f in fields(kind) if f.name == name]
    if found.default is not MISSING:
        return found.default
    return found.default_factory()


def check_limits(settings, flag_style: bool = False) -> None:
    """Each field within its ``min`` / ``max`` (from :func:`option`); the message names the field, as a
    flag (``--frame-step``) when ``flag_style``."""
    for f in fields(settings):
        if not f.init:
            continue
        value, low, high = getattr(settings, f.name), f.metadata.get("min"), f.metadata.get("max")
        if value is None or (low is None and high is None):
            continue
        name = f"--{f.name.replace('_', '-')}" if flag_style else f.name
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise SettingsError(f"{name} must be a number, got {value!r}")
        if isinstance(low, int) and not isinstance(value, numbers.Integral):
            raise SettingsError(f"{name} must be a whole number, got {value!r}")
        if low is not None and value < low:
            raise SettingsError(f"{name} must be {'0 or more' if low == 0 else f'at least {low}'} (got {value})")
        if high is not None and value > high:
            raise SettingsError(f"{name} must be at most {high} (got {value})")

MAX_SEED = 2**64 - 1  # what ComfyUI's seed widgets allow; torch generators take 64 bits
# Guidance: the paper finds 1.5-3.5 best and colours shift from 4.5; past 10 images break down,
# and past the hard ceiling the sampler only overflows.
GUIDANCE_WARN = 10.0
GUIDANCE_LIMIT = 100.0


def check_sampler(sampler: object) -> str:
    if sampler not in SAMPLER_NAMES:
        raise SettingsError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLER_NAMES)}")
    return sampler  # type: ignore[return-value]


def check_steps(steps: object, sampler: str = "uni_pc", limit: int | None = None) -> int:
    """A whole number of steps from 1 to what ``sampler`` survives (:data:`samplers.MAX_STEPS`), or to
    ``limit`` for a sampler outside MagicFace's table (FineFace's PNDM: one step per training timestep)."""
    limit = MAX_STEPS[check_sampler(sampler)] if limit is None else limit
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise SettingsError(f"steps must be a whole number from 1 to {limit}, got {steps!r}")
    if not 1 <= steps <= limit:
        raise SettingsError(
            f"steps must be from 1 to {limit} with the {sampler} sampler, got {steps} "
            f"(the authors use 50; past {limit} steps this sampler gives NaN, fails, or only adds time)"
        )
    return int(steps)


def check_guidance(guidance: object) -> float:
    """A finite guidance scale within +-:data:`GUIDANCE_LIMIT`; a warning past +-:data:`GUIDANCE_WARN`."""
    try:
        value = float(guidance)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SettingsError(f"guidance must be a number, got {guidance!r}") from None
    if not math.isfinite(value) or abs(value) > GUIDANCE_LIMIT:
        raise SettingsError(
            f"guidance must be a finite number within +-{GUIDANCE_LIMIT:g}, got {guidance!r} "
            "(the paper finds 1.5-3.5 best; 3.0 is the default)"
        )
    if abs(value) > GUIDANCE_WARN:
        logger.warning("guidance %g is far beyond the useful range (1.5-3.5): expect a broken image", value)
    return value


def check_seed(seed: object) -> int | None:
    """``None`` (a random seed) or a whole number from 0 to 2**64 - 1."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise SettingsError(f"the seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return int(seed)


def check_face_index(face_index: object) -> int:
    """0 is the largest face, 1 the next... (a negative index would silently pick the smallest)."""
    if isinstance(face_index, bool) or not isinstance(face_index, numbers.Integral) or face_index < 0:
        raise SettingsError(f"the face index must be 0 (the largest face) or more, got {face_index!r}")
    return int(face_index)


def check_au_delta(au_delta: object) -> AUVector:
    """AU variations as an :class:`AUVector`, finite and within +-:data:`AU_DELTA_HARD_LIMIT`.

    Takes an AUVector, ``{"AU12": 3}``, ``"AU12=3, AU6=2"``, 12 numbers or a ``[B, 12]`` array.
    """
    au_delta = AUVector.coerce(au_delta)
    largest = au_delta.max_abs()
    if largest > AU_DELTA_HARD_LIMIT:
        raise AUInputError(
            f"an AU variation of {largest:g} is far outside what MagicFace can follow: keep AU values within "
            f"+-{RECOMMENDED_DELTA_LIMIT:g} (the hard limit is +-{AU_DELTA_HARD_LIMIT:g})"
        )
    if largest > RECOMMENDED_DELTA_LIMIT:
        logger.warning("AU variations beyond +-%g tend to distort the face", RECOMMENDED_DELTA_LIMIT)
    return au_delta


@dataclass(frozen=True)
class EditSettings:
    """The sampling settings of an edit, checked when made."""

    steps: int = option(50, "sampling steps (the authors use 50; each sampler's most: magicface_core.samplers.MAX_STEPS)",
                        min=1)
    guidance: float = option(3.0, "AU guidance scale (the paper uses 3.0; 1.5-3.5 works best)",
                             min=-GUIDANCE_LIMIT, max=GUIDANCE_LIMIT)
    seed: int | None = option(0, "the start noise (a video: one start noise for every frame)", min=0, max=MAX_SEED)
    sampler: str = option("uni_pc", "sampler", choices=SAMPLER_NAMES)

    def __post_init__(self):
        check_steps(self.steps, self.sampler)
        object.__setattr__(self, "guidance", check_guidance(self.guidance))
        check_seed(self.seed)


@dataclass(frozen=True)
class ModelSettings:
    """Which MagicFace weights and which Stable Diffusion 1.5 (its VAE and text encoder) a job loads."""

    weights: str = option("mengtingwei/magicface",
                          "MagicFace weights: the published folder, one of our .safetensors files, or a hub repo id")
    sd15: str | None = option(None, "Stable Diffusion 1.5 diffusers folder (default: download from the hub)")


def require(job, *names: str) -> None:
    """The fields a job cannot run without (the CLI marks them required; Python callers get the same message)."""
    for name in names:
        if getattr(job, name) in (None, "", []):
            raise SettingsError(f"--{name.replace('_', '-')} is required")


def as_path(value) -> Path | None:
    return None if value is None or value == "" else Path(value)
