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


def load_pack(name: str = "comfyui_magicface"):
    """Import the repository as ComfyUI does: a package from its folder's __init__.py."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
