"""Downloads that resume, against local servers on 127.0.0.1 (issue 21).

- URL files (LibreFace, face-alignment): a server that drops the connection halfway; the next
  try asks for the rest with a ``Range`` request and the file checks out.
- Hub files: a server answering the hub's endpoints that huggingface_hub uses (HEAD/GET
  ``/<repo>/resolve/<revision>/<path>``, POST ``/api/models/<repo>/paths-info/<revision>``),
  reached through ``HF_ENDPOINT`` in a child process (huggingface_hub reads it at import), and a
  pre-filled hub cache that is reused offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from magicface_core import WeightsNotFoundError, assets
from magicface_core.assets import WeightFile, ensure_weight

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PAYLOAD = bytes(range(256)) * 8192  # 2 MiB


class Server:
    """Serves ``files`` (URL path -> bytes) like a CDN or like the hub; the first GET of each path in
    ``drop`` sends half the body and closes the connection. ``log`` holds (method, path, Range)."""

    def __init__(self, files: dict[str, bytes], drop: set[str] = frozenset(), hub_commit: str | None = None):
        self.files, self.drop, self.commit, self.log = files, set(drop), hub_commit, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _head(self, body: bytes, status: int = 200, extra: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()

            def _file(self):
                server.log.append((self.command, self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self._head(b"", 404)
                    return None, None
                headers = {}
                if server.commit is not None:
                    digest = hashlib.sha256(body).hexdigest()
                    headers = {"X-Repo-Commit": server.commit, "ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"',
                               "X-Linked-Size": str(len(body)), "Accept-Ranges": "bytes"}
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                if start >= len(body) and start:
                    self._head(b"", 416, headers)
                    return None, None
                part = body[start:]
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                self._head(part, 206 if start else 200, headers)
                return body, part

            def do_HEAD(self):
                self._file()

            def do_GET(self):
                body, part = self._file()
                if part is None:
                    return
                if self.path in server.drop:
                    server.drop.discard(self.path)
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

            def do_POST(self):  # the hub's paths-info: what huggingface_hub checks a file against
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                server.log.append(("POST", self.path, None))
                repo = self.path.split("/api/models/")[1].split("/paths-info/")[0]
                answer = []
                for path in form.get("paths", []):
                    body = server.files.get(f"/{repo}/resolve/{server.commit}/{path}")
                    if body is not None:
                        answer.append({"type": "file", "path": path, "size": len(body),
                                       "oid": hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest(),
                                       "lfs": {"oid": hashlib.sha256(body).hexdigest(), "size": len(body),
                                               "pointerSize": 134}})
                data = json.dumps(answer).encode()
                self._head(data, 200, {"Content-Type": "application/json"})
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("MAGICFACE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


# --- URL files: resumable HTTP ---------------------------------------------------------------------

def test_an_interrupted_url_download_resumes_with_a_range_request(tmp_path, online):
    """before: the partial file lived in a temporary folder deleted on the error; the next try
    started from zero."""
    server = Server({"/weights/s3fd.pth": PAYLOAD}, drop={"/weights/s3fd.pth"})
    try:
        spec = WeightFile("face_alignment", "s3fd.pth", server.url + "/weights/s3fd.pth", 2, "test",
                          sha256=hashlib.sha256(PAYLOAD).hexdigest())
        with pytest.raises(WeightsNotFoundError, match="download failed"):
            ensure_weight(spec, tmp_path)
        target = spec.path(tmp_path)
        assert not target.exists()
        kept = [p for p in target.parent.iterdir() if p.name.endswith(".partial")]
        size = kept[0].stat().st_size if len(kept) == 1 else None
        assert size == len(PAYLOAD) // 2  # kept under its own name beside the target, with every byte received
        seen = []
        assert ensure_weight(spec, tmp_path, progress=lambda d, t: seen.append((d, t))) == target
        assert target.read_bytes() == PAYLOAD
        assert server.log[-1] == ("GET", "/weights/s3fd.pth", f"bytes={size}-")  # only the rest was asked for
        assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
        assert sorted(p.name for p in target.parent.iterdir()) == ["s3fd.pth"]  # nothing left beside it
    finally:
        server.close()


def test_a_resumed_download_that_does_not_check_out_is_dropped(tmp_path, online):
    server = Server({"/w.pth": PAYLOAD})
    try:
        spec = WeightFile("b", "w.pth", server.url + "/w.pth", 2, "test", sha256=hashlib.sha256(PAYLOAD).hexdigest())
        target = spec.path(tmp_path)
        target.parent.mkdir(parents=True)
        # bytes left by an earlier try that are not the start of this file
        key = hashlib.sha256(spec.url.encode()).hexdigest()[:12]
        (target.parent / f".w.pth.{key}.partial").write_bytes(b"\xff" * 1000)
        with pytest.raises(WeightsNotFoundError, match="corrupt"):
            ensure_weight(spec, tmp_path)
        assert list(target.parent.iterdir()) == []  # the bad bytes are not resumed from again
        assert ensure_weight(spec, tmp_path).read_bytes() == PAYLOAD
    finally:
        server.close()


# --- hub files: huggingface_hub through HF_ENDPOINT ------------------------------------------------

def _child(code: str, env: dict) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_hub_files_download_through_huggingface_hub_resume_and_check_out(tmp_path):
    """before: urllib streamed into a temporary folder deleted on any error; now huggingface_hub
    downloads (and resumes within the same call, with a Range request) at the pinned revision."""
    repo = "someone/magicface"
    files = {f"/{repo}/resolve/{COMMIT}/denoising_unet/config.json": b'{"x": 1}',
             f"/{repo}/resolve/{COMMIT}/denoising_unet/diffusion_pytorch_model.safetensors": PAYLOAD}
    big = f"/{repo}/resolve/{COMMIT}/denoising_unet/diffusion_pytorch_model.safetensors"
    server = Server(files, drop={big}, hub_commit=COMMIT)
    try:
        # huggingface_hub writes 10 MiB chunks; smaller ones let a 2 MiB file be cut after a written chunk.
        code = f"""
import huggingface_hub.constants
huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE = 1 << 16
from magicface_core import assets
seen = []
for path in ("denoising_unet/config.json", "denoising_unet/diffusion_pytorch_model.safetensors"):
    spec = assets.hub_file({repo!r}, path, 2, "test", {COMMIT!r})
    print(assets.ensure_weight(spec, {str(tmp_path / 'models')!r}, progress=lambda d, t: seen.append((d, t))))
print(seen[-1:])
"""
        env = {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(tmp_path / "hub-cache"), "HF_HUB_DISABLE_XET": "1",
               "MAGICFACE_OFFLINE": "", "HF_HUB_OFFLINE": "", "HF_TOKEN": ""}
        done = _child(code, env)
        assert done.returncode == 0, done.stderr
        folder = tmp_path / "models" / "someone--magicface" / "denoising_unet"
        assert (folder / "diffusion_pytorch_model.safetensors").read_bytes() == PAYLOAD
        assert (folder / "config.json").read_bytes() == b'{"x": 1}'
        assert f"[({len(PAYLOAD)}, {len(PAYLOAD)})]" in done.stdout  # the progress hook saw the whole file
        gets = [r for r in server.log if r[0] == "GET" and r[1] == big]
        assert len(gets) == 2 and gets[0][2] is None and gets[1][2].startswith("bytes=")  # resumed, not restarted
        assert any(r[0] == "POST" and "paths-info" in r[1] for r in server.log)  # the LFS sha256 was checked
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
        # A second run finds both files and contacts nobody.
        server.log.clear()
        assert _child(code, env).returncode == 0 and server.log == []
    finally:
        server.close()


BODY = b'{"_class_name": "AutoencoderKL"}'


def _hub_cache_holding(root: Path, spec, monkeypatch, body: bytes = BODY) -> Path:
    """A Hugging Face cache as huggingface_hub lays it out (a blob named by its git id, a symlinked
    snapshot at the spec's revision), made the one huggingface_hub reads; returns the blob."""
    import huggingface_hub.constants as hub_constants

    repo_dir = root / f"models--{spec.hf_repo.replace('/', '--')}"
    blob = repo_dir / "blobs" / hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(body)
    snapshot = repo_dir / "snapshots" / spec.revision / spec.hf_path
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(root))
    return blob


def test_a_file_in_the_users_hub_cache_is_reused_offline(tmp_path, monkeypatch):
    """before: a user with SD 1.5 in the Hugging Face cache downloaded it again (and offline, was
    told it was missing)."""
    spec = assets.SD15.files[0]  # vae/config.json at the pinned revision
    blob = _hub_cache_holding(tmp_path / "hub-cache", spec, monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = ensure_weight(spec, tmp_path / "models")
    assert path == spec.path(tmp_path / "models") and path.read_bytes() == BODY
    assert blob.read_bytes() == BODY  # the cache is left as it was
    # A cache entry that does not match its blob name is refused, and not kept.
    blob.write_bytes(b"changed")
    path.unlink()
    with pytest.raises(WeightsNotFoundError, match="corrupt"):
        ensure_weight(spec, tmp_path / "models")
    assert not path.exists() and list(path.parent.iterdir()) == []


def test_a_pinned_file_in_the_hub_cache_is_reused_online_without_a_download(tmp_path, monkeypatch, caplog):
    import huggingface_hub

    spec = assets.SD15.files[0]  # pinned to a commit: the cached copy cannot be stale
    _hub_cache_holding(tmp_path / "hub-cache", spec, monkeypatch)
    monkeypatch.delenv("MAGICFACE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("downloaded again"))
    with caplog.at_level("INFO"):
        path = ensure_weight(spec, tmp_path / "models")
    assert path.read_bytes() == BODY and "Downloading" not in caplog.text
