"""The pack inside a real ComfyUI, driven through its HTTP API (skipped unless COMFYUI_DIR is set).

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python python -m pytest tests/test_comfyui_integration.py

Starts ComfyUI on loopback (``--cpu``) with a fresh base directory holding this pack and small
random weights in the formats ComfyUI's loaders read, then: checks the server's node
definitions against ours, validates every workflow in example_workflows/ and every workflow as
shipped in v0.1 (tests/data/workflows_shipped_v0_1: users' saved graphs) against the server, runs
each to its saved images (the video workflows on two-frame clips, sweeps and latent batches of two
rows; with MAGICFACE_WORKFLOW_RUNS=cover/rest, CI's split of them over two ComfyUI versions),
checks that ComfyUI's template browser lists the examples with their thumbnails, cancels a run in
the middle of sampling, and (with a Chromium) checks that the frontend queues for each workflow the
prompt that the other tests send.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.support.comfy_graph import (FRONTEND_ONLY, input_kind, linked_input, ordered_inputs, our_definitions,
                                       restored_widgets, to_api, value_fits)
from tests.support.comfy_server import CHROMIUM, Browser, Server, WebSocket, prepare_base
from tests.support.paths import REPO

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
SHIPPED_V0_1 = sorted((REPO / "tests" / "data" / "workflows_shipped_v0_1").glob("*.json"))
EVERY_WORKFLOW = WORKFLOWS + SHIPPED_V0_1
TEST_FILES = {  # widget -> the small file this test provides (by the workflow's value where there are several)
    ("CheckpointLoaderSimple", "ckpt_name"): {"v2-1_512-ema-pruned.safetensors": "sd21-tiny.safetensors",
                                              None: "sd15-tiny.safetensors"},
    ("UpscaleModelLoader", "model_name"): "tiny-x2.pth",
    ("MagicFaceModelLoader", "weights"): "magicface-tiny",
    ("MagicFaceFineFaceApply", "fineface_weights"): "fineface-tiny",
}
FIRST = REPO / "example_workflows" / "1_edit_portrait.json"  # the one edit the cancel and preview tests queue
# Which example workflows run to saved images (each run costs minutes on a CPU): "all", or CI's split over
# two ComfyUIs, "cover" and "rest" (workflows_to_run).
WORKFLOW_RUNS = os.environ.get("MAGICFACE_WORKFLOW_RUNS", "all")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set (no ComfyUI checkout to run in)")


@pytest.fixture(scope="module")
def server(tmp_path_factory, face_weights):
    base = prepare_base(tmp_path_factory.mktemp("comfyui") / "base", COMFYUI_DIR, COMFYUI_PYTHON, face_weights)
    server = Server(base, COMFYUI_DIR, COMFYUI_PYTHON)
    yield server
    server.stop()


def _prepared(server, workflow_path: Path, steps: int) -> tuple[dict, dict]:
    definitions = server.get("/object_info")
    prompt = to_api(json.loads(workflow_path.read_text()), definitions)
    for node in prompt.values():
        for (kind, widget), value in TEST_FILES.items():
            if node["class_type"] == kind:
                node["inputs"][widget] = value if isinstance(value, str) else value.get(node["inputs"][widget], value[None])
        if node["class_type"] in ("MagicFaceKSampler", "KSampler"):
            node["inputs"]["steps"] = steps
        # A sweep of two rows, and a latent batch to match: each row costs a full 512x512 image on a CPU.
        if node["class_type"] == "MagicFaceAUSweep":
            node["inputs"]["step"] = abs(node["inputs"]["stop"] - node["inputs"]["start"]) or 1.0
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"]["batch_size"] = min(node["inputs"]["batch_size"], 2)
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


def _workflow_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("workflow", EVERY_WORKFLOW, ids=_workflow_id)
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
        # the values this server's frontend restores (by position; defaults where the file has fewer)
        for name, spec, value in restored_widgets(definitions[node["type"]], node["widgets_values"]):
            if spec is not None:
                assert value_fits(spec, value, (node["type"], name) in TEST_FILES), (node["type"], name, value)


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


def _our_nodes(path: Path) -> set[str]:
    return {n["type"] for n in json.loads(path.read_text())["nodes"] if n["type"].startswith("MagicFace")}


def covering_workflows(paths: list[Path], nodes: set[str] | None = None) -> list[Path]:
    """Greedy set cover: the workflow running most not-yet-run nodes of ours next, until every one of
    ``nodes`` (default: all theirs) has run."""
    left = set().union(*map(_our_nodes, paths)) if nodes is None else set(nodes)
    chosen = []
    while left:
        best = max(paths, key=lambda p: (len(_our_nodes(p) & left), -paths.index(p)))
        chosen.append(best)
        left -= _our_nodes(best)
    return chosen


def workflows_to_run(mode: str = WORKFLOW_RUNS) -> list[Path]:
    """``all``; ``cover`` (the oldest ComfyUI in CI); ``rest`` (the newest): the workflows ``cover`` leaves
    out, plus those needed to run there too every node of ours the rest do not. Together: every workflow
    runs on one version at least, and every node of ours on each."""
    if mode == "all":
        return WORKFLOWS
    cover = covering_workflows(WORKFLOWS)
    if mode == "cover":
        return cover
    rest = [w for w in WORKFLOWS if w not in cover]
    missing = set().union(*map(_our_nodes, WORKFLOWS)) - set().union(set(), *map(_our_nodes, rest))
    return sorted(rest + covering_workflows(cover, missing))


def _skip_unless_run(workflow: Path) -> None:
    if workflow not in workflows_to_run():
        pytest.skip(f"MAGICFACE_WORKFLOW_RUNS={WORKFLOW_RUNS}: runs on the other ComfyUI version, and its nodes here")


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=_workflow_id)
def test_workflow_runs_to_saved_images(server, workflow):
    _skip_unless_run(workflow)
    _runs_to_saved_images(server, _prepared(server, workflow, steps=3)[0])


@pytest.mark.parametrize("workflow", SHIPPED_V0_1, ids=_workflow_id)
def test_v0_1_workflow_queues_its_examples_prompt_or_runs(server, workflow):
    """A user's graph saved from v0.1, loaded unchanged on this ComfyUI: where the prompt it gives is
    the prompt of today's example of that name, the example's run above is its run (each costs minutes
    on a CPU); where it differs, it runs here."""
    prompt, _ = _prepared(server, workflow, steps=3)
    example = REPO / "example_workflows" / workflow.name
    if example.exists() and prompt == _prepared(server, example, steps=3)[0]:
        return
    if WORKFLOW_RUNS == "cover":
        pytest.skip("MAGICFACE_WORKFLOW_RUNS=cover: a v0.1 graph unlike its example runs on the other ComfyUI version")
    _runs_to_saved_images(server, prompt)


def _runs_to_saved_images(server, prompt: dict) -> None:
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


def test_the_template_browser_lists_the_examples_with_their_thumbnails(server):
    listed = server.get("/workflow_templates")
    assert sorted(listed["ComfyUI-MagicFace"]) == [p.stem for p in WORKFLOWS]
    for path in WORKFLOWS:
        for suffix in (".json", ".jpg"):
            with urllib.request.urlopen(f"{server.url}/api/workflow_templates/ComfyUI-MagicFace/{path.stem}{suffix}",
                                        timeout=30) as response:
                assert response.read() == path.with_suffix(suffix).read_bytes()


def test_cancel_stops_a_run_during_sampling_and_progress_is_reported(server):
    prompt, _ = _prepared(server, FIRST, steps=200)
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
    prompt, _ = _prepared(server, FIRST, steps=4)  # not 3: a cached result would not sample again
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


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    if not CHROMIUM:
        pytest.skip("no Chromium on this machine: the frontend's graphToPrompt check needs one")
    browser = Browser.on(server, tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


@pytest.mark.parametrize("workflow", EVERY_WORKFLOW, ids=_workflow_id)
def test_the_frontend_queues_what_we_convert(browser, server, workflow):
    """ComfyUI's own frontend loads the workflow and builds the prompt it would queue (graphToPrompt):
    the same prompt as tests/comfy_graph.to_api, which the other tests send."""
    graph = workflow.read_text()
    output = browser.evaluate(f"(async () => {{ await window.app.loadGraphData({graph}); "
                              f"return (await window.app.graphToPrompt()).output; }})()")
    definitions = server.get("/object_info")

    def read_by_the_server(node, name):  # declared inputs and their dynamic widgets ("format.codec"); not
        # the frontend's own preview widgets ("video-preview", there once the clip has loaded)
        return name.split(".")[0] in {declared for declared, _, _ in ordered_inputs(definitions[node["class_type"]])}

    theirs = {key: {"class_type": node["class_type"],
                    "inputs": {k: v for k, v in node["inputs"].items() if read_by_the_server(node, k)}}
              for key, node in output.items()}
    assert theirs == to_api(json.loads(graph), definitions)
