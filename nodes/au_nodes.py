"""AU nodes: estimate intensities, build AU variations (sliders, presets, transfer), sweeps and batches."""

from __future__ import annotations

from comfy_api.latest import io

from ..magicface_core import AU_ACTIONS, AU_NAMES, EMOTION_PRESETS, AUInputError, AUVector, emotion_preset
from ..magicface_core.au import SWEEP_MAX_STEPS, au_sweep
from ..magicface_core.video.tracking import estimate_aus_where_found
from .face_nodes import detector_input, face_index_input, face_tools_for, face_tools_input
from .face_tools import face_toolkit
from .images import to_arrays
from .schema import AUDelta, AUs, Crop, schema

SLIDER_LIMIT = 10.0
# Input names are stable (workflows store them): the AU and its muscle action.
SLIDERS = {f"{name}_{AU_ACTIONS[name].replace(' ', '_')}": name for name in AU_NAMES}
PRESET_NONE = "none"


def _au_value(name: str, default: float, **limits):
    return io.Float.Input(name, default=default, min=-SLIDER_LIMIT, max=SLIDER_LIMIT, step=0.1, **limits)


class MagicFaceAUEstimate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceAUEstimate", "MagicFace AU Estimate",
                      "AU intensities (0..5, LibreFace) of the face in each image.", [
                          io.Image.Input("image"), face_index_input(),
                          Crop.Input("crop", optional=True, tooltip=(
                              "from Face Track: frames marked without a face take the AUs of the nearest frame "
                              "with one")),
                          detector_input(), face_tools_input(),
                      ], [AUs.Output(display_name="aus"), io.String.Output(display_name="table")])

    @classmethod
    def execute(cls, image, face_index: int, crop=None, detector: str = "face_alignment", face_tools=None):
        images = to_arrays(image, "the image")
        toolkit = face_toolkit(face_tools_for(face_tools, detector=detector))
        if crop is None:
            aus = toolkit.estimate_aus(images, face_index)
        else:
            if len(crop) != len(images):
                raise AUInputError(f"{len(images)} images but {len(crop)} crops")
            aus = estimate_aus_where_found(toolkit, images, [t is not None for t in crop], face_index)
        return io.NodeOutput(aus, aus[: min(len(aus), 8)].table(title="AU intensities (0..5), one column per image"))


class MagicFaceAUDeltaEditor(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        sliders = [_au_value(key, 0.0, display_mode=io.NumberDisplay.slider, tooltip=f"{name}: {AU_ACTIONS[name]}")
                   for key, name in SLIDERS.items()]
        return schema("MagicFaceAUDeltaEditor", "MagicFace AU Delta Editor", (
            "The AU variation to apply: target - source (when both are connected) + the sliders + an emotion "
            "preset. Positive values strengthen an action, negative ones relax it."), [
            *sliders,
            io.Combo.Input("preset", options=[PRESET_NONE, *EMOTION_PRESETS], default=PRESET_NONE, optional=True,
                           tooltip="happiness = AU6+AU12, sadness = AU1+AU4+AU15, ..."),
            _au_value("preset_strength", 2.0, optional=True),
            AUs.Input("source_aus", optional=True, tooltip="AUs of the face being edited (from AU Estimate)"),
            AUs.Input("target_aus", optional=True, tooltip="AUs to reach, e.g. estimated on a driving photo"),
        ], [AUDelta.Output(display_name="au_delta"), io.String.Output(display_name="table")])

    @classmethod
    def execute(cls, preset: str = PRESET_NONE, preset_strength: float = 2.0, source_aus: AUVector | None = None,
                target_aus: AUVector | None = None, **sliders):
        delta = AUVector.from_dict({SLIDERS[key]: float(value) for key, value in sliders.items() if key in SLIDERS})
        if preset != PRESET_NONE:
            delta = delta + emotion_preset(preset, preset_strength)
        if (source_aus is None) != (target_aus is None):
            raise AUInputError("connect both source_aus and target_aus (the delta is target - source), or neither")
        if source_aus is not None:
            delta = (target_aus - source_aus) + delta
        return io.NodeOutput(delta, delta.table(title="AU variation, one column per edit"))


class MagicFaceAUSweep(io.ComfyNode):
    MAX_STEPS = SWEEP_MAX_STEPS

    @classmethod
    def define_schema(cls):
        return schema("MagicFaceAUSweep", "MagicFace AU Sweep",
                      "A batch of AU variations that steps one AU from start to stop (for grids and animations).", [
                          io.Combo.Input("au", options=list(AU_NAMES), default="AU12"),
                          _au_value("start", -6.0),
                          _au_value("stop", 6.0),
                          io.Float.Input("step", default=2.0, min=0.1, max=20.0, step=0.1),
                          AUDelta.Input("base", optional=True, tooltip="added to every step of the sweep"),
                      ], [AUDelta.Output(display_name="au_delta")])

    @classmethod
    def execute(cls, au: str, start: float, stop: float, step: float, base: AUVector | None = None):
        rows = au_sweep(au, start, stop, step, cls.MAX_STEPS)
        return io.NodeOutput(rows if base is None else base + rows)


class MagicFaceAUDeltaBatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceAUDeltaBatch", "MagicFace AU Delta Batch",
                      "Joins AU variations into one batch: one edit per row, sampled together.", [
                          AUDelta.Input("delta_1"), AUDelta.Input("delta_2"),
                          AUDelta.Input("delta_3", optional=True), AUDelta.Input("delta_4", optional=True),
                      ], [AUDelta.Output(display_name="au_delta")])

    @classmethod
    def execute(cls, **deltas):
        return io.NodeOutput(AUVector.cat([deltas[k] for k in sorted(deltas) if deltas[k] is not None]))
