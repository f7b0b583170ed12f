"""The pack inside a real ComfyUI, driven through its HTTP API (skipped unless COMFYUI_DIR is set).

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python python -m pytest tests/test_comfyui_integration.py

Starts ComfyUI on loopback (``--cpu``) with a fresh base directory holding this pack and small
random weights in the formats ComfyUI's loaders read, then: checks the server's node
definitions against ours, validates every workflow in workflows/ against the server, runs each
to its saved images (the video workflows on two-frame clips), and cancels a run in the middle of sampling.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.support.comfy_graph import FRONTEND_ONLY, combo_options, input_kind, linked_input, to_api, our_definitions, widget_slots
from tests.support.paths import OFFICIAL, REPO
from tests.support.factories import TINY, random_published_parts, write_face_weights, write_published_checkpoint

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
TEST_FILES = {  # widget -> the small file this test provides
    ("CheckpointLoaderSimple", "ckpt_name"): "sd15-tiny.safetensors",
    ("UpscaleModelLoader", "model_name"): "tiny-x2.pth",
    ("MagicFaceModelLoader", "weights"): "magicface-tiny",
}
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set (no ComfyUI checkout to run in)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: Path):
        self.base = base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "comfyui.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                 "--base-directory", str(base), "--disable-auto-launch"],
                cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT,
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

    def post(self, path: str, body: dict):
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-MagicFace").symlink_to(REPO, target_is_directory=True)
    models = base / "models"
    subprocess.run([COMFYUI_PYTHON, str(REPO / "tests" / "support" / "comfyui_test_models.py"), COMFYUI_DIR, str(models)],
                   check=True, capture_output=True)
    magicface = models / "magicface"
    write_published_checkpoint(magicface / "magicface-tiny", parts=random_published_parts({**TINY, "cross_attention_dim": 768}))
    write_face_weights(magicface)
    (base / "input").mkdir()
    for name in ("00381.png", "00025.png"):
        shutil.copy(OFFICIAL / name, base / "input" / name)
    # The video workflows' clips: two frames each (every frame is a full edit), with audio.
    from tests.support.video_clips import linear_path, moving_clip, write_clip

    for name, portrait in (("clip.mp4", "00381.png"), ("driving.mp4", "00025.png")):
        frames = moving_clip(linear_path((40, 20), (6, 2), 2), name=portrait, canvas=(320, 352), size=240)
        write_clip(base / "input" / name, frames, fps=8, audio_seconds=2 / 8)
    server = Server(base)
    yield server
    server.stop()


def _prepared(server, workflow_path: Path, steps: int) -> tuple[dict, dict]:
    definitions = server.get("/object_info")
    prompt = to_api(json.loads(workflow_path.read_text()), definitions)
    for node in prompt.values():
        for (kind, widget), value in TEST_FILES.items():
            if node["class_type"] == kind:
                node["inputs"][widget] = value
        if node["class_type"] in ("MagicFaceKSampler", "KSampler"):
            node["inputs"]["steps"] = steps
        if node["class_type"] == "MagicFaceFaceParseContour":
            # Random 2D-FAN weights put landmarks anywhere, and the 3DMM fit refuses five points far off
            # the image; the 3dmm jaw runs on real landmarks in tests/test_real_faces.py.
            node["inputs"]["jaw"] = "2d"
    return prompt, definitions


def test_pack_loads_and_every_node_matches_its_declaration(server, pack):
    ours = [line for line in server.log.read_text().splitlines() if "custom_nodes" in line and "ComfyUI-MagicFace" in line]
    assert ours and not any("IMPORT FAILED" in line for line in ours), ours
    definitions = server.get("/object_info")
    for key, ours in our_definitions(pack).items():
        theirs = definitions[key]
        assert theirs["output"] == ours["output"] and theirs["output_name"] == ours["output_name"], key
        for section in ("required", "optional"):
            assert list(theirs["input"].get(section, {})) == list(ours["input"].get(section, {})), (key, section)
            for name, spec in ours["input"].get(section, {}).items():
                assert input_kind(theirs["input"][section][name]) == input_kind(spec), (key, name)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_validates_against_the_server(server, workflow):
    definitions = server.get("/object_info")
    graph = json.loads(workflow.read_text())
    nodes = {n["id"]: n for n in graph["nodes"]}
    for _, source, out_slot, target, in_slot, kind in graph["links"]:
        source_def, target_def = definitions[nodes[source]["type"]], definitions[nodes[target]["type"]]
        assert source_def["output"][out_slot] == kind
        name, input_type = linked_input(target_def, nodes[target], in_slot)
        assert input_type == kind, (nodes[target]["type"], name)
    for node in graph["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        slots = widget_slots(definitions[node["type"]])
        assert len(slots) == len(node["widgets_values"]), node["type"]
        for (name, spec), value in zip(slots, node["widgets_values"]):
            options = combo_options(spec) if spec else None
            if options and (node["type"], name) not in TEST_FILES:
                assert value in options, (node["type"], name, value)


def _run(server, prompt: dict, timeout: float = 900) -> dict:
    return _history(server, server.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})["prompt_id"],
                    timeout)


def _history(server, prompt_id: str, timeout: float) -> dict:
    """The prompt's history entry once it is complete (ComfyUI stores it just after its last message)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = server.get(f"/history/{prompt_id}")
        if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
            return history[prompt_id]
        time.sleep(1)
    raise TimeoutError(f"prompt {prompt_id} did not finish")


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_runs_to_saved_images(server, workflow):
    prompt, _ = _prepared(server, workflow, steps=3)
    entry = _run(server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    saved = [image for output in entry["outputs"].values() for image in output.get("images", [])]
    assert saved, entry["outputs"]
    for image in saved:
        if image.get("type") == "output":
            path = server.base / "output" / image["subfolder"] / image["filename"]
            assert path.stat().st_size > 0
            if path.suffix == ".mp4":  # one frame per input frame, at its fps, with its audio
                from magicface_core.video.io import VideoFile

                video = VideoFile(path)
                assert sum(1 for _ in video) == 2 and video.info.fps == 8 and video.info.has_audio


def test_cancel_stops_a_run_during_sampling_and_progress_is_reported(server):
    prompt, _ = _prepared(server, WORKFLOWS[0], steps=200)
    sampler_id = next(k for k, v in prompt.items() if v["class_type"] == "MagicFaceKSampler")
    client_id = uuid.uuid4().hex
    ws = WebSocket(server.port, client_id)
    try:
        prompt_id = server.post("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
        interrupted_at = progress_at_interrupt = None
        for message in ws.messages():
            assert isinstance(message, dict), "a preview arrived although previews are off (the server's default)"
            data = message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if message["type"] == "progress" and data.get("node") == sampler_id and interrupted_at is None:
                assert data["max"] == 200
                if data["value"] >= 3:
                    progress_at_interrupt = data["value"]
                    server.post("/interrupt", {})
                    interrupted_at = time.time()
            if message["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                break
    finally:
        ws.close()
    assert message["type"] == "execution_interrupted", message
    assert message["data"]["node_id"] == sampler_id
    assert time.time() - interrupted_at < 15
    assert progress_at_interrupt < 200
    history = _history(server, prompt_id, timeout=60)
    assert history["status"]["status_str"] == "error"


def _preview_image(frame: bytes):
    """A PREVIEW_IMAGE frame (what the server sends clients that did not ask for preview metadata):
    event 1, image type 1 (JPEG), the JPEG."""
    from PIL import Image
    import io

    event, image_type = struct.unpack(">II", frame[:8])
    assert (event, image_type) == (1, 1), (event, image_type)
    return Image.open(io.BytesIO(frame[8:]))


def test_sampler_shows_live_previews_when_the_prompt_asks_for_them(server):
    """The per-prompt preview setting (the frontend's "Live preview method"), here latent2rgb."""
    prompt, _ = _prepared(server, WORKFLOWS[0], steps=4)  # not 3: a cached result would not sample again
    sampler_id = next(k for k, v in prompt.items() if v["class_type"] == "MagicFaceKSampler")
    client_id = uuid.uuid4().hex
    ws = WebSocket(server.port, client_id)
    previews, node = [], None
    try:
        prompt_id = server.post("/prompt", {"prompt": prompt, "client_id": client_id,
                                            "extra_data": {"preview_method": "latent2rgb"}})["prompt_id"]
        for message in ws.messages():
            if isinstance(message, bytes):
                previews.append((node, _preview_image(message)))
                continue
            data = message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if message["type"] == "progress":
                node = data["node"]
            if message["type"] in ("execution_interrupted", "execution_error", "execution_success"):
                break
    finally:
        ws.close()
    assert message["type"] == "execution_success", message
    ours = [image for at, image in previews if at == sampler_id]
    assert len(ours) == 4, [at for at, _ in previews]
    # latent2rgb makes one pixel per latent (64x64); the server scales previews to --preview-size (512)
    assert all(image.format == "JPEG" and image.size == (512, 512) for image in ours), [i.size for i in ours]


CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


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

    def evaluate(self, expression: str):
        """Run JavaScript in the page (awaiting a promise) and return its JSON value."""
        self._id += 1
        self.ws.send_text(json.dumps({"id": self._id, "method": "Runtime.evaluate", "params": {
            "expression": expression, "awaitPromise": True, "returnByValue": True}}))
        for message in self.ws.messages():
            if isinstance(message, dict) and message.get("id") == self._id:
                result = message["result"]
                assert "exceptionDetails" not in result, result["exceptionDetails"]
                return result["result"].get("value")

    def close(self):
        self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    if not CHROMIUM:
        pytest.skip("no Chromium on this machine: the frontend's graphToPrompt check needs one")
    browser = Browser(server.url, tmp_path_factory.mktemp("chromium-profile"))
    deadline = time.time() + 180
    while not browser.evaluate("!!(window.app && window.app.graph && window.app.graphToPrompt)"):
        assert time.time() < deadline, "ComfyUI's frontend did not start in Chromium"
        time.sleep(1)
    yield browser
    browser.close()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_the_frontend_queues_what_we_convert(browser, server, workflow):
    """ComfyUI's own frontend loads the workflow and builds the prompt it would queue (graphToPrompt):
    the same prompt as tests/comfy_graph.to_api, which the other tests send."""
    graph = workflow.read_text()
    output = browser.evaluate(f"(async () => {{ await window.app.loadGraphData({graph}); "
                              f"return (await window.app.graphToPrompt()).output; }})()")
    theirs = {key: {"class_type": node["class_type"], "inputs": node["inputs"]} for key, node in output.items()}
    assert theirs == to_api(json.loads(graph), server.get("/object_info"))
