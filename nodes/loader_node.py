"""MagicFace Model Loader: the two UNets from ``models/magicface``."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io

from ..magicface_core import MagicFace, WeightsNotFoundError
from ..magicface_core.assets import MAGICFACE, MAGICFACE_DOWNLOAD_GB, MAGICFACE_REPO, fetch_magicface
from ..magicface_core.devices import DeviceSettings
from ..magicface_core.model.checkpoint import is_published_layout
from ..magicface_core.settings import default_of
from . import host
from .loaded_model import LoadedMagicFace
from .schema import MagicFaceModel, schema

DOWNLOAD_CHOICE = f"download {MAGICFACE_REPO} ({MAGICFACE_DOWNLOAD_GB:.1f} GB)"
DTYPE_CHOICES = ["auto", "fp16", "bf16", "fp32"]  # devices.DTYPE_CHOICES in the order saved workflows know


def available_weights() -> dict[str, Path]:
    """Published-layout folders and our .safetensors files under every magicface model folder."""
    found: dict[str, Path] = {}
    for root in host.magicface_dirs():
        if not root.is_dir():
            continue
        if is_published_layout(root):
            found.setdefault(root.name, root)
        for path in sorted(root.iterdir()):
            if path.is_dir() and is_published_layout(path):
                found.setdefault(path.name, path)
            elif path.suffix == ".safetensors":
                found.setdefault(path.name, path)
    return found


def resolve(name: str) -> Path:
    weights = available_weights()
    if name in weights:
        return weights[name]
    root = host.magicface_dirs()[0]
    target = MAGICFACE.path(root)
    if name == DOWNLOAD_CHOICE:
        return fetch_magicface(root=root, progress=host.report_download)
    raise WeightsNotFoundError(
        f"no MagicFace weights named {name!r} in {', '.join(str(d) for d in host.magicface_dirs())}. "
        f"Download denoising_unet/ and ID_enc/ from https://huggingface.co/{MAGICFACE_REPO} into {target} "
        f"(or pick '{DOWNLOAD_CHOICE}'), then refresh the page."
    )


class MagicFaceModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceModelLoader", "MagicFace Model Loader",
                      "Loads MagicFace's ID encoder and AU-conditioned denoising UNet (SD 1.5 sized).", [
                          io.Combo.Input("weights", options=list(available_weights()) + [DOWNLOAD_CHOICE], tooltip=(
                              "A folder in the published layout (denoising_unet/ + ID_enc/) or a .safetensors file "
                              "written by this pack, under models/magicface. The download choice fetches the "
                              "authors' weights there.")),
                          io.Combo.Input("dtype", options=DTYPE_CHOICES, default=default_of(DeviceSettings, "dtype"),
                                         tooltip="auto: half precision on GPU, fp32 on CPU"),
                      ], [MagicFaceModel.Output(display_name="magicface_model")])

    @classmethod
    def execute(cls, weights: str, dtype: str):
        model = MagicFace.from_pretrained(resolve(weights), device=host.offload_device(), dtype=host.model_dtype(dtype))
        model.set_execution_device(host.torch_device())  # ComfyUI moves the weights there before each call
        return io.NodeOutput(LoadedMagicFace.wrap(model, weights))
