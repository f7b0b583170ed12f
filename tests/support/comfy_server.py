"""A real ComfyUI for tests and tools: its server on loopback, its status socket, and its frontend
in headless Chromium.

    base = prepare_base(tmp / "comfyui-base", comfyui_dir, comfyui_python)  # the pack + small random weights
    server = Server(base, comfyui_dir, comfyui_python)
    browser = Browser.on(server, tmp / "profile")                           # needs CHROMIUM

Used by tests/test_comfyui_integration.py and tools/workflow_pictures.py.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.factories import (TINY, link_face_weights, random_published_parts, write_face_weights,
                                     write_published_checkpoint)
from tests.support.paths import OFFICIAL, REPO

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


def prepare_base(base: Path, comfyui_dir: str, comfyui_python: str, face_weights: Path | None = None) -> Path:
    """A fresh ComfyUI base directory: this pack in custom_nodes, small random weights in the formats
    ComfyUI's loaders read, and the workflows' input files (two portraits, two 2-frame clips with audio).
    ``face_weights``: a ``write_face_weights`` folder to link in, rather than writing another one."""
    base.mkdir(parents=True)
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-MagicFace").symlink_to(REPO, target_is_directory=True)
    models = base / "models"
    subprocess.run([comfyui_python, str(REPO / "tests" / "support" / "comfyui_test_models.py"), comfyui_dir, str(models)],
                   check=True, capture_output=True)
    magicface = models / "magicface"
    write_published_checkpoint(magicface / "magicface-tiny", parts=random_published_parts({**TINY, "cross_attention_dim": 768}))
    if face_weights is None:
        write_face_weights(magicface)
    else:
        link_face_weights(face_weights, magicface)
    (base / "input").mkdir()
    for name in ("00381.png", "00025.png"):
        shutil.copy(OFFICIAL / name, base / "input" / name)
    # The video workflows' clips: two frames each (every frame is a full edit), with audio.
    from tests.support.video_clips import linear_path, moving_clip, write_clip

    for name, portrait in (("clip.mp4", "00381.png"), ("driving.mp4", "00025.png")):
        frames = moving_clip(linear_path((40, 20), (6, 2), 2), name=portrait, canvas=(320, 352), size=240)
        write_clip(base / "input" / name, frames, fps=8, audio_seconds=2 / 8)
    return base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """ComfyUI started on a free loopback port with ``base`` as its base directory (``--cpu``)."""

    def __init__(self, base: Path, comfyui_dir: str, comfyui_python: str):
        self.base = base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "comfyui.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [comfyui_python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                 "--base-directory", str(base), "--disable-auto-launch"],
                cwd=comfyui_dir, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited: {self.log.read_text()[-3000:]}")
            try:
                self.get("/system_stats")
                return
            except OSError:
                time.sleep(1)
        raise TimeoutError("ComfyUI did not start within 5 minutes")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return json.loads(text) if text else None

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class WebSocket:
    """Just enough of RFC 6455 for ComfyUI's status socket and Chromium's DevTools socket."""

    def __init__(self, port: int, client_id: str | None = None, path: str | None = None):
        # Long silences are normal: a node (face detection on a slow machine) sends nothing while it runs.
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=900)
        key = base64.b64encode(os.urandom(16)).decode()
        path = path or f"/ws?clientId={client_id}"
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        header = b""
        while b"\r\n\r\n" not in header:
            header += self.sock.recv(1)
        assert b" 101 " in header.split(b"\r\n")[0], header

    def send_text(self, text: str) -> None:
        """One masked text frame (clients must mask)."""
        payload, mask = text.encode(), os.urandom(4)
        if len(payload) < 126:
            head = struct.pack(">BB", 0x81, 0x80 | len(payload))
        elif len(payload) < 1 << 16:
            head = struct.pack(">BBH", 0x81, 0x80 | 126, len(payload))
        else:
            head = struct.pack(">BBQ", 0x81, 0x80 | 127, len(payload))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("websocket closed")
            data += chunk
        return data

    def messages(self):
        while True:
            first, second = self._exact(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._exact(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(length)
            if first & 0x0F == 1:  # text: status messages
                yield json.loads(payload)
            elif first & 0x0F == 2:  # binary: previews
                yield payload

    def close(self):
        self.sock.close()


class Browser:
    """Headless Chromium on ComfyUI's page, driven through the DevTools protocol."""

    def __init__(self, url: str, profile: Path):
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        port = None
        for line in self.process.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
            if "DevTools listening on" in line:
                port = int(line.split("ws://127.0.0.1:")[1].split("/")[0])
                break
        assert port, "Chromium did not open its DevTools port"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            page = next(t for t in json.loads(response.read()) if t["type"] == "page")
        self.ws = WebSocket(port, path=page["webSocketDebuggerUrl"].split(str(port), 1)[1])
        self._id = 0

    @classmethod
    def on(cls, server: Server, profile: Path, timeout: float = 180) -> "Browser":
        """Chromium on the server's page, once ComfyUI's frontend has started."""
        browser = cls(server.url, profile)
        deadline = time.time() + timeout
        while not browser.evaluate("!!(window.app && window.app.graph && window.app.graphToPrompt)"):
            if time.time() > deadline:
                browser.close()
                raise TimeoutError("ComfyUI's frontend did not start in Chromium")
            time.sleep(1)
        return browser

    def command(self, method: str, **params):
        """One DevTools protocol command; its result."""
        self._id += 1
        self.ws.send_text(json.dumps({"id": self._id, "method": method, "params": params}))
        for message in self.ws.messages():
            if isinstance(message, dict) and message.get("id") == self._id:
                assert "error" not in message, message["error"]
                return message["result"]

    def evaluate(self, expression: str):
        """Run JavaScript in the page (awaiting a promise) and return its JSON value."""
        result = self.command("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, width: int, height: int) -> bytes:
        """The page as a PNG at width x height CSS pixels."""
        self.command("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        return base64.b64decode(self.command("Page.captureScreenshot", format="png")["data"])

    def close(self):
        self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()

