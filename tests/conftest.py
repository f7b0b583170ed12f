import logging
from pathlib import Path

import pytest
import torch

from tests.factories import TINY, random_published_parts, write_published_checkpoint

SHARED = Path(__file__).resolve().parents[2] / "shared"
OFFICIAL = SHARED / "testdata" / "official"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_parts():
    """(config, state) per UNet, published key names, random weights."""
    return random_published_parts(TINY, seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_parts) -> Path:
    return write_published_checkpoint(tmp_path_factory.mktemp("magicface") / "magicface", parts=tiny_parts)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from magicface_core import MagicFace

    return MagicFace.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)


def pytest_configure(config):
    # diffusers warns on every dtype cast of a model, even with nothing to keep in fp32
    logging.getLogger("diffusers.models.modeling_utils").setLevel(logging.ERROR)


REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="session")
def pack():
    return load_pack()
