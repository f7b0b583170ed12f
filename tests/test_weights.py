import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from magicface_core import WeightsNotFoundError
from magicface_core.assets import ALL_FILES, WeightFile, ensure_weight


def _spec(source, **check):
    return WeightFile("backend", "file.bin", source.as_uri(), 1, "test", **check)


def test_existing_file_is_used_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGICFACE_OFFLINE", "1")
    spec = _spec(tmp_path / "nowhere", sha256="0" * 64)
    spec.path(tmp_path).parent.mkdir()
    spec.path(tmp_path).write_bytes(b"weights")
    assert ensure_weight(spec, tmp_path) == spec.path(tmp_path)
    elsewhere = tmp_path / "published"
    elsewhere.mkdir()
    shutil.move(spec.path(tmp_path), elsewhere / "file.bin")
    assert ensure_weight(spec, tmp_path, search=(elsewhere,)) == elsewhere / "file.bin"


def test_offline_error_names_file_url_and_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = _spec(tmp_path / "remote.bin", sha256="0" * 64)
    with pytest.raises(WeightsNotFoundError) as info:
        ensure_weight(spec, tmp_path / "models")
    message = str(info.value)
    assert "file.bin" in message and spec.url in message and str(spec.path(tmp_path / "models")) in message


def test_download_is_checked_and_reports_progress(tmp_path, monkeypatch):
    monkeypatch.delenv("MAGICFACE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    source = tmp_path / "remote.bin"
    source.write_bytes(b"x" * 3_000_000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    seen = []
    path = ensure_weight(_spec(source, sha256=digest), tmp_path / "a", progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == source.read_bytes()
    assert seen[-1] == (3_000_000, 3_000_000) and len(seen) >= 3
    assert ensure_weight(_spec(source, sha256_prefix=digest[:10]), tmp_path / "b").is_file()
    with pytest.raises(WeightsNotFoundError, match="corrupt"):
        ensure_weight(_spec(source, sha256="f" * 64), tmp_path / "c")
    assert not _spec(source).path(tmp_path / "c").exists()  # nothing half-written is kept
    with pytest.raises(WeightsNotFoundError, match="download failed"):
        ensure_weight(_spec(tmp_path / "missing.bin", sha256=digest), tmp_path / "d")


def test_git_blob_check_matches_git(tmp_path):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    source = tmp_path / "remote.bin"
    source.write_bytes(b"model bytes\n" * 1000)
    blob = subprocess.run([git, "hash-object", str(source)], capture_output=True, text=True, check=True).stdout.strip()
    assert ensure_weight(_spec(source, git_blob_sha1=blob), tmp_path / "a").is_file()
    with pytest.raises(WeightsNotFoundError):
        ensure_weight(_spec(source, git_blob_sha1="0" * 40), tmp_path / "b")


def test_every_registered_file_has_a_check_and_a_source():
    for spec in ALL_FILES:
        assert spec.url.startswith("https://")
        assert spec.sha256 or spec.sha256_prefix or spec.git_blob_sha1 or spec.hf_repo


# --- one registry, one downloader: offline, path-or-repo, checksums, when "Downloading" is said -------

from magicface_core import assets  # noqa: E402


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network fails the test."""
    import huggingface_hub
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError(f"the network was contacted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    for name in ("hf_hub_download", "snapshot_download", "hf_hub_url"):
        monkeypatch.setattr(huggingface_hub, name, refuse)
    monkeypatch.setattr(assets, "_hub_checksum", refuse)


@pytest.mark.parametrize("call", [
    lambda: assets.resolve_magicface_weights("mengtingwei/magicface"),
    lambda: assets.resolve_sd15(None),
    lambda: assets.resolve_sd15("stable-diffusion-v1-5/stable-diffusion-v1-5", with_unet=True),
    lambda: assets.ensure_weight(assets.BISENET, assets.cache_dir()),
    lambda: assets.ensure_weight(assets.S3FD, assets.cache_dir()),
], ids=["magicface", "sd15", "sd15-with-unet", "bisenet-hub-file", "s3fd-url-file"])
def test_magicface_offline_alone_never_contacts_the_network(call, tmp_path, monkeypatch, no_network, caplog):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("MAGICFACE_OFFLINE", "1")
    monkeypatch.setenv("MAGICFACE_CACHE", str(tmp_path / "cache"))
    with caplog.at_level("INFO"), pytest.raises(WeightsNotFoundError, match="downloads are switched off"):
        call()
    assert "Downloading" not in caplog.text
    assert not any((tmp_path / "cache").rglob("*.*"))  # nothing half-written


def test_offline_folder_error_lists_the_missing_files_and_where_they_go(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("MAGICFACE_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as info:
        assets.fetch_magicface(root=tmp_path)
    message = str(info.value)
    assert "denoising_unet/diffusion_pytorch_model.safetensors" in message and "ID_enc/config.json" in message
    assert str(tmp_path / "mengtingwei--magicface") in message
    assert "https://huggingface.co/mengtingwei/magicface" in message


@pytest.mark.parametrize("text", ["models/magicfce", "./x", "../weights/magicface", "C:\\weights\\magicface",
                                  "weights/sub/magicface", "mine/magicface.safetensors", "magicface.pth",
                                  "~/magicface", "/no/such/folder"])
def test_a_path_that_does_not_exist_is_not_found_not_a_repo_id(text, tmp_path, monkeypatch, no_network, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAGICFACE_OFFLINE", raising=False)
    with caplog.at_level("INFO"), pytest.raises(WeightsNotFoundError, match="there is no such file or folder"):
        assets.resolve_magicface_weights(text)
    with pytest.raises(WeightsNotFoundError, match="there is no such file or folder"):
        assets.resolve_sd15(text)
    assert "Downloading" not in caplog.text


def test_an_owner_that_is_a_local_folder_makes_it_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert assets.is_repo_id("someone/magicface")
    (tmp_path / "someone").mkdir()
    assert not assets.is_repo_id("someone/magicface")
    assert assets.is_repo_id("mengtingwei/magicface") and assets.is_repo_id(assets.SD15_REPO)


def _fake_hub(monkeypatch, tmp_path, content=lambda repo, path: f"{repo}:{path}".encode()):
    """huggingface_hub's download replaced by one that writes ``content`` where it would (its real
    transfer, resume and HF_ENDPOINT are exercised in tests/test_downloads.py against a local hub)."""
    import huggingface_hub
    import huggingface_hub.constants

    asked = []
    # An empty hub cache: files a developer's own cache holds would not be "downloaded".
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))

    def hf_hub_download(repo, path, *, revision=None, local_dir=None, tqdm_class=None, **kwargs):
        asked.append((repo, path, revision))
        destination = Path(local_dir) / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(content(repo, path))
        if tqdm_class is not None:
            bar = tqdm_class(total=destination.stat().st_size, disable=True)
            bar.update(destination.stat().st_size)
            bar.close()
        return str(destination)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return asked


def test_hub_files_download_at_the_pinned_revision_into_one_folder(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MAGICFACE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    asked = _fake_hub(monkeypatch, tmp_path)
    monkeypatch.setattr(assets, "_hub_checksum",
                        lambda spec: ("sha256", hashlib.sha256(f"{spec.hf_repo}:{spec.hf_path}".encode()).hexdigest()))
    seen = []
    with caplog.at_level("INFO"):
        folder = assets.fetch_sd15(root=tmp_path / "cache", with_unet=True, progress=lambda d, t: seen.append((d, t)))
    assert folder == tmp_path / "cache" / "stable-diffusion-v1-5--stable-diffusion-v1-5"
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == \
        f"{assets.SD15_REPO}:unet/diffusion_pytorch_model.safetensors".encode()
    assert {revision for _, _, revision in asked} == {assets.SD15_REVISION}
    assert len(asked) == len(assets.SD15_WITH_UNET.files) and seen  # the progress hook is fed, even with bars off
    starts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Downloading")]
    assert len(starts) == len(asked)
    assert any("unet/diffusion_pytorch_model.safetensors (about 3.4 GB)" in m for m in starts)
    assert not [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith((".json", ".txt", ".safetensors"))]
    # Everything is there now: a second call neither downloads nor says so.
    caplog.clear()
    asked.clear()
    with caplog.at_level("INFO"):
        assert assets.fetch_sd15(root=tmp_path / "cache", with_unet=True) == folder
        assert assets.resolve_sd15(str(folder), with_unet=True) == folder
    assert not asked and "Downloading" not in caplog.text


def test_a_corrupt_hub_download_is_refused_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("MAGICFACE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _fake_hub(monkeypatch, tmp_path, lambda repo, path: b"not the parser")
    monkeypatch.setattr(assets, "_hub_checksum", lambda spec: ("sha256", "0" * 64))
    with pytest.raises(WeightsNotFoundError, match=r"corrupt \(\w{64}, expected 0{64}\)"):
        assets.ensure_weight(assets.BISENET, tmp_path / "models")
    assert not assets.BISENET.path(tmp_path / "models").exists()
    assert not [p for p in (tmp_path / "models").rglob("*") if p.is_file()]  # nothing half-written is kept


def test_downloading_is_logged_only_when_a_download_starts_with_its_size(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MAGICFACE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    source = tmp_path / "remote.bin"
    source.write_bytes(b"w" * 1000)
    spec = WeightFile("backend", "file.bin", source.as_uri(), 12, "test",
                      sha256=hashlib.sha256(source.read_bytes()).hexdigest())
    with caplog.at_level("INFO"):
        ensure_weight(spec, tmp_path / "root")
    assert [r.getMessage() for r in caplog.records if "Downloading" in r.getMessage()] == [
        f"Downloading file.bin (about 12 MB) from {source.as_uri()} to {spec.path(tmp_path / 'root')}"]
    caplog.clear()
    with caplog.at_level("INFO"):
        ensure_weight(spec, tmp_path / "root")
    assert "Downloading" not in caplog.text


def test_every_hub_entry_is_pinned_where_a_revision_is_known():
    for folder in assets.ALL_FOLDERS:
        assert folder.files and all(f.hf_repo == folder.repo and f.approx_mb > 0 for f in folder.files)
    assert all(f.revision == assets.SD15_REVISION for f in assets.SD15_WITH_UNET.files)
    assert len(assets.SD15_REVISION) == 40 and int(assets.SD15_REVISION, 16) >= 0
    assert {f.hf_path for f in assets.SD15_WITH_UNET.files} >= {
        "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors", "tokenizer/vocab.json"}
    assert 6.5 < assets.MAGICFACE_DOWNLOAD_GB < 7.5
