"""pyproject.toml as the Comfy Registry reads it (https://docs.comfy.org/registry/specifications and
comfy-cli's parser): the fields it needs, in the forms it accepts."""

import re
import tomllib

from PIL import Image

from tests.support.paths import COMFYUI_ARCHIVES, REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT, COMFY = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
# The accelerators comfy-cli accepts; any other "Environment ::" classifier drops them all.
ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend", "GPU :: Apple Metal"}
VERSION = r"\d+\.\d+\.\d+"


def test_the_registry_id_and_version_have_the_registry_form():
    name = PROJECT["name"]
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name) and not re.search(r"[_.-]{2}", name)
    assert name in (REPO / "README.md").read_text()  # users install by it
    assert re.fullmatch(VERSION, PROJECT["version"])
    assert not COMFY["DisplayName"].lower().startswith("comfyui")  # the registry's naming advice


def test_classifiers_name_the_operating_systems_and_gpus():
    classifiers = PROJECT["classifiers"]
    systems = [c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")]
    accelerators = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")]
    assert systems and all(s.startswith(("Microsoft", "POSIX", "MacOS", "OS Independent")) for s in systems)
    assert accelerators and set(accelerators) <= ACCELERATORS


def test_requires_comfyui_is_the_oldest_tested_comfyui():
    # under [tool.comfy], where comfy-cli reads it (in [project] it is ignored)
    assert "requires-comfyui" not in PROJECT
    assert COMFY["requires-comfyui"] == f">={next(iter(COMFYUI_ARCHIVES))}"
    assert f'COMFYUI_VERSIONS:-{" ".join(COMFYUI_ARCHIVES)}' in (REPO / ".ci" / "run").read_text()


def test_the_icon_is_a_small_picture_in_this_repository_by_its_raw_url():
    repository = PROJECT["urls"]["Repository"]
    owner_and_name = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)", repository).group(1)
    prefix = f"https://raw.githubusercontent.com/{owner_and_name}/main/"
    assert COMFY["PublisherId"] and COMFY["Icon"].startswith(prefix)
    icon = REPO / COMFY["Icon"].removeprefix(prefix)
    with Image.open(icon) as picture:
        assert picture.format in ("PNG", "JPEG", "GIF") and picture.width <= 800 and picture.height <= 400
        assert picture.width == picture.height  # shown square in ComfyUI-Manager and the registry
