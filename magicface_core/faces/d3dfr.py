"""The condition image's jaw line as the authors made it: 68 landmarks of a 3D face fit, expression removed.

The authors' condition script does not take the jaw from a 2D landmark model. It fits the Basel
Face Model (BFM) with D3DFR, a ResNet-50 regressing 3DMM coefficients, and projects the BFM's
68 keypoints with the **expression coefficients set to zero**: the dots are that identity's
neutral jaw in that head pose, so the condition fixes pose and background but not the mouth.
(Face-Adapter's public ``get_lm68`` keeps the expression; the MagicFace script calls a
variant of it that is not published, and the method notes of this project describe it with the
expression zeroed. ``neutral_expression=False`` gives the public variant.)

Steps (constants from Face-Adapter's ``data/datasets_faceswap.py``, ``third_party/d3dfr/bfm.py``
and ``third_party/model_resnet_d3dfr.py``):

1. five points (eye centres, nose tip, mouth corners, left and right as seen in the image) are
   fitted by a least-squares similarity onto a 256x256 five-point template, and the image is
   warped onto it by OpenCV's bilinear warpAffine on the uint8 image, as the authors' script does
   (black outside);
2. RGB scaled to [-1, 1] goes through the network: 261 outputs (80 identity, 64 expression,
   80 texture, 3 angles, 27 lighting, 3 translation, 4 gaze);
3. shape = mean + identity basis (+ expression basis, zeroed here), rotated by R = Rz Ry Rx,
   translated, seen from a camera at distance 10 with focal 1015 * 256 / 224 and centre 128,
   y flipped (``255 - y``);
4. the 68 keypoints are brought back through the inverse similarity.

Pixel coordinates follow OpenCV's convention (pixel centres at integers), as the reference
warps with ``cv2.warpAffine``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import resnet
from ..errors import CheckpointError, ImageInputError, MissingDependencyError, WeightsNotFoundError
from ..model.checkpoint import read_weights_file

CROP = 256
# The authors' five-point template in the 256 crop: an ArcFace-style 112x96 template, shifted by
# (8, 0), doubled, shifted by (16, 0). Left eye, right eye, nose tip, left and right mouth corner.
TEMPLATE_256 = np.array([
    [(30.2946 + 8) * 2 + 16, 51.6963 * 2],
    [(65.5318 + 8) * 2 + 16, 51.5014 * 2],
    [(48.0252 + 8) * 2 + 16, 71.7366 * 2],
    [(33.5493 + 8) * 2 + 16, 92.3655 * 2],
    [(62.7299 + 8) * 2 + 16, 92.2041 * 2],
], np.float32).astype(np.float64)  # float32 as the authors store it (datasets_faceswap.mean_face_lm5p_256)
FOCAL = 1015.0 * CROP / 224  # D3DFR's focal length at 224, scaled to the 256 crop
CAMERA_DISTANCE = 10.0
# Output layout: (name, size), in the order of the network's heads.
COEFFICIENTS = (("identity", 80), ("expression", 64), ("texture", 80), ("angles", 3), ("lighting", 27),
                ("translation_xy", 2), ("translation_z", 1), ("gaze", 4))
NUM_COEFFICIENTS = sum(n for _, n in COEFFICIENTS)  # 261
IDENTITY = slice(0, 80)
EXPRESSION = slice(80, 144)
ANGLES = slice(224, 227)
TRANSLATION = slice(254, 257)
BFM_KEYS = ("meanshape", "idBase", "exBase", "keypoints")
OUTSIDE_MARGIN = 0.1  # five points may lie this fraction of the image size outside it


class D3DFRNet(nn.Module):
    """ResNet-50 features -> one 1x1 convolution per coefficient group (published names, typo included)."""

    def __init__(self):
        super().__init__()
        self.backbone = resnet.ResNet50Trunk()
        self.fianl_layers = nn.ModuleList(nn.Conv2d(2048, n, 1, bias=True) for _, n in COEFFICIENTS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        return torch.cat([head(features) for head in self.fianl_layers], dim=1).flatten(1)


def load_d3dfr(path: str | os.PathLike, device: torch.device | str = "cpu") -> D3DFRNet:
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"the 3DMM network {path} does not exist: download d3dfr_res50_nofc.pth from "
            "https://huggingface.co/mengtingwei/magicface, or use the 2d jaw")
    state = {k.removeprefix("module."): v for k, v in read_weights_file(path).items()}
    model = D3DFRNet()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} != {list(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} is not D3DFR's ResNet-50 (d3dfr_res50_nofc.pth): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


class BFMKeypoints:
    """The part of the Basel Face Model the 68 landmarks need: their rows of the mean and the bases."""

    def __init__(self, mean: np.ndarray, identity: np.ndarray, expression: np.ndarray):
        self.mean = mean  # [68, 3], float64, centred with the mean of *all* vertices
        self.identity = identity  # [68, 3, 80]
        self.expression = expression  # [68, 3, 64]

    @classmethod
    def from_mat(cls, path: str | os.PathLike) -> "BFMKeypoints":
        from scipy.io import loadmat

        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"the face model {path} does not exist: download BFM_model_front.mat from "
                "https://huggingface.co/mengtingwei/magicface, or use the 2d jaw")
        try:
            model = loadmat(str(path), variable_names=BFM_KEYS)
        except Exception as exc:  # scipy raises ValueError, MatReadError, OSError... for non-.mat files
            raise CheckpointError(f"{path} is not a readable MATLAB .mat file ({exc})") from exc
        missing = [k for k in BFM_KEYS if k not in model]
        if missing:
            raise CheckpointError(
                f"{path} is not the Basel Face Model file BFM_model_front.mat: it lacks {', '.join(missing)}")
        mean = np.asarray(model["meanshape"], np.float64).reshape(-1, 3)
        vertices = len(mean)
        identity = np.asarray(model["idBase"], np.float64)
        expression = np.asarray(model["exBase"], np.float64)
        keypoints = np.asarray(model["keypoints"]).reshape(-1)
        if identity.shape != (3 * vertices, 80) or expression.shape != (3 * vertices, 64) or keypoints.size != 68:
            raise CheckpointError(
                f"{path} has the wrong shapes for BFM_model_front.mat: meanshape {model['meanshape'].shape}, "
                f"idBase {identity.shape}, exBase {expression.shape}, keypoints {keypoints.shape}")
        index = keypoints.astype(np.int64) - 1  # MATLAB indices start at 1
        if index.min() < 0 or index.max() >= vertices:
            raise CheckpointError(f"{path}: keypoint indices lie outside the model's {vertices} vertices")
        mean = mean - mean.mean(axis=0)
        return cls(mean[index], identity.reshape(vertices, 3, 80)[index], expression.reshape(vertices, 3, 64)[index])


def rotation(angles: np.ndarray) -> np.ndarray:
    """R = Rz(z) Ry(y) Rx(x) for angles (x, y, z) in radians; points rotate as R @ p."""
    x, y, z = angles
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def project_keypoints(coefficients: np.ndarray, bfm: BFMKeypoints, neutral_expression: bool = True) -> np.ndarray:
    """The 68 keypoints ``[68, 2]`` in the 256 crop for one row of 261 coefficients."""
    c = np.asarray(coefficients, np.float64)
    shape = bfm.mean + bfm.identity @ c[IDENTITY]
    if not neutral_expression:
        shape = shape + bfm.expression @ c[EXPRESSION]
    camera = shape @ rotation(c[ANGLES]).T + c[TRANSLATION]
    depth = CAMERA_DISTANCE - camera[:, 2:]
    if (depth <= 0).any():
        raise ImageInputError("the 3D face fit put the face behind the camera; the face is not usable")
    image = FOCAL * camera[:, :2] / depth + CROP / 2
    image[:, 1] = CROP - 1 - image[:, 1]
    return image


def similarity_to_template(five_points: np.ndarray, template: np.ndarray = TEMPLATE_256) -> np.ndarray:
    """The 2x3 least-squares similarity (scale, rotation, shift) taking ``five_points`` onto ``template``."""
    p = np.asarray(five_points, np.float64)
    # u = a x - b y + tx, v = b x + a y + ty: linear in (a, b, tx, ty).
    rows = np.zeros((2 * len(p), 4))
    rows[0::2] = np.stack([p[:, 0], -p[:, 1], np.ones(len(p)), np.zeros(len(p))], axis=1)
    rows[1::2] = np.stack([p[:, 1], p[:, 0], np.zeros(len(p)), np.ones(len(p))], axis=1)
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, np.asarray(template, np.float64).reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def invert_similarity(matrix: np.ndarray) -> np.ndarray:
    linear = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear, -linear @ matrix[:, 2:]], axis=1)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def warp(image: np.ndarray, matrix: np.ndarray, size: int = CROP) -> np.ndarray:
    """``image`` (HxWx3 uint8) warped by the 2x3 ``matrix`` into a ``size`` square, black outside.

    The authors' condition script (``utils/retrieve_bg.py``) crops with ``cv2.warpAffine(...,
    flags=cv2.INTER_LINEAR)`` on the uint8 image, and the network then sees that crop: OpenCV's
    fixed-point bilinear filter (1/32-pixel positions, rounded to uint8). A float bilinear sample
    differs by a level here and there, which moved the 68 points by up to 0.11 px end to end."""
    cv2 = _opencv()
    return cv2.warpAffine(np.ascontiguousarray(image, dtype=np.uint8), np.asarray(matrix, np.float64), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _opencv():
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError(
            "the 3DMM jaw crops the face with OpenCV as the authors do: pip install opencv-python "
            f"(face-alignment installs it), or use the 2d jaw ({exc})") from exc
    return cv2


def five_points_from_68(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres (means of the eye contours), nose tip (30) and mouth corners (48, 54)."""
    lm = np.asarray(landmarks, np.float64)
    return np.stack([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]])


class D3DFRLandmarks:
    """68 landmarks of the 3D face fit, as the authors' condition script computes them.

    ``landmarks68(image, five_points)``: image HxWx3 uint8, five points [5, 2] (left eye centre,
    right eye centre, nose tip, left mouth corner, right mouth corner) -> float [68, 2] in image pixels.
    """

    def __init__(self, network: D3DFRNet, bfm: BFMKeypoints, neutral_expression: bool = True):
        self.network = network
        self.bfm = bfm
        self.neutral_expression = neutral_expression

    @classmethod
    def from_files(cls, network_path: str | os.PathLike, bfm_path: str | os.PathLike,
                   device: torch.device | str = "cpu", neutral_expression: bool = True) -> "D3DFRLandmarks":
        bfm = BFMKeypoints.from_mat(bfm_path)  # the cheaper check first
        return cls(load_d3dfr(network_path, device), bfm, neutral_expression)

    def coefficients(self, image: np.ndarray, five_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's 261 outputs for the face, and the 2x3 similarity image -> 256 crop."""
        result = self.coefficients_batch([image], [five_points])[0]
        if isinstance(result, ImageInputError):
            raise result
        return result

    @torch.no_grad()
    def coefficients_batch(self, images: list[np.ndarray], five_points: list[np.ndarray]
                           ) -> list[tuple[np.ndarray, np.ndarray] | ImageInputError]:
        """:meth:`coefficients` of each face, the network running once on all their crops. A face
        that cannot be fitted gets its error in its place, so one bad frame does not fail the batch."""
        results: list = [None] * len(images)
        crops, matrices, members = [], [], []
        for k, (image, points) in enumerate(zip(images, five_points, strict=True)):
            try:
                matrix = self._check_and_align(image, points)
            except ImageInputError as exc:
                results[k] = exc
                continue
            crops.append(warp(np.asarray(image), matrix))
            matrices.append(matrix)
            members.append(k)
        if crops:
            param = next(self.network.parameters())
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(param.device, param.dtype) / 127.5 - 1.0
            rows = self.network(x).double().cpu().numpy()
            for k, row, matrix in zip(members, rows, matrices):
                results[k] = (row, matrix) if np.isfinite(row).all() else ImageInputError(
                    "the 3D face fit returned non-finite coefficients for this face")
        return results

    @staticmethod
    def _check_and_align(image: np.ndarray, five_points: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageInputError(f"the 3D face fit needs an HxWx3 uint8 image, got {image.shape} {image.dtype}")
        points = np.asarray(five_points, np.float64)
        if points.shape != (5, 2) or not np.isfinite(points).all():
            raise ImageInputError(f"five_points must be 5 finite (x, y) rows, got shape {points.shape}")
        height, width = image.shape[:2]
        # A face cut by the border may put a point just outside; farther out, the points are not this image's.
        margin = OUTSIDE_MARGIN * max(width, height)
        if ((points < -margin).any() or (points[:, 0] > width - 1 + margin).any()
                or (points[:, 1] > height - 1 + margin).any()):
            raise ImageInputError(
                f"five_points lie outside the {width}x{height} image: {np.round(points, 1).tolist()} "
                "(pixel coordinates of this image, in the order left eye, right eye, nose tip, left and right "
                "mouth corner)")
        return similarity_to_template(points)

    def landmarks68(self, image: np.ndarray, five_points: np.ndarray) -> np.ndarray:
        result = self.landmarks68_batch([image], [five_points])[0]
        if isinstance(result, ImageInputError):
            raise result
        return result

    def landmarks68_batch(self, images: list[np.ndarray], five_points: list[np.ndarray]
                          ) -> list[np.ndarray | ImageInputError]:
        """:meth:`landmarks68` of each face (one network batch); a face that cannot be fitted gets its error."""
        results = []
        for fit in self.coefficients_batch(images, five_points):
            if not isinstance(fit, ImageInputError):
                coefficients, matrix = fit
                try:
                    fit = apply(invert_similarity(matrix), project_keypoints(coefficients, self.bfm,
                                                                             self.neutral_expression))
                except ImageInputError as exc:
                    fit = exc
            results.append(fit)
        return results
