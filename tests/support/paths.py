"""Where the repository, the shared test data and the pack are."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
OFFICIAL = SHARED / "testdata" / "official"  # the authors' example portraits


def scratch_dir(prefix: str = "magicface-") -> Path:
    """A new temp folder, removed when the process exits (benchmarks and tools write GBs of random weights)."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


COMFYUI_ARCHIVES = {  # the ComfyUI source snapshots in shared/, oldest supported first
    "0.8.0": SHARED / "comfyui" / "ComfyUI-v0.8.0.tar.gz",
    "0.33.0": SHARED / "comfyui" / "ComfyUI-v0.33.0.tar.gz",
}


def comfy_source() -> Path:
    """A ComfyUI source tree whose ``comfy_api`` the pack's V3 nodes import: ``COMFYUI_DIR`` when set, else
    the oldest snapshot in shared/ unpacked once into a temp folder. Only its pure-Python API is used
    outside the integration tests; no server starts."""
    import os
    import tarfile
    import tempfile

    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"])
    target = Path(tempfile.gettempdir()) / "magicface-comfy-source-0.8.0"
    if not (target / "ComfyUI" / "comfy_api").is_dir():
        staging = Path(tempfile.mkdtemp(prefix="magicface-comfy-unpack-"))
        with tarfile.open(COMFYUI_ARCHIVES["0.8.0"]) as archive:
            archive.extractall(staging, filter="data")
        try:
            staging.rename(target)  # atomic: a parallel session either sees all of it or unpacks its own
        except OSError:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return target / "ComfyUI"


def put_comfy_api_on_path() -> Path:
    """Make ``comfy_api.latest`` importable (appended, so the pack's own modules win any name clash)."""
    import sys

    source = comfy_source()
    if str(source) not in sys.path:
        sys.path.append(str(source))
        import torch

        if not torch.cuda.is_available():
            import comfy.cli_args  # before anything imports comfy.model_management, which reads it once

            comfy.cli_args.args.cpu = True  # as `main.py --cpu`
    return source


def load_pack(name: str = "comfyui_magicface"):
    """Import the repository as ComfyUI does: a package from its folder's __init__.py."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    put_comfy_api_on_path()  # ComfyUI always has it; without it the pack registers no nodes
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
