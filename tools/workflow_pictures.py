"""The README's workflow pictures and the template browser's thumbnails, taken from ComfyUI's own
frontend in headless Chromium.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python \\
        python tools/workflow_pictures.py [5_animate_portrait 6_edit_video ...] [--only pictures|thumbnails]

Starts a real ComfyUI on loopback with this pack (tests/support/comfy_server.py: small random
weights, the official portraits and two short clips as inputs), loads each workflow of
example_workflows/ into the frontend as a user would, and fits the graph to the view: a 1840x1000
view saved as ``docs/images/workflow_<name>.png`` (the README's pictures), and a 1200x900 view
saved as ``example_workflows/<name>.jpg`` at 480x360 (ComfyUI's template browser shows the ``.jpg``
beside each ``.json``). An existing file is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magicface_core.files import atomic_path  # noqa: E402
from tests.support.comfy_server import CHROMIUM, Browser, Server, prepare_base  # noqa: E402
from tools.build_workflows import (FINEFACE_WEIGHTS, MAGICFACE_WEIGHTS, SD15_CHECKPOINT, SD21_CHECKPOINT,  # noqa: E402
                                   UPSCALER)

WORKFLOWS = REPO / "example_workflows"
PICTURE_VIEW = (1840, 1000)
THUMBNAIL_VIEW, THUMBNAIL_SIZE = (1200, 900), (480, 360)

# Frame every node in the view: litegraph draws a node at (pos + offset) * scale.
FIT_VIEW = """(() => {
  const nodes = window.app.graph._nodes, margin = 40, title = 30;
  const x0 = Math.min(...nodes.map(n => n.pos[0])) - margin;
  const y0 = Math.min(...nodes.map(n => n.pos[1] - title)) - margin;
  const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])) + margin;
  const y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1])) + margin;
  const ds = window.app.canvas.ds;
  ds.scale = Math.min(1, %(width)d / (x1 - x0), %(height)d / (y1 - y0));
  ds.offset[0] = -x0 + (%(width)d / ds.scale - (x1 - x0)) / 2;
  ds.offset[1] = -y0 + (%(height)d / ds.scale - (y1 - y0)) / 2;
  window.app.canvas.setDirty(true, true);
  return ds.scale;
})()"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="workflow file names without .json (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder of the README's pictures")
    parser.add_argument("--only", choices=("pictures", "thumbnails"), help="write only one of the two")
    parser.add_argument("--overwrite", action="store_true", help="replace files that exist")
    args = parser.parse_args()
    comfyui_dir, comfyui_python = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON", sys.executable)
    if not comfyui_dir or not CHROMIUM:
        sys.exit("needs COMFYUI_DIR (a ComfyUI checkout; COMFYUI_PYTHON its Python) and Chromium on the PATH")
    workflows = sorted(WORKFLOWS.glob("*.json"))
    if args.names:
        workflows = [w for w in workflows if w.stem in args.names]
    targets = []  # (workflow, kind, file)
    for workflow in workflows:
        if args.only != "thumbnails":
            targets.append((workflow, "picture", args.out / f"workflow_{workflow.stem}.png"))
        if args.only != "pictures":
            targets.append((workflow, "thumbnail", workflow.with_suffix(".jpg")))
    existing = [str(t) for _, _, t in targets if t.exists()]
    if existing and not args.overwrite:
        sys.exit(f"already there (pass --overwrite to replace): {', '.join(existing)}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = prepare_base(tmp / "base", comfyui_dir, comfyui_python)
        # The small test models under the names the workflows ask for: newer frontends frame a node
        # whose model is missing in red.
        for folder, name, test_model in (("checkpoints", SD15_CHECKPOINT, "sd15-tiny.safetensors"),
                                         ("checkpoints", SD21_CHECKPOINT, "sd21-tiny.safetensors"),
                                         ("upscale_models", UPSCALER, "tiny-x2.pth"),
                                         ("magicface", MAGICFACE_WEIGHTS, "magicface-tiny"),
                                         ("magicface", FINEFACE_WEIGHTS, "fineface-tiny")):
            (base / "models" / folder / name).symlink_to(base / "models" / folder / test_model)
        server = Server(base, comfyui_dir, comfyui_python)
        browser = None
        try:
            # A first start shows the templates dialog; the pictures show the canvas alone (focus mode,
            # without the canvas statistics).
            server.post("/settings/Comfy.TutorialCompleted", True)
            server.post("/settings/Comfy.Graph.CanvasInfo", False)
            # Text and widgets at any zoom (a large graph fits the view only zoomed out, where the
            # frontend would draw empty boxes).
            server.post("/settings/LiteGraph.Canvas.MinFontSizeForLOD", 1)
            browser = Browser.on(server, tmp / "profile")
            browser.evaluate("window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
            loaded = None
            for workflow, kind, target in targets:
                width, height = PICTURE_VIEW if kind == "picture" else THUMBNAIL_VIEW
                browser.screenshot(width, height)  # the view size, before the graph is fitted to it
                if loaded != workflow:
                    browser.evaluate(f"window.app.loadGraphData({workflow.read_text()})")
                    time.sleep(3)  # image and video previews load from the server
                    loaded = workflow
                scale = browser.evaluate(FIT_VIEW % {"width": width, "height": height})
                time.sleep(1)
                picture = Image.open(io.BytesIO(browser.screenshot(width, height))).convert("RGB")
                with atomic_path(target) as partial:
                    if kind == "picture":
                        # 256 colours: a graph has few, and the picture is a third of the size.
                        picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
                            partial, format="PNG", optimize=True)
                    else:
                        picture.resize(THUMBNAIL_SIZE, Image.Resampling.LANCZOS).save(
                            partial, format="JPEG", quality=85, optimize=True)
                print(json.dumps({"workflow": workflow.name, kind: str(target), "scale": round(scale, 3)}))
        finally:
            if browser is not None:
                browser.close()
            server.stop()


if __name__ == "__main__":
    main()
