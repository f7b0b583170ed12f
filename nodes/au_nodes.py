"""AU nodes: estimate intensities, build AU variations (sliders, presets, transfer), sweeps and batches."""

from __future__ import annotations

import math

import numpy as np

from ..magicface_core import AU_ACTIONS, AU_NAMES, EMOTION_PRESETS, AUInputError, AUVector, emotion_preset
from .face_nodes import DETECTOR_INPUT
from .host import face_toolkit
from .images import to_arrays
from ..magicface_core.video.smoothing import fill_gaps
from .types import AU_DELTA, AU_VECTOR, CATEGORY, MAGICFACE_CROP

SLIDER_LIMIT = 10.0
# Input names are stable (workflows store them): the AU and its muscle action.
SLIDERS = {f"{name}_{AU_ACTIONS[name].replace(' ', '_')}": name for name in AU_NAMES}
PRESET_NONE = "none"


class MagicFaceAUEstimate:
    DESCRIPTION = "AU intensities (0..5, LibreFace) of the face in each image."
    CATEGORY = CATEGORY
    RETURN_TYPES = (AU_VECTOR, "STRING")
    RETURN_NAMES = ("aus", "table")
    FUNCTION = "estimate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 32, "tooltip": "0 = the largest face"}),
            },
            "optional": {"crop": (MAGICFACE_CROP, {"tooltip": "from Face Track: frames marked without a face "
                                                              "take the AUs of the nearest frame with one"}),
                         **dict([DETECTOR_INPUT])},
        }

    def estimate(self, image, face_index: int, crop=None, detector: str = "face_alignment"):
        images = to_arrays(image, "the image")
        toolkit = face_toolkit(detector=detector)
        if crop is None:
            aus = toolkit.estimate_aus(images, face_index)
        else:
            if len(crop) != len(images):
                raise AUInputError(f"{len(images)} images but {len(crop)} crops")
            found = [i for i, transform in enumerate(crop) if transform is not None]
            rows = np.full((len(images), len(AU_NAMES)), np.nan, dtype=np.float32)
            if found:
                rows[found] = toolkit.estimate_aus([images[i] for i in found], face_index).values.numpy()
            aus = AUVector(fill_gaps(rows))
        return (aus, aus[: min(len(aus), 8)].table(title="AU intensities (0..5), one column per image"))


class MagicFaceAUDeltaEditor:
    DESCRIPTION = ("The AU variation to apply: target - source (when both are connected) + the sliders + "
                   "an emotion preset. Positive values strengthen an action, negative ones relax it.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (AU_DELTA, "STRING")
    RETURN_NAMES = ("au_delta", "table")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        sliders = {
            key: ("FLOAT", {"default": 0.0, "min": -SLIDER_LIMIT, "max": SLIDER_LIMIT, "step": 0.1,
                            "display": "slider", "tooltip": f"{name}: {AU_ACTIONS[name]}"})
            for key, name in SLIDERS.items()
        }
        return {
            "required": sliders,
            "optional": {
                "preset": ([PRESET_NONE, *EMOTION_PRESETS], {"default": PRESET_NONE,
                                                             "tooltip": "happiness = AU6+AU12, sadness = AU1+AU4+AU15, ..."}),
                "preset_strength": ("FLOAT", {"default": 2.0, "min": -SLIDER_LIMIT, "max": SLIDER_LIMIT, "step": 0.1}),
                "source_aus": (AU_VECTOR, {"tooltip": "AUs of the face being edited (from AU Estimate)"}),
                "target_aus": (AU_VECTOR, {"tooltip": "AUs to reach, e.g. estimated on a driving photo"}),
            },
        }

    def build(self, preset: str = PRESET_NONE, preset_strength: float = 2.0, source_aus: AUVector | None = None,
              target_aus: AUVector | None = None, **sliders):
        delta = AUVector.from_dict({SLIDERS[key]: float(value) for key, value in sliders.items() if key in SLIDERS})
        if preset != PRESET_NONE:
            delta = delta + emotion_preset(preset, preset_strength)
        if (source_aus is None) != (target_aus is None):
            raise AUInputError("connect both source_aus and target_aus (the delta is target - source), or neither")
        if source_aus is not None:
            delta = (target_aus - source_aus) + delta
        return (delta, delta.table(title="AU variation, one column per edit"))


class MagicFaceAUSweep:
    DESCRIPTION = "A batch of AU variations that steps one AU from start to stop (for grids and animations)."
    CATEGORY = CATEGORY
    RETURN_TYPES = (AU_DELTA,)
    RETURN_NAMES = ("au_delta",)
    FUNCTION = "sweep"
    MAX_STEPS = 64

    @classmethod
    def INPUT_TYPES(cls):
        value = {"min": -SLIDER_LIMIT, "max": SLIDER_LIMIT, "step": 0.1}
        return {
            "required": {
                "au": (list(AU_NAMES), {"default": "AU12"}),
                "start": ("FLOAT", {"default": -6.0, **value}),
                "stop": ("FLOAT", {"default": 6.0, **value}),
                "step": ("FLOAT", {"default": 2.0, "min": 0.1, "max": 20.0, "step": 0.1}),
            },
            "optional": {"base": (AU_DELTA, {"tooltip": "added to every step of the sweep"})},
        }

    def sweep(self, au: str, start: float, stop: float, step: float, base: AUVector | None = None):
        if not (math.isfinite(start) and math.isfinite(stop)):
            raise AUInputError(f"the sweep's start and stop must be finite numbers, got {start} and {stop}")
        if not (math.isfinite(step) and step > 0):
            raise AUInputError(f"the sweep's step must be a positive number (e.g. 2.0), got {step}")
        count = int((abs(stop - start) + 1e-6) // step) + 1
        if count > self.MAX_STEPS:
            raise AUInputError(f"the sweep would make {count} edits; keep it under {self.MAX_STEPS} (raise the step)")
        direction = 1.0 if stop >= start else -1.0
        rows = AUVector.from_dicts([{au: start + direction * i * step} for i in range(count)])
        return (rows if base is None else base + rows,)


class MagicFaceAUDeltaBatch:
    DESCRIPTION = "Joins AU variations into one batch: one edit per row, sampled together."
    CATEGORY = CATEGORY
    RETURN_TYPES = (AU_DELTA,)
    RETURN_NAMES = ("au_delta",)
    FUNCTION = "join"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"delta_1": (AU_DELTA,), "delta_2": (AU_DELTA,)},
                "optional": {"delta_3": (AU_DELTA,), "delta_4": (AU_DELTA,)}}

    def join(self, **deltas):
        return (AUVector.cat([deltas[k] for k in sorted(deltas) if deltas[k] is not None]),)
