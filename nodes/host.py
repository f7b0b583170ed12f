"""The one place the nodes reach ComfyUI's services; plain fallbacks when ComfyUI is absent.

Model folders (``folder_paths``), devices and memory management (``comfy.model_management``,
``ModelPatcher``), the progress bar and the Cancel button. Importing this module imports
nothing heavy and changes nothing in ComfyUI; folders are registered on first use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..magicface_core import devices

logger = logging.getLogger(__name__)

MODEL_FOLDER = "magicface"

try:  # ComfyUI puts its own modules on the path; outside it these imports fail.
    import comfy.model_management as _mm
    import comfy.utils as _comfy_utils
    import folder_paths as _folder_paths
except ImportError:
    _mm = _comfy_utils = _folder_paths = None


def in_comfyui() -> bool:
    return _mm is not None


# --- devices ---------------------------------------------------------------------------------

def torch_device() -> torch.device:
    return _mm.get_torch_device() if in_comfyui() else devices.default_device()


def offload_device() -> torch.device:
    return _mm.unet_offload_device() if in_comfyui() else torch.device("cpu")


def intermediate_device() -> torch.device:
    return _mm.intermediate_device() if in_comfyui() else torch.device("cpu")


def model_dtype(choice: str) -> torch.dtype:
    """``auto`` follows ComfyUI's choice for a UNet of SD 1.5's size on this device."""
    if choice != "auto":
        return devices.DTYPES[choice]
    device = torch_device()
    if not in_comfyui():
        return devices.default_dtype(device)
    return _mm.unet_dtype(device, model_params=860_000_000,
                          supported_dtypes=[torch.bfloat16, torch.float16, torch.float32])


class MagicFaceUNet(torch.nn.Module):
    """What ModelPatcher manages. It sets `.device` on its model, which diffusers models make read-only."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet


class ManagedModule:
    """A module that ComfyUI's memory management may load to the GPU and offload again."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.patcher = None
        if in_comfyui():
            import comfy.model_patcher

            self.patcher = comfy.model_patcher.ModelPatcher(MagicFaceUNet(module), load_device=torch_device(),
                                                            offload_device=offload_device())

    def load(self) -> None:
        """Bring the module to the compute device (others may be offloaded to make room)."""
        if self.patcher is not None:
            # Fully: plain torch modules cannot run with some weights left on the CPU.
            _mm.load_models_gpu([self.patcher], force_full_load=True)
        else:
            self.module.to(torch_device())


# --- progress and cancel ---------------------------------------------------------------------

class Progress:
    """ComfyUI's progress bar for this node, or nothing."""

    def __init__(self, total: int):
        self._bar = _comfy_utils.ProgressBar(total) if in_comfyui() else None

    def update(self, done: int, total: int, preview=None) -> None:
        if self._bar is not None and total > 0:
            self._bar.update_absolute(done, total, preview)


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    if in_comfyui():
        _mm.throw_exception_if_processing_interrupted()


def sampling_callback(total: int):
    """A sampler callback ``(step, total, denoised)``: progress bar with ComfyUI's live preview of the
    step's estimate (the user's preview setting, as KSampler), and Cancel honoured at every step."""
    progress = Progress(total)
    preview = latent_previewer()

    def callback(step: int, steps: int, denoised) -> None:
        progress.update(step, steps, preview(denoised) if preview is not None else None)
        check_interrupt()

    return callback


def latent_previewer():
    """``unscaled SD 1.5 latents -> ComfyUI preview`` for the preview method in force (per prompt or
    ``--preview-method``), or None when previews are off or outside ComfyUI."""
    if not in_comfyui():
        return None
    import comfy.latent_formats
    import latent_preview

    latent_format = comfy.latent_formats.SD15()
    previewer = latent_preview.get_previewer(torch_device(), latent_format)
    if previewer is None:
        return None
    return lambda latents: previewer.decode_latent_to_preview_image("JPEG", latent_format.process_in(latents))


def report_download(done: int, total: int) -> None:
    """A download's progress on the bar of the node running now (one function: shared toolkits keep it)."""
    Progress(100).update(int(100 * done / total) if total else 0, 100)


# --- model folders ---------------------------------------------------------------------------

def magicface_dirs() -> list[Path]:
    """``models/magicface`` (first) and any extra paths from ``extra_model_paths.yaml``."""
    if not in_comfyui():
        from ..magicface_core.assets import cache_dir

        return [Path(os.environ.get("MAGICFACE_MODELS") or cache_dir())]
    default = os.path.join(_folder_paths.models_dir, MODEL_FOLDER)
    _folder_paths.add_model_folder_path(MODEL_FOLDER, default, is_default=True)
    return [Path(p) for p in _folder_paths.get_folder_paths(MODEL_FOLDER)]


def weights_root() -> Path:
    """Where preprocessing weights are downloaded: ``models/magicface/<backend>/``."""
    return magicface_dirs()[0]


def preprocessing_search_dirs() -> tuple[Path, ...]:
    """Folders that may already hold a preprocessing file, e.g. a full download of the authors' repo."""
    dirs = []
    for root in magicface_dirs():
        if root.is_dir():
            dirs.append(root)
            dirs.extend(p for p in root.iterdir() if p.is_dir())
    return tuple(dirs)
