"""FineFace in ComfyUI: a MODEL patch (attn2 AU term + LoRA, in fineface_patch.py) and a node that puts
AUs on a CONDITIONING. The stock KSampler, schedulers, previews and memory management do the rest."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io

from ..magicface_core import AU_ACTIONS, AU_NAMES, EMOTION_PRESETS, AUVector, WeightsNotFoundError, emotion_preset
from ..magicface_core.assets import FINEFACE, FINEFACE_REPO, fetch_fineface
from ..magicface_core.fineface import weights as ffw
from ..magicface_core.fineface.checks import check_aus, check_base_width
from ..magicface_core.fineface.generate import GenerateSettings
from ..magicface_core.settings import default_of
from . import host
from .au_nodes import PRESET_NONE, SLIDERS
from .fineface_patch import FINEFACE_AU_KEY, apply_fineface, context_width
from .schema import AUDelta, AUs, schema

DOWNLOAD_CHOICE = f"download {FINEFACE_REPO} ({FINEFACE.approx_mb:.0f} MB)"


def available_weights() -> dict[str, Path]:
    """Folders under every magicface model folder that hold FineFace's attention file (either variant)."""
    found: dict[str, Path] = {}
    for root in host.magicface_dirs():
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.iterdir() if p.is_dir()):
            if (path / ffw.ATTN_PROCESSORS).is_file() or (path / ffw.SD15_ATTN_PROCESSORS).is_file():
                found.setdefault(path.name, path)
    return found


def resolve(name: str, sd15_variant: bool) -> Path:
    weights = available_weights()
    if name in weights:
        return weights[name]
    root = host.magicface_dirs()[0]
    if name == DOWNLOAD_CHOICE:  # into models/magicface/Tvaranka--fineface, listed from then on
        return fetch_fineface(root=root, progress=host.report_download, sd15_variant=sd15_variant)
    raise WeightsNotFoundError(
        f"no FineFace weights named {name!r} in {', '.join(str(d) for d in host.magicface_dirs())}. Put "
        f"{', '.join(ffw.FILES)} from https://huggingface.co/{FINEFACE_REPO} into {FINEFACE.path(root)} "
        f"(or pick '{DOWNLOAD_CHOICE}'), then refresh the page."
    )


class FineFaceApply(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceFineFaceApply", "FineFace Apply",
                      "Patches an SD 2.1-base MODEL (or SD 1.5 for the variant) with FineFace's AU cross-attention "
                      "and LoRA. Put the AUs on the positive conditioning with FineFace AU Conditioning.", [
                          io.Model.Input("model"),
                          io.Combo.Input("fineface_weights", options=list(available_weights()) + [DOWNLOAD_CHOICE],
                                         tooltip=("a folder under models/magicface holding attn_processors.ckpt, "
                                                  "au_encoder.ckpt and pytorch_lora_weights.safetensors; the "
                                                  "download choice fetches the authors' files there")),
                          io.Combo.Input("variant", options=["sd2.1", "sd1.5"], default="sd2.1"),
                          io.Float.Input("lora_strength", default=default_of(GenerateSettings, "lora_strength"), min=0.0,
                                         max=10.0, step=0.05, tooltip=(
                              "1.0 = the trained scale (alpha/r = 0.25); 0 = the authors' pinned code (LoRA dropped); "
                              "4.0 = diffusers >= 0.29 (LoRA at 1.0)")),
                          io.Float.Input("au_scale", default=default_of(GenerateSettings, "au_scale"), min=0.0, max=10.0,
                                         step=0.05),
                      ], [io.Model.Output()])

    @classmethod
    def execute(cls, model, fineface_weights: str, variant: str, lora_strength: float, au_scale: float):
        sd15 = variant == "sd1.5"
        check_base_width(context_width(model), sd15, "the MODEL")  # before any download
        folder = resolve(fineface_weights, sd15)
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
                          AUDelta.Input("au_delta", optional=True, tooltip=(
                              "added to the AUs above; a batch of rows (e.g. from AU Sweep) gives one image per "
                              "row: set the latent's batch size to the number of rows")),
                      ], [io.Conditioning.Output()])

    @classmethod
    def execute(cls, conditioning, preset: str = PRESET_NONE, preset_strength: float = 2.0, aus=None,
                au_delta=None, **sliders):
        if aus is None:
            aus = AUVector.from_dict({SLIDERS[k]: float(v) for k, v in sliders.items() if k in SLIDERS})
            if preset != PRESET_NONE:
                aus = aus + emotion_preset(preset, preset_strength)
        if au_delta is not None:
            aus = aus + au_delta
        aus = check_aus(aus)
        return io.NodeOutput([[c[0], {**c[1], FINEFACE_AU_KEY: aus}] for c in conditioning])


NODES = [FineFaceApply, FineFaceAUConditioning]
assert set(SLIDERS.values()) <= set(AU_NAMES)
