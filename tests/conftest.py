import logging
from pathlib import Path

import pytest
import torch

from tests.support.factories import TINY, random_published_parts, write_face_weights, write_published_checkpoint
from tests.support.paths import OFFICIAL, REPO, SHARED, load_pack, put_comfy_api_on_path  # noqa: F401 - tests import these from here too

# The nodes are V3 nodes (comfy_api.latest); the node tests call them in this process, so ComfyUI's
# pure-Python API must import here too (COMFYUI_DIR, or the oldest snapshot in shared/).
put_comfy_api_on_path()  # and ComfyUI set to the CPU where there is no GPU


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
def face_weights(tmp_path_factory) -> Path:
    """Every preprocessing weight file, random, in the published formats. Written once (365 MB on disk)
    and only read: tests that need them inside a models folder link them there (factories.link_face_weights)."""
    return write_face_weights(tmp_path_factory.mktemp("face-weights"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from magicface_core import MagicFace

    return MagicFace.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)


def pytest_configure(config):
    # diffusers warns on every dtype cast of a model, even with nothing to keep in fp32
    logging.getLogger("diffusers.models.modeling_utils").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def pack():
    return load_pack()
