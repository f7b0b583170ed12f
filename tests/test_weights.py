import hashlib
import shutil
import subprocess

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
