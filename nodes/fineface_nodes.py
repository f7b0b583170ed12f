"""FineFace in ComfyUI: a MODEL patch (attn2 AU term + LoRA, in fineface_patch.py) and a node that puts
AUs on a CONDITIONING. The stock KSampler, schedulers, previews and memory management do the rest."""

from __future__ import annotations

from comfy_api.latest import io

from ..magicface_core import AU_ACTIONS, AU_NAMES, EMOTION_PRESETS, AUVector, emotion_preset
from ..magicface_core.fineface.checks import check_aus, check_base_width
from ..magicface_core.fineface.generate import GenerateJob, GenerateSettings
from ..magicface_core.settings import default_of
from .au_nodes import PRESET_NONE, SLIDERS
from .fineface_patch import FINEFACE_AU_KEY, apply_fineface, context_width
from .schema import AUs, schema


class FineFaceApply(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceFineFaceApply", "FineFace Apply",
                      "Patches an SD 2.1-base MODEL (or SD 1.5 for the variant) with FineFace's AU cross-attention "
                      "and LoRA. Put the AUs on the positive conditioning with FineFace AU Conditioning.", [
                          io.Model.Input("model"),
                          io.String.Input("fineface_weights", default=default_of(GenerateJob, "fineface_weights"), tooltip=(
                              "folder with attn_processors.ckpt, au_encoder.ckpt, pytorch_lora_weights.safetensors, "
                              "or the hub id (downloaded on first use)")),
                          io.Combo.Input("variant", options=["sd2.1", "sd1.5"], default="sd2.1"),
                          io.Float.Input("lora_strength", default=default_of(GenerateSettings, "lora_strength"), min=0.0, max=10.0, step=0.05, tooltip=(
                              "1.0 = the trained scale (alpha/r = 0.25); 0 = the authors' pinned code (LoRA dropped); "
                              "4.0 = diffusers >= 0.29 (LoRA at 1.0)")),
                          io.Float.Input("au_scale", default=default_of(GenerateSettings, "au_scale"), min=0.0, max=10.0,
                                         step=0.05),
                      ], [io.Model.Output()])

    @classmethod
    def execute(cls, model, fineface_weights: str, variant: str, lora_strength: float, au_scale: float):
        from ..magicface_core.assets import resolve_fineface
        sd15 = variant == "sd1.5"
        check_base_width(context_width(model), sd15, "the MODEL")  # before any download
        folder = resolve_fineface(fineface_weights, sd15_variant=sd15)
        return io.NodeOutput(apply_fineface(model, folder, lora_strength, au_scale, sd15))


def _slider(key: str, name: str):
    return io.Float.Input(key, default=0.0, min=0.0, max=5.0, step=0.1, display_mode=io.NumberDisplay.slider,
                          tooltip=f"{name}: {AU_ACTIONS[name]} (0..5)")


class FineFaceAUConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceFineFaceAUConditioning", "FineFace AU Conditioning",
                      "Attaches absolute AU intensities (0..5) to a CONDITIONING for a FineFace-patched MODEL: "
                      "AU Estimate's output (a photo's expression on a new face), else the sliders + a preset.", [
                          io.Conditioning.Input("conditioning"),
                          *[_slider(key, name) for key, name in SLIDERS.items()],
                          io.Combo.Input("preset", options=[PRESET_NONE, *EMOTION_PRESETS], default=PRESET_NONE, optional=True),
                          io.Float.Input("preset_strength", default=2.0, min=0.0, max=5.0, step=0.1, optional=True),
                          AUs.Input("aus", optional=True, tooltip="absolute AUs, e.g. from AU Estimate; replaces the sliders"),
                      ], [io.Conditioning.Output()])

    @classmethod
    def execute(cls, conditioning, preset: str = PRESET_NONE, preset_strength: float = 2.0, aus=None, **sliders):
        if aus is None:
            aus = AUVector.from_dict({SLIDERS[k]: float(v) for k, v in sliders.items() if k in SLIDERS})
            if preset != PRESET_NONE:
                aus = aus + emotion_preset(preset, preset_strength)
        aus = check_aus(aus)
        return io.NodeOutput([[c[0], {**c[1], FINEFACE_AU_KEY: aus}] for c in conditioning])


NODES = [FineFaceApply, FineFaceAUConditioning]
assert set(SLIDERS.values()) <= set(AU_NAMES)
