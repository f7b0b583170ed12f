"""Keyframed AU changes: ``"0: AU12=0; 30: AU12=3; 60: AU12=0"`` -> one AU vector per frame.

Keyframes are separated by ``;``; each is ``FRAME: AU=VALUE, AU=VALUE`` (frames count from 0).
Each AU follows its own keyframes, the ones that name it:

- between two of them it moves from one value to the next, ``linear``-ly or ``smooth``-ly
  (smoothstep, ``3s^2 - 2s^3``: it eases out of one value and into the next, no jumps in speed);
- before its first keyframe it holds that keyframe's value, after its last one the last value;
- an AU no keyframe names stays 0.
"""

from __future__ import annotations

import re

import numpy as np

from ..au import NUM_AUS, AUVector, au_index
from ..errors import AUInputError

INTERPOLATIONS = ("linear", "smooth")
EXAMPLE = '"0:AU12=0; 30:AU12=3; 60:AU12=0"'


def parse_keyframes(text: str) -> dict[int, dict[int, float]]:
    """``{frame: {AU index: value}}`` from keyframe text; errors say what could not be read."""
    keys: dict[int, dict[int, float]] = {}
    entries = [entry.strip() for entry in text.split(";") if entry.strip()]
    if not entries:
        raise AUInputError(f"no keyframes in {text!r}: write FRAME:AU=VALUE separated by ';', e.g. {EXAMPLE}")
    for entry in entries:
        if re.fullmatch(r"-\s*\d+\s*:.*", entry):
            raise AUInputError(f"keyframe {entry!r} has a negative frame: frames count from 0 (the clip's first frame)")
        match = re.fullmatch(r"(\d+)\s*:\s*(.+)", entry)
        if match is None:
            raise AUInputError(
                f"cannot read keyframe {entry!r}: write FRAME:AU=VALUE (frames from 0) separated by ';', e.g. {EXAMPLE}")
        frame = int(match.group(1))
        if frame in keys:
            raise AUInputError(f"frame {frame} has two keyframes in {text!r}")
        values = AUVector.parse(match.group(2))  # checks names and numbers
        named = {au_index(re.split(r"[=:]", item)[0]) for item in re.split(r"[,\s]+", match.group(2)) if item}
        keys[frame] = {index: float(values.values[0, index]) for index in named}
    return keys


def interpolate_keyframes(text: str, frames: int, interpolation: str = "linear") -> AUVector:
    """One AU vector per frame (``frames`` rows) from keyframe text."""
    if interpolation not in INTERPOLATIONS:
        raise AUInputError(f"unknown interpolation {interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}")
    if frames < 1:
        raise AUInputError(f"keyframes need at least one frame to fill, got {frames}")
    keys = parse_keyframes(text)
    t = np.arange(frames, dtype=np.float64)
    values = np.zeros((frames, NUM_AUS), dtype=np.float64)
    for index in range(NUM_AUS):
        points = sorted((frame, key[index]) for frame, key in keys.items() if index in key)
        if not points:
            continue
        xs, ys = np.array([p[0] for p in points], dtype=np.float64), np.array([p[1] for p in points])
        if interpolation == "linear" or len(points) == 1:
            values[:, index] = np.interp(t, xs, ys)
            continue
        segment = np.clip(np.searchsorted(xs, t, side="right") - 1, 0, len(xs) - 2)
        s = np.clip((t - xs[segment]) / (xs[segment + 1] - xs[segment]), 0.0, 1.0)
        s = s * s * (3 - 2 * s)
        values[:, index] = ys[segment] + s * (ys[segment + 1] - ys[segment])
    return AUVector(values.astype(np.float32))


class ExpressionChange:
    """The change added to a clip's own expression: a constant AU vector plus optional keyframes.

    Built (and its keyframes parsed) before any model loads, so a typo fails at once.
    """

    def __init__(self, constant: AUVector | None = None, keyframes: str | None = None, interpolation: str = "linear"):
        self.constant = constant if constant is not None else AUVector.zeros()
        if len(self.constant) != 1:
            raise AUInputError(f"the constant change is one AU vector, got {len(self.constant)}")
        self.keyframes = keyframes.strip() if keyframes and keyframes.strip() else None
        self.interpolation = interpolation
        if self.keyframes is not None:
            interpolate_keyframes(self.keyframes, 1, interpolation)  # check now
            self._check_values()

    def _check_values(self) -> None:
        """The largest change any frame gets, within the limits of a single edit's AU delta.

        Between keyframes an AU moves within the values of its own keyframes, so its extremes are
        at keyframes: per AU, the keyframed value (or 0) plus the constant farthest from 0.
        """
        from ..settings import check_au_delta

        constant = self.constant.values[0].numpy().astype(np.float64)
        extreme = constant.copy()
        for key in parse_keyframes(self.keyframes).values():
            for index, value in key.items():
                if abs(constant[index] + value) > abs(extreme[index]):
                    extreme[index] = constant[index] + value
        try:
            check_au_delta(AUVector(extreme[None].astype(np.float32)))
        except AUInputError as exc:
            what = "the keyframes plus the constant change (--au)" if constant.any() else "a keyframe"
            raise AUInputError(f"{what}: {exc}") from None

    def check_frames(self, frames: int) -> None:
        """Refuse keyframes past the clip's last frame (frames count from 0), which would never be reached."""
        if self.keyframes is None:
            return
        last = max(parse_keyframes(self.keyframes))
        if last >= frames:
            raise AUInputError(f"keyframe {last} is past the clip's end: it has {frames} frames, 0 to {frames - 1} "
                               "(keyframes count frames from 0)")

    def per_frame(self, frames: int) -> AUVector:
        """``frames`` rows: the constant plus the keyframed values at each frame."""
        if self.keyframes is None:
            return self.constant.repeat_to(frames)
        return interpolate_keyframes(self.keyframes, frames, self.interpolation) + self.constant
