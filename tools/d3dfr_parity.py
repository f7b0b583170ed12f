"""Compare our D3DFRLandmarks with the public reference code it follows (Face-Adapter's), and with the
authors' whole condition path (``utils/retrieve_bg.py`` in the fork that carries their code).

    python tools/d3dfr_parity.py [--mirror /work/.mirror/FaceAdapter+Face-Adapter/repo] [--write-fixture]
    python tools/d3dfr_parity.py --retrieve-bg [--fork /work/.mirror/fsiddiqui4320+magic_face/repo] [--write-fixture]

Reads Face-Adapter's ``third_party/model_resnet_d3dfr.py``, ``third_party/d3dfr/bfm.py`` and
``data/datasets_faceswap.py`` from a git mirror of that repository (nothing of it is copied into
this project), builds random D3DFR weights and a random ``BFM_model_front.mat`` with the test
factories, and runs both pipelines on the official portraits (placed at a few scales and offsets
in larger photos) with five points from dlib's landmarks:

* reference: ``get_affine_transform`` onto ``mean_face_lm5p_256``, ``cv2.warpAffine`` (bilinear),
  ``getd3dfr_res50`` (conv+BN fused, as the authors run it), ``BFM(focal=1015*256/224,
  image_size=256).get_lm68`` on the coefficients with the expression part zeroed (the neutral
  jaw, see magicface_core/faces/d3dfr.py; with ``--keep-expression``, unchanged), and the inverse
  warp;
* ours: ``D3DFRLandmarks.from_files(...).landmarks68(image, five_points)``.

Prints the largest distance between the two sets of 68 points (pixels of the input image), and
the parts: warp matrices, warped crops, coefficients. ``--write-fixture`` stores the reference's
numbers for one case in tests/data/d3dfr_reference.npz, which the CI test checks against.

``--retrieve-bg`` runs the fork's own ``get_landmarks`` of ``utils/retrieve_bg.py`` (read from the
mirror, executed as it is, with its ``third_party/`` D3DFR and BFM and ``utils/data/datasets_faceswap.py``):
image and five points in (the 512x512 image the script makes with PIL's bilinear resize), its
``cv2.warpAffine`` uint8 crop, the network, ``get_lm68`` (expression zeroed in that copy), 68 points
out, brought back to the image by the inverse warp as ``draw_pts70_batch`` does. Only what cannot
run here is stood in for, and said so: insightface's detector (the five points come from dlib and
are handed to it), CUDA (``.to('cuda')`` runs on the CPU), and torchvision's ToTensor + Normalize(0.5,
0.5) when torchvision is not installed. ``--write-fixture`` then writes
tests/data/d3dfr_retrieve_bg_reference.npz.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magicface_core.faces.d3dfr import D3DFRLandmarks, five_points_from_68, warp  # noqa: E402
from magicface_core.faces.dlib_backend import DlibBackend  # noqa: E402
from tests.support.factories import d3dfr_state, write_bfm_mat  # noqa: E402

OFFICIAL = REPO.parent / "shared" / "testdata" / "official"
REFERENCE_FILES = ("third_party/model_resnet_d3dfr.py", "third_party/d3dfr/bfm.py", "data/datasets_faceswap.py")
FIXTURE = REPO / "tests" / "data" / "d3dfr_reference.npz"
RETRIEVE_BG_FIXTURE = REPO / "tests" / "data" / "d3dfr_retrieve_bg_reference.npz"
FORK_FILES = {"model_resnet_d3dfr": "third_party/model_resnet_d3dfr.py", "bfm": "third_party/d3dfr/bfm.py",
              "datasets_faceswap": "utils/data/datasets_faceswap.py"}
SEED = 0


def _show(mirror: Path, name: str) -> str:
    return subprocess.run(["git", "--git-dir", str(mirror), "show", f"HEAD:{name}"], check=True,
                          capture_output=True, text=True).stdout


def load_reference(mirror: Path, folder: Path, files=REFERENCE_FILES):
    modules = []
    for name in files:
        path = folder / name.replace("/", "_")
        path.write_text(_show(mirror, name))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


class _OpenCV5Solve:
    """cv2.solve as the reference (written for OpenCV 4, NumPy 1) expects it: OpenCV 5 no longer reads a
    1-D right-hand side as a column, and NumPy 2 no longer assigns a 1-element row to a scalar."""

    def __init__(self, cv2):
        self._cv2 = cv2

    def __getattr__(self, name):
        return getattr(self._cv2, name)

    def solve(self, a, b, flags=0):
        ok, x = self._cv2.solve(a, np.asarray(b).reshape(-1, 1), flags=flags)
        return ok, x.reshape(-1)


def placements(image: np.ndarray):
    """The portrait itself, and placed into larger noisy photos at a few scales and offsets."""
    from PIL import Image

    yield "as is", image
    rng = np.random.default_rng(1)
    for scale, (dx, dy) in ((0.7, (40, 90)), (1.3, (210, 30)), (1.9, (15, 260))):
        size = round(512 * scale)
        photo = rng.integers(0, 256, (size + 400, size + 500, 3), dtype=np.uint8)
        photo[dy:dy + size, dx:dx + size] = np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS))
        yield f"x{scale} at ({dx},{dy})", photo


def retrieve_bg_landmarks(fork: Path, folder: Path, network_path: Path, bfm_path: Path):
    """The fork's ``get_landmarks`` as a function (PIL image, five points) -> 68 points in the image."""
    import ast

    import cv2
    from PIL import Image

    net_mod, bfm_mod, data_mod = load_reference(fork, folder, tuple(FORK_FILES.values()))
    data_mod.cv2 = _OpenCV5Solve(cv2)
    source = _show(fork, "utils/retrieve_bg.py")
    function = next(node for node in ast.parse(source).body
                    if isinstance(node, ast.FunctionDef) and node.name == "get_landmarks")
    code = ast.get_source_segment(source, function)
    assert code.count("'cuda'") == 1, "the fork's get_landmarks changed: check what this tool stands in for"
    code = code.replace("'cuda'", "DEVICE")
    try:
        import torchvision.transforms as transforms

        pil2tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=0.5, std=0.5)])
        how = "torchvision"
    except ImportError:  # the same two steps: HWC uint8 -> CHW float / 255, then (x - 0.5) / 0.5
        def pil2tensor(picture):
            array = torch.from_numpy(np.array(picture)).permute(2, 0, 1).float().div(255)
            return (array - 0.5) / 0.5
        how = "ToTensor + Normalize by hand (no torchvision)"
    seen = {}

    def draw_pts70_batch(pts68, gaze, warp_mat256_np, dst_size, im_list=None, return_pt=False):
        seen["points256"], seen["matrix"] = pts68.double().numpy()[0], warp_mat256_np[0]
        return ["drawn"]

    class FivePoints:  # insightface's FaceAnalysis.get, answering with the points it is given
        def get(self, bgr):
            return [{"bbox": np.array([0.0, 0.0, 1.0, 1.0]), "kps": seen["five"]}]

    network = net_mod.getd3dfr_res50(str(network_path)).eval()
    namespace = {"app": FivePoints(), "cv2": cv2, "np": np, "torch": torch, "Image": Image, "DEVICE": "cpu",
                 "datasets_faceswap": data_mod, "pil2tensor": pil2tensor, "net_d3dfr": network,
                 "bfm_facemodel": bfm_mod.BFM(focal=1015 * 256 / 224, image_size=256, bfm_model_path=str(bfm_path)),
                 "draw_pts70_batch": draw_pts70_batch}
    exec(compile(code, "retrieve_bg.py:get_landmarks", "exec"), namespace)

    def run(picture, five):
        seen["five"] = np.asarray(five, np.float32)  # insightface's kps are float32
        namespace["get_landmarks"](picture)
        inverse = cv2.invertAffineTransform(seen["matrix"])
        crop = cv2.warpAffine(np.array(picture), seen["matrix"], (256, 256), flags=cv2.INTER_LINEAR)
        return seen["points256"] @ inverse[:, :2].T + inverse[:, 2], seen["matrix"], crop, seen["five"]

    return run, how


def main_retrieve_bg(args) -> int:
    from PIL import Image

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        network_path, bfm_path = tmp / "d3dfr_res50_nofc.pth", tmp / "BFM_model_front.mat"
        torch.save(d3dfr_state(SEED, module_prefix=True), network_path)
        write_bfm_mat(bfm_path, seed=SEED)
        reference, how = retrieve_bg_landmarks(args.fork, tmp, network_path, bfm_path)
        print(f"reference: {args.fork} utils/retrieve_bg.py get_landmarks; pil2tensor: {how}")
        ours = D3DFRLandmarks.from_files(network_path, bfm_path)
        dlib_faces = DlibBackend()
        worst, fixture = {"points": 0.0, "crop": 0}, None
        for name in ("00025", "00381", "00512"):
            portrait = np.asarray(Image.open(OFFICIAL / f"{name}.png").convert("RGB"))
            for where, photo in placements(portrait):
                image = Image.fromarray(photo).resize((512, 512), Image.BILINEAR)  # make_bg_for_one_image
                array = np.asarray(image)
                faces = dlib_faces.detect(array)
                if not faces:
                    print(f"{name} {where:18s} no face at 512x512, skipped")
                    continue
                five = five_points_from_68(dlib_faces.landmarks(array, faces[0]))
                points_ref, matrix, crop, five32 = reference(image, five)
                _, our_matrix = ours.coefficients(array, five32)
                points = ours.landmarks68(array, five32)
                error = float(np.hypot(*(points - points_ref).T).max())
                crop_levels = int(np.abs(warp(array, our_matrix).astype(int) - crop).max())
                worst = {"points": max(worst["points"], error), "crop": max(worst["crop"], crop_levels)}
                print(f"{name} {where:18s} max point error {error:.5f} px; crop {crop_levels} levels")
                if fixture is None and name == "00381" and where == "as is":
                    fixture = dict(seed=SEED, five_points=five32, matrix=matrix, crop_mean=crop.reshape(-1, 3).mean(0),
                                   crop_sha256=hashlib.sha256(crop.tobytes()).hexdigest(), points=points_ref)
        print(f"largest over all cases: points {worst['points']:.5f} px, crop {worst['crop']} levels")
        if args.write_fixture:
            np.savez_compressed(RETRIEVE_BG_FIXTURE, **fixture)
            print(f"wrote {RETRIEVE_BG_FIXTURE}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror/FaceAdapter+Face-Adapter/repo"))
    parser.add_argument("--keep-expression", action="store_true", help="compare the public get_lm68 as it is")
    parser.add_argument("--write-fixture", action="store_true")
    parser.add_argument("--retrieve-bg", action="store_true",
                        help="run the authors' whole condition path (utils/retrieve_bg.py) of the fork instead")
    parser.add_argument("--fork", type=Path, default=Path("/work/.mirror/fsiddiqui4320+magic_face/repo"))
    args = parser.parse_args(argv)
    if args.retrieve_bg:
        return main_retrieve_bg(args)
    import cv2
    from PIL import Image

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref_net_mod, ref_bfm_mod, ref_data = load_reference(args.mirror, tmp)
        network_path, bfm_path = tmp / "d3dfr_res50_nofc.pth", tmp / "BFM_model_front.mat"
        torch.save(d3dfr_state(SEED, module_prefix=True), network_path)
        write_bfm_mat(bfm_path, seed=SEED)
        ref_data.cv2 = _OpenCV5Solve(cv2)
        ref_net = ref_net_mod.getd3dfr_res50(str(network_path)).eval()
        ref_bfm = ref_bfm_mod.BFM(focal=1015 * 256 / 224, image_size=256, bfm_model_path=str(bfm_path))
        ours = D3DFRLandmarks.from_files(network_path, bfm_path, neutral_expression=not args.keep_expression)
        dlib_faces = DlibBackend()

        worst = {"points": 0.0, "matrix": 0.0, "crop": 0, "coefficients": 0.0}
        fixture = None
        for name in ("00025", "00381", "00512"):
            portrait = np.asarray(Image.open(OFFICIAL / f"{name}.png").convert("RGB"))
            for where, image in placements(portrait):
                five = five_points_from_68(dlib_faces.landmarks(image, dlib_faces.detect(image)[0]))
                matrix = ref_data.get_affine_transform(five, ref_data.mean_face_lm5p_256)
                crop = cv2.warpAffine(image, matrix, (256, 256), flags=cv2.INTER_LINEAR)
                x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
                coefficients = ref_net((x - 0.5) / 0.5)  # ToTensor + Normalize(0.5, 0.5)
                projected = coefficients.clone()
                if not args.keep_expression:
                    projected[:, 80:144] = 0
                points256 = ref_bfm.get_lm68(projected)[0].double().numpy()
                reference = points256 @ cv2.invertAffineTransform(matrix)[:, :2].T + cv2.invertAffineTransform(matrix)[:, 2]

                our_coefficients, our_matrix = ours.coefficients(image, five)
                our_crop = warp(image, our_matrix)
                points = ours.landmarks68(image, five)
                error = np.hypot(*(points - reference).T).max()
                parts = {"points": error, "matrix": np.abs(our_matrix - matrix).max(),
                         "crop": int(np.abs(our_crop.astype(int) - crop).max()),
                         "coefficients": np.abs(our_coefficients - coefficients[0].double().numpy()).max()}
                for key, value in parts.items():
                    worst[key] = max(worst[key], value)
                print(f"{name} {where:18s} max point error {error:.5f} px; matrix {parts['matrix']:.2e}, "
                      f"crop {parts['crop']} levels, coefficients {parts['coefficients']:.2e}")
                if fixture is None and name == "00381" and where == "as is":
                    # What CI checks without the reference repo: the reference's numbers for this case.
                    expression_kept = ref_bfm.get_lm68(coefficients.clone())[0].double().numpy()
                    fixture = dict(seed=SEED, five_points=five, matrix=matrix, crop_mean=crop.reshape(-1, 3).mean(axis=0),
                                   coefficients=coefficients[0].double().numpy(), points256_neutral=points256
                                   if not args.keep_expression else None, points256_expression=expression_kept,
                                   points_neutral=reference)
        print(f"largest over all cases: points {worst['points']:.5f} px, matrix {worst['matrix']:.2e}, "
              f"crop {worst['crop']} levels, coefficients {worst['coefficients']:.2e}")
        if args.write_fixture:
            if args.keep_expression:
                raise SystemExit("write the fixture without --keep-expression")
            np.savez_compressed(FIXTURE, **fixture)
            print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
