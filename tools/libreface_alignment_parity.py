"""Compare our LibreFace alignment (faces/au_estimation.align_face) with LibreFace's own ``image_align``.

    pip download libreface==0.1.1 --no-deps -d /tmp/lf && unzip -q /tmp/lf/libreface-*.whl -d /tmp/lf/x
    python tools/libreface_alignment_parity.py --libreface /tmp/lf/x [--write-fixture]

LibreFace's module imports MediaPipe, gdown and pandas at the top; only its ``image_align``
function is taken (by source, with ``ast``) and run here beside ours, on the same landmark sets:
dlib's 68 points of the official portraits, placed so that each branch runs (as is; cut by the
photo's border, so the blurred padding runs; three times larger, so the shrink runs). LibreFace
reads MediaPipe's eye contours and lips; we hand it our eye contours (padded to MediaPipe's 16
points with copies of their mean, which keeps the mean) and our 20 lip points, in its order:
image-right eye, image-left eye, lips, as fractions of the image size.

Prints the largest pixel difference per case. ``--write-fixture`` stores the landmarks and
LibreFace's outputs (16x16 block means and sha256) in tests/data/libreface_align_reference.npz.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magicface_core.faces.au_estimation import align_face  # noqa: E402
from magicface_core.faces.dlib_backend import DlibBackend  # noqa: E402

OFFICIAL = REPO.parent / "shared" / "testdata" / "official"
FIXTURE = REPO / "tests" / "data" / "libreface_align_reference.npz"
# (portrait, scale, offset, photo size): see tests/test_au_alignment.py, which builds the same photos.
CASES = [(name, scale, offset, size) for name in ("00025", "00381", "00512") for scale, offset, size in (
    (1.0, (0, 0), (512, 512)), (1.0, (-150, 60), (700, 700)), (3.0, (40, 30), (1650, 1650)))]


def place(name: str, scale: float, offset: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """The official portrait resized by ``scale`` at ``offset`` (may be negative: cut) on a gray photo."""
    from PIL import Image

    portrait = Image.open(OFFICIAL / f"{name}.png").convert("RGB")
    side = round(512 * scale)
    photo = Image.new("RGB", size, (128, 128, 128))
    photo.paste(portrait.resize((side, side), Image.Resampling.LANCZOS), offset)
    return np.asarray(photo)


def libreface_image_align(libreface: Path):
    from PIL import Image
    import scipy.ndimage

    source = (libreface / "libreface" / "detect_mediapipe_image.py").read_text()
    function = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "image_align")
    if not hasattr(Image, "ANTIALIAS"):  # removed in Pillow 10; LANCZOS is the same filter
        Image.ANTIALIAS = Image.LANCZOS
    namespace = {"np": np, "Image": Image, "scipy": scipy}
    exec(compile(ast.Module([function], []), "libreface_image_align", "exec"), namespace)
    return namespace["image_align"]


def mediapipe_layout(landmarks: np.ndarray, width: int, height: int) -> list[list[float]]:
    def eye(points):
        return np.concatenate([points, np.repeat(points.mean(0, keepdims=True), 16 - len(points), 0)])

    rows = np.concatenate([eye(landmarks[42:48]), eye(landmarks[36:42]), landmarks[48:68]])
    return (rows / [width, height]).tolist()


def block_means(image: np.ndarray, blocks: int = 16) -> np.ndarray:
    size = image.shape[0] // blocks
    return image.reshape(blocks, size, blocks, size, 3).astype(np.float32).mean(axis=(1, 3))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libreface", type=Path, required=True, help="folder holding the libreface package")
    parser.add_argument("--write-fixture", action="store_true")
    args = parser.parse_args(argv)
    from PIL import Image

    image_align = libreface_image_align(args.libreface)
    faces = DlibBackend()
    stored = {"landmarks": [], "block_means": [], "sha256": []}
    for case in CASES:
        photo = place(*case)
        landmarks = faces.landmarks(photo, faces.detect(photo)[0]).astype(np.float64)
        theirs = np.asarray(image_align(Image.fromarray(photo), mediapipe_layout(landmarks, *photo.shape[1::-1])))
        ours = align_face(photo, landmarks)
        diff = np.abs(ours.astype(int) - theirs)
        print(f"{case[0]} x{case[1]} at {case[2]} in {case[3]}: max difference {diff.max()} levels, "
              f"{(diff > 0).mean() * 100:.3f}% of values differ")
        stored["landmarks"].append(landmarks)
        stored["block_means"].append(block_means(theirs))
        stored["sha256"].append(hashlib.sha256(theirs.tobytes()).hexdigest())
    if args.write_fixture:
        np.savez_compressed(FIXTURE, landmarks=np.stack(stored["landmarks"]),
                            block_means=np.stack(stored["block_means"]), sha256=np.array(stored["sha256"]))
        print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
