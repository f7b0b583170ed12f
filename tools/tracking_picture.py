"""The README's picture of face tracking in a clip: docs/images/video_tracking.jpg.

    python tools/tracking_picture.py [--out docs/images/video_tracking.jpg] [--overwrite]

A synthetic clip from the authors' portrait 00381 (it moves right and down and grows, with a
little sensor noise per frame), tracked by the library with dlib's real detector and 68-point
model. Five frames, each with the smoothed crop square (green) and the unsmoothed framing of that
frame alone (red, thin), and below them the 512 crops that MagicFace edits, made through the
smoothed transforms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magicface_core.faces.crop import CropTransform, crop_to_transform  # noqa: E402
from magicface_core.faces.toolkit import FaceToolkit  # noqa: E402
from magicface_core.video.tracking import track_faces  # noqa: E402
from tests.support.paths import scratch_dir  # noqa: E402
from tests.support.video_clips import place, portrait  # noqa: E402

FRAMES, SHOWN, PANEL, CANVAS = 40, (0, 10, 20, 30, 39), 256, (360, 480)


def clip() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    background = np.full(CANVAS + (3,), 110, np.uint8)
    frames = []
    for t in range(FRAMES):
        frame = place(background, portrait(size=160 + 2 * t), 30 + 5 * t, 20 + 2 * t).astype(np.float32)
        frames.append(np.clip(frame + rng.normal(0, 3.0, frame.shape), 0, 255).astype(np.uint8))
    return frames


def square(transform: CropTransform) -> list[float]:
    half = transform.size / transform.scale / 2
    return [transform.center_x - half, transform.center_y - half, transform.center_x + half, transform.center_y + half]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "video_tracking.jpg")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        sys.exit(f"{args.out} exists (pass --overwrite to replace it)")
    faces = FaceToolkit(scratch_dir(), "cpu", detector="dlib")
    frames = clip()
    track = track_faces(frames, faces, fps=25)
    width = PANEL * CANVAS[1] // CANVAS[0]
    font = ImageFont.load_default(size=14)
    sheet = Image.new("RGB", (len(SHOWN) * width, PANEL + PANEL), (24, 24, 24))
    for i, t in enumerate(SHOWN):
        frame = Image.fromarray(frames[t])
        draw = ImageDraw.Draw(frame)
        draw.rectangle(square(CropTransform.from_landmarks(track.landmarks[t], frames[t].shape)), outline=(230, 60, 60))
        draw.rectangle(square(track.transforms[t]), outline=(60, 220, 90), width=3)
        sheet.paste(frame.resize((width, PANEL), Image.LANCZOS), (i * width, 0))
        ImageDraw.Draw(sheet).text((i * width + 8, 6), f"frame {t}", fill=(255, 255, 255), font=font)
        crop = Image.fromarray(crop_to_transform(frames[t], track.transforms[t])).resize((PANEL - 16, PANEL - 16))
        sheet.paste(crop, (i * width + (width - crop.width) // 2, PANEL + 8))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    sheet.save(partial, format="JPEG", quality=88)
    partial.replace(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
