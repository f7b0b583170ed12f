"""The face networks of one face-tools choice, under ComfyUI's services (weights folder, memory
management, download progress). Shared per process and per choice; nothing here changes state that
another node or graph sees."""

from __future__ import annotations

import torch

from ..magicface_core.faces.toolkit import FaceToolkit, FaceToolsChoice, shared_toolkit
from . import host


def face_toolkit(choice: FaceToolsChoice | None = None) -> FaceToolkit:
    """The face networks of a :class:`~magicface_core.faces.toolkit.FaceToolsChoice` (default: the
    defaults), weights under models/magicface, ComfyUI's progress bar for downloads. Shared per process
    and per choice, and never changed by a caller. In ComfyUI each network is built on the offload
    device and brought to the GPU by ComfyUI's memory management when used ("unload models" frees it)."""
    choice = choice or FaceToolsChoice()
    device, placement = (str(host.offload_device()), managed_placement) if host.in_comfyui() else (
        str(host.torch_device()), None)
    return shared_toolkit(str(host.weights_root()), device, choice.detector, choice.jaw, placement,
                          host.preprocessing_search_dirs(), host.report_download)


def managed_placement(module: torch.nn.Module):
    """A network under ComfyUI's memory management: returns what loads it before each use."""
    return host.ManagedModule(module).load
