"""The README's workflow pictures, taken from ComfyUI's own frontend in headless Chromium.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python \\
        python tools/workflow_pictures.py [5_animate_portrait 6_edit_video ...] [--out docs/images]

Starts a real ComfyUI on loopback with this pack (tests/support/comfy_server.py: small random
weights, the official portraits and two short clips as inputs), loads each workflow into the
frontend as a user would, fits the graph to a 1840x1000 view and saves
``workflow_<name>.png``. An existing picture is replaced only with ``--overwrite``.
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

from tests.support.comfy_server import CHROMIUM, Browser, Server, prepare_base  # noqa: E402

WIDTH, HEIGHT = 1840, 1000

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
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--overwrite", action="store_true", help="replace pictures that exist")
    args = parser.parse_args()
    comfyui_dir, comfyui_python = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON", sys.executable)
    if not comfyui_dir or not CHROMIUM:
        sys.exit("needs COMFYUI_DIR (a ComfyUI checkout; COMFYUI_PYTHON its Python) and Chromium on the PATH")
    workflows = sorted((REPO / "workflows").glob("*.json"))
    if args.names:
        workflows = [w for w in workflows if w.stem in args.names]
    targets = {w: args.out / f"workflow_{w.stem}.png" for w in workflows}
    existing = [str(t) for t in targets.values() if t.exists()]
    if existing and not args.overwrite:
        sys.exit(f"already there (pass --overwrite to replace): {', '.join(existing)}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = Server(prepare_base(tmp / "base", comfyui_dir, comfyui_python), comfyui_dir, comfyui_python)
        browser = None
        try:
            # A first start shows the templates dialog; the pictures show the canvas alone (focus mode,
            # without the canvas statistics).
            server.post("/settings/Comfy.TutorialCompleted", True)
            server.post("/settings/Comfy.Graph.CanvasInfo", False)
            browser = Browser.on(server, tmp / "profile")
            browser.evaluate("window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
            browser.screenshot(WIDTH, HEIGHT)  # the view size, before the graph is fitted to it
            for workflow, target in targets.items():
                browser.evaluate(f"window.app.loadGraphData({workflow.read_text()})")
                time.sleep(3)  # image and video previews load from the server
                scale = browser.evaluate(FIT_VIEW % {"width": WIDTH, "height": HEIGHT})
                time.sleep(1)
                args.out.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".partial")
                # 256 colours: a graph has few, and the picture is a third of the size.
                picture = Image.open(io.BytesIO(browser.screenshot(WIDTH, HEIGHT))).convert("RGB")
                picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(partial, format="PNG", optimize=True)
                partial.replace(target)
                print(json.dumps({"workflow": workflow.name, "picture": str(target), "scale": round(scale, 3)}))
        finally:
            if browser is not None:
                browser.close()
            server.stop()


if __name__ == "__main__":
    main()
