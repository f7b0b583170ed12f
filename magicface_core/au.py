"""Action Units: the 12 AUs MagicFace is conditioned on, and the :class:`AUVector` type.

An :class:`AUVector` holds a batch of 12-value vectors in the reference order (the DISFA set
that LibreFace estimates). The same type carries absolute intensities (0..5, from an
estimator) and variations (target minus source, what the model is conditioned on).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Sequence

import torch

from .errors import AUInputError

AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU15", "AU17", "AU20", "AU25", "AU26",
)

AU_ACTIONS: dict[str, str] = {
    "AU1": "inner brow raiser",
    "AU2": "outer brow raiser",
    "AU4": "brow lowerer",
    "AU5": "upper lid raiser",
    "AU6": "cheek raiser",
    "AU9": "nose wrinkler",
    "AU12": "lip corner puller",
    "AU15": "lip corner depressor",
    "AU17": "chin raiser",
    "AU20": "lip stretcher",
    "AU25": "lips part",
    "AU26": "jaw drop",
}

NUM_AUS = len(AU_NAMES)

# Variations the authors recommend staying within; beyond it images distort.
RECOMMENDED_DELTA_LIMIT = 10.0
# Variations refused outright (settings.check_au_delta): far past any useful edit, where the
# AU embedding only overflows (in fp16 from a few thousand) into a black image.
AU_DELTA_HARD_LIMIT = 100.0

# Prototypical AU combinations (FACS/EMFACS, restricted to the 12 AUs the model knows), each
# AU at intensity 1 so that a preset's strength reads as an intensity. The paper's own prompts
# are happiness = AU6+AU12 and sadness = AU1+AU4+AU15.
EMOTION_PRESETS: dict[str, dict[str, float]] = {
    "happiness": {"AU6": 1.0, "AU12": 1.0},
    "sadness": {"AU1": 1.0, "AU4": 1.0, "AU15": 1.0},
    "surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU26": 1.0},
    "fear": {"AU1": 1.0, "AU2": 1.0, "AU4": 1.0, "AU5": 1.0, "AU20": 1.0, "AU26": 1.0},
    "anger": {"AU4": 1.0, "AU5": 1.0, "AU17": 1.0},
    "disgust": {"AU9": 1.0, "AU15": 1.0, "AU17": 1.0},
}


def au_index(name: str | int) -> int:
    """Index of an AU given as "AU12", "au12", "12" or 12."""
    text = str(name).strip().upper()
    if not text.startswith("AU"):
        text = "AU" + text
    try:
        return AU_NAMES.index(text)
    except ValueError:
        raise AUInputError(
            f"unknown action unit {name!r}: MagicFace knows {', '.join(AU_NAMES)}"
        ) from None


class AUVector:
    """A batch of AU vectors, shape ``[B, 12]``, in the order of :data:`AU_NAMES`.

    Immutable: arithmetic returns new vectors. Build one with :meth:`from_dict`,
    :meth:`parse`, :meth:`from_values` or :meth:`zeros`; join batches with :meth:`cat`.
    """

    __slots__ = ("_values",)

    def __init__(self, values: torch.Tensor | Sequence[float] | Sequence[Sequence[float]]):
        if _holds_bools(values):
            raise AUInputError("AU values must be numbers, not true/false")
        tensor = torch.as_tensor(values, dtype=torch.float32).detach().clone().cpu()
        if tensor.ndim == 1:
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != 2 or tensor.shape[1] != NUM_AUS:
            raise AUInputError(
                f"an AU vector has {NUM_AUS} values ({', '.join(AU_NAMES)}); got shape {tuple(tensor.shape)}"
            )
        if tensor.shape[0] == 0:
            raise AUInputError("an AU vector batch cannot be empty")
        if not torch.isfinite(tensor).all():
            raise AUInputError("AU values must be finite numbers (got NaN or infinity)")
        self._values = tensor

    # --- construction -----------------------------------------------------------------
    @classmethod
    def zeros(cls, batch: int = 1) -> "AUVector":
        return cls(torch.zeros(batch, NUM_AUS))

    @classmethod
    def from_dict(cls, mapping: Mapping[str | int, float]) -> "AUVector":
        """One vector from ``{"AU12": 3, "AU6": 2}``; AUs not named are 0."""
        row = [0.0] * NUM_AUS
        for name, value in mapping.items():
            row[au_index(name)] = _as_float(value, name)
        return cls(row)

    @classmethod
    def from_dicts(cls, mappings: Iterable[Mapping[str | int, float]]) -> "AUVector":
        return cls.cat([cls.from_dict(m) for m in mappings])

    @classmethod
    def from_values(cls, values: torch.Tensor | Sequence[float] | Sequence[Sequence[float]]) -> "AUVector":
        """From 12 numbers or a ``[B, 12]`` array, in the order of :data:`AU_NAMES`."""
        return cls(values)

    @classmethod
    def parse(cls, text: str) -> "AUVector":
        """One vector from text such as ``"AU12=3, AU6=2"`` (``"12:3 6:2"`` works too)."""
        text = text.strip()
        if not text:
            return cls.zeros()
        mapping: dict[str, float] = {}
        for item in re.split(r"[,;\s]+", text):
            if not item:
                continue
            match = re.fullmatch(r"(?i)(AU)?(\d+)\s*[=:]\s*([-+]?[\d.eE+-]+)", item)
            if match is None:
                raise AUInputError(
                    f"cannot read AU setting {item!r}: write AUs as NAME=VALUE, e.g. 'AU12=3, AU6=2'"
                )
            name = "AU" + match.group(2)
            au_index(name)
            if name in mapping:
                raise AUInputError(f"{name} is set twice in {text!r}")
            mapping[name] = _as_float(match.group(3), name)
        return cls.from_dict(mapping)

    @classmethod
    def coerce(cls, value: "AUVector | Mapping[str | int, float] | str | torch.Tensor | Sequence") -> "AUVector":
        """The one check of AU input: an AUVector as is, ``{"AU12": 3}``, ``"AU12=3"``, or 12 numbers
        / a ``[B, 12]`` array (the values' checks are the constructor's)."""
        if isinstance(value, AUVector):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if isinstance(value, str):
            return cls.parse(value)
        try:
            return cls(value)
        except AUInputError:
            raise
        except (TypeError, ValueError, RuntimeError) as exc:
            raise AUInputError(
                f"AU values must be an AUVector, a mapping such as {{'AU12': 3}}, text such as 'AU12=3' or "
                f"{NUM_AUS} numbers per row; got {type(value).__name__} ({exc})"
            ) from None

    @classmethod
    def cat(cls, vectors: Sequence["AUVector"]) -> "AUVector":
        if not vectors:
            raise AUInputError("no AU vectors to join")
        return cls(torch.cat([v._values for v in vectors], dim=0))

    # --- access -------------------------------------------------------------------------
    @property
    def values(self) -> torch.Tensor:
        """A copy of the ``[B, 12]`` float32 values."""
        return self._values.clone()

    def __len__(self) -> int:
        return self._values.shape[0]

    def __getitem__(self, index: int | slice) -> "AUVector":
        rows = self._values[index]
        return AUVector(rows)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def get(self, name: str | int) -> torch.Tensor:
        """The ``[B]`` values of one AU."""
        return self._values[:, au_index(name)].clone()

    def to_dicts(self, skip_zeros: bool = False) -> list[dict[str, float]]:
        return [
            {n: float(v) for n, v in zip(AU_NAMES, row.tolist()) if not (skip_zeros and v == 0.0)}
            for row in self._values
        ]

    def to_tensor(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self._values.to(device=device, dtype=dtype or torch.float32)

    def repeat_to(self, batch: int) -> "AUVector":
        """Broadcast a single vector to ``batch`` rows (a batch of that size is returned as is)."""
        if len(self) == batch:
            return self
        if len(self) != 1:
            raise AUInputError(f"cannot broadcast {len(self)} AU vectors to a batch of {batch}")
        return AUVector(self._values.expand(batch, -1))

    def is_zero(self) -> bool:
        return bool((self._values == 0).all())

    def max_abs(self) -> float:
        return float(self._values.abs().max())

    # --- arithmetic ---------------------------------------------------------------------
    def _broadcast_pair(self, other: "AUVector") -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self._values, other._values
        if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
            raise AUInputError(f"cannot combine AU batches of {a.shape[0]} and {b.shape[0]}")
        return a, b

    def __add__(self, other: "AUVector") -> "AUVector":
        a, b = self._broadcast_pair(other)
        return AUVector(a + b)

    def __sub__(self, other: "AUVector") -> "AUVector":
        a, b = self._broadcast_pair(other)
        return AUVector(a - b)

    def __mul__(self, scale: float) -> "AUVector":
        return AUVector(self._values * float(scale))

    __rmul__ = __mul__

    def __neg__(self) -> "AUVector":
        return AUVector(-self._values)

    def allclose(self, other: "AUVector", atol: float = 1e-6) -> bool:
        return self._values.shape == other._values.shape and torch.allclose(self._values, other._values, atol=atol)

    # --- display ------------------------------------------------------------------------
    def table(self, title: str = "") -> str:
        """A readable table, one column per vector of the batch."""
        header = f"{'AU':<6}{'action':<22}" + "".join(f"{f'#{i}':>8}" for i in range(len(self)))
        lines = [title] if title else []
        lines.append(header)
        for j, name in enumerate(AU_NAMES):
            cells = "".join(f"{v:>8.2f}" for v in self._values[:, j].tolist())
            lines.append(f"{name:<6}{AU_ACTIONS[name]:<22}{cells}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        rows = ["{" + ", ".join(f"{k}: {v:g}" for k, v in d.items()) + "}" for d in self.to_dicts(skip_zeros=True)]
        return f"AUVector([{', '.join(rows)}])"


def emotion_preset(name: str, strength: float = 1.0) -> AUVector:
    """The AU pattern of a basic emotion, scaled by ``strength``."""
    key = name.strip().lower()
    if key not in EMOTION_PRESETS:
        raise AUInputError(f"unknown emotion preset {name!r}: choose one of {', '.join(EMOTION_PRESETS)}")
    return AUVector.from_dict(EMOTION_PRESETS[key]) * strength


SWEEP_MAX_STEPS = 64


def au_sweep(au: str, start: float, stop: float, step: float, max_steps: int = SWEEP_MAX_STEPS) -> AUVector:
    """One row per step of ``au`` from ``start`` towards ``stop`` (inclusive when it lands on it)."""
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise AUInputError(f"the sweep's start and stop must be finite numbers, got {start} and {stop}")
    if not (math.isfinite(step) and step > 0):
        raise AUInputError(f"the sweep's step must be a positive number (e.g. 2.0), got {step}")
    count = int((abs(stop - start) + 1e-6) // step) + 1
    if count > max_steps:
        raise AUInputError(f"the sweep would make {count} edits; keep it under {max_steps} (raise the step)")
    direction = 1.0 if stop >= start else -1.0
    return AUVector.from_dicts([{au: start + direction * i * step} for i in range(count)])


def _as_float(value: object, name: object) -> float:
    if _is_bool(value):  # float(True) is 1.0: a yes/no is not an intensity
        raise AUInputError(f"the value of {name} must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AUInputError(f"the value of {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise AUInputError(f"the value of {name} must be finite, got {value!r}")
    return number


def _is_bool(value: object) -> bool:
    import numpy as np

    return isinstance(value, (bool, np.bool_))


def _holds_bools(values: object) -> bool:
    """A boolean array, or a list with a boolean in it (torch would read True as 1.0)."""
    dtype = getattr(values, "dtype", None)
    if dtype is not None:
        return dtype in (torch.bool, bool) or str(dtype) == "bool"
    if isinstance(values, (list, tuple)):
        return any(_is_bool(v) or _holds_bools(v) for v in values)
    return False
