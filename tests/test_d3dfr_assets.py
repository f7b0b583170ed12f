"""The 3DMM files are found by name in the hub repo's file list, whichever folder holds them."""

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest

from magicface_core import WeightsNotFoundError
from magicface_core.assets import BFM, D3DFR, ensure_weight


class FakeHub:
    """The part of HfApi the downloader uses, over local files."""

    def __init__(self, files: dict, fail: Exception | None = None):
        self.files, self.fail = files, fail

    def __call__(self):
        return self

    def list_repo_files(self, repo, revision=None):
        if self.fail:
            raise self.fail
        return ["README.md", "denoising_unet/config.json", *self.files]

    def get_paths_info(self, repo, paths, revision=None):
        return [SimpleNamespace(lfs=SimpleNamespace(sha256=hashlib.sha256(self.files[p].read_bytes()).hexdigest()))
                for p in paths]


@pytest.mark.parametrize("folder", ["checkpoints/third_party", "third_party_files"])
def test_found_by_name_downloaded_and_checked(tmp_path, monkeypatch, folder):
    monkeypatch.delenv("MAGICFACE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    files = {}
    for spec in (D3DFR, BFM):
        source = tmp_path / "hub" / spec.filename
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(spec.filename.encode() * 1000)
        files[f"{folder}/{spec.filename}"] = source
    hub = FakeHub(files)
    monkeypatch.setattr(huggingface_hub, "HfApi", hub)
    asked = []

    def hf_hub_download(repo, path, *, revision=None, local_dir=None, **kwargs):
        asked.append((repo, path))
        destination = Path(local_dir) / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[path], destination)
        return str(destination)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    for spec in (D3DFR, BFM):
        path = ensure_weight(spec, tmp_path / "models")
        assert path == tmp_path / "models" / "d3dfr" / spec.filename
        assert path.read_bytes() == (tmp_path / "hub" / spec.filename).read_bytes()
    assert asked == [("mengtingwei/magicface", f"{folder}/{D3DFR.filename}"),
                     ("mengtingwei/magicface", f"{folder}/{BFM.filename}")]
    # A file that is not the hub's is refused and not kept.
    files[f"{folder}/{BFM.filename}"] = tmp_path / "hub" / D3DFR.filename
    hub.get_paths_info = lambda repo, paths, revision=None: [SimpleNamespace(lfs=SimpleNamespace(sha256="0" * 64))]
    with pytest.raises(WeightsNotFoundError, match="corrupt"):
        ensure_weight(BFM, tmp_path / "other")
    assert not BFM.path(tmp_path / "other").exists()


def test_unreachable_hub_and_missing_file_say_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv("MAGICFACE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub({}, fail=ConnectionError("no route to host")))
    with pytest.raises(WeightsNotFoundError, match=r"d3dfr_res50_nofc.pth is needed .* no route to host.*"
                       r"checkpoints/third_party/ or third_party_files/"):
        ensure_weight(D3DFR, tmp_path)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub({}))
    with pytest.raises(WeightsNotFoundError, match="has no file named BFM_model_front.mat"):
        ensure_weight(BFM, tmp_path)
    monkeypatch.setenv("MAGICFACE_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match=r"BFM_model_front.mat is needed.*huggingface.co/mengtingwei/magicface"):
        ensure_weight(BFM, tmp_path)
