"""The README's picture of the two jaw sources: docs/images/jaw_2d_vs_3dmm.png.

    python tools/jaw_picture.py [--magicface-mirror /work/.mirror/weimengting+MagicFace/repo]

For the authors' portraits 00025 (mouth open) and 00381: their own condition image (3DMM jaw,
expression removed: the dots of their script, read from their repository's test_images), the
condition with our 2D jaw (dlib's real 68-point model; the person mask is taken from their image
so that only the dots differ), and both dot sets on the photo. We cannot show our own 3DMM dots
here: that needs the published D3DFR and BFM files, which this machine cannot download.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magicface_core.faces.condition import render_condition  # noqa: E402
from magicface_core.faces.dlib_backend import DlibBackend  # noqa: E402

OFFICIAL = REPO.parent / "shared" / "testdata" / "official"
OUT = REPO / "docs" / "images" / "jaw_2d_vs_3dmm.png"
PANEL = 320


def authors_dots(portrait: np.ndarray, condition: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y) of the dots in the authors' condition image, and the dots' pixels."""
    from scipy import ndimage

    dots = (np.abs(condition.astype(int) - portrait).sum(-1) > 30) & (condition.sum(-1) > 0)
    labels, count = ndimage.label(dots)
    return np.array(ndimage.center_of_mass(dots, labels, range(1, count + 1)))[:, ::-1], dots


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--magicface-mirror", type=Path, default=Path("/work/.mirror/weimengting+MagicFace/repo"))
    args = parser.parse_args(argv)
    faces = DlibBackend()
    titles = ("authors' condition: 3DMM jaw", "ours: 2D jaw (dlib)", "white: 3DMM dots, colour: 2D")
    rows = []
    for name in ("00025", "00381"):
        portrait = np.asarray(Image.open(OFFICIAL / f"{name}.png").convert("RGB"))
        blob = subprocess.run(["git", "--git-dir", str(args.magicface_mirror), "show", f"HEAD:test_images/{name}_bg.png"],
                              check=True, capture_output=True).stdout
        theirs = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
        landmarks = faces.landmarks(portrait, faces.detect(portrait)[0])
        dots, dot_pixels = authors_dots(portrait, theirs)
        mask = ((theirs.sum(-1) == 0) | dot_pixels).astype(np.uint8)  # their person mask, dots included
        ours = render_condition(portrait, mask, landmarks)
        overlay = Image.fromarray(render_condition(portrait, np.zeros_like(mask), landmarks))
        draw = ImageDraw.Draw(overlay)
        for x, y in dots:
            draw.ellipse((x - 5, y - 5, x + 5, y + 5), outline=(255, 255, 255), width=2)
        rows.append([Image.fromarray(theirs), Image.fromarray(ours), overlay])
    sheet = Image.new("RGB", (3 * PANEL, len(rows) * PANEL + 24), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(titles):
        draw.text((column * PANEL + 8, 6), title, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            sheet.paste(panel.resize((PANEL, PANEL), Image.Resampling.LANCZOS), (c * PANEL, 24 + r * PANEL))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(OUT, optimize=True)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
