"""The paper's four edit metrics (Table I), as plain functions of images, AUs, masks and landmarks.

* AU MSE: measured AUs of the edit against the intended ones, ``clip(source + delta, 0, 5)``.
* ID distance: L2 between face embeddings of the portrait and the edit (the paper uses the
  face_recognition package's 128-d dlib embedding; :class:`..faces.dlib_backend.DlibFaceEncoder`
  computes it the same way).
* Background RMSE: pixel RMSE (0..1 scale) outside the face region of either image.
* Head-pose RMSE: RMSE of (yaw, pitch, roll), in radians, estimated from 68 landmarks.
"""

from __future__ import annotations

import math

import numpy as np

from ..au import AUVector
from ..errors import ImageInputError

# CelebAMask-HQ classes of the face itself: skin, brows, eyes, glasses, ears, earring, nose, mouth, lips.
FACE_CLASSES = tuple(range(1, 14))
FACE_MASK_DILATION = 5  # pixels at 512; edits move the face's outline a little

# A generic head (millimetres; x right, y down, z away from the camera) at six of the 68 points.
POSE_POINTS = {30: (0.0, 0.0, 0.0),  # nose tip
               8: (0.0, 330.0, -65.0),  # chin
               36: (-225.0, -170.0, -135.0), 45: (225.0, -170.0, -135.0),  # outer eye corners
               48: (-150.0, 150.0, -125.0), 54: (150.0, 150.0, -125.0)}  # mouth corners


def intended_aus(source: AUVector, delta: AUVector) -> AUVector:
    return AUVector((source + delta).values.clamp(0.0, 5.0))


def au_mse(measured: AUVector, intended: AUVector) -> np.ndarray:
    """Per-row mean squared error over the 12 AUs."""
    return ((measured.values - intended.values) ** 2).mean(dim=1).numpy()


def id_distance(embedding_a: np.ndarray | None, embedding_b: np.ndarray | None) -> float:
    if embedding_a is None or embedding_b is None:
        return float("nan")
    return float(np.linalg.norm(np.asarray(embedding_a, np.float64) - np.asarray(embedding_b, np.float64)))


def face_region(parsing: np.ndarray, dilation: int = FACE_MASK_DILATION) -> np.ndarray:
    mask = np.isin(parsing, FACE_CLASSES)
    if dilation > 0:
        import torch
        import torch.nn.functional as F

        tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
        mask = F.max_pool2d(tensor, 2 * dilation + 1, stride=1, padding=dilation)[0, 0].numpy() > 0
    return mask


def background_rmse(image_a: np.ndarray, image_b: np.ndarray, face_mask: np.ndarray) -> float:
    """RMSE in 0..1 units over every pixel (and channel) outside ``face_mask``."""
    if image_a.shape != image_b.shape:
        raise ImageInputError(f"images differ in size: {image_a.shape} and {image_b.shape}")
    keep = ~face_mask
    if not keep.any():
        return float("nan")
    diff = (image_a.astype(np.float64) - image_b.astype(np.float64))[keep] / 255.0
    return float(np.sqrt(np.mean(diff**2)))


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(yaw, pitch, roll) in radians from 68 landmarks, with a pinhole camera of focal length = width."""
    import cv2

    height, width = image_size
    model = np.array(list(POSE_POINTS.values()), dtype=np.float64)
    image_points = np.asarray(landmarks, dtype=np.float64)[list(POSE_POINTS)]
    camera = camera_matrix(width, height)
    ok, rotation, _ = cv2.solvePnP(model, image_points, camera, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.full(3, np.nan)
    matrix, _ = cv2.Rodrigues(rotation)
    return euler_angles(matrix)


def camera_matrix(width: int, height: int) -> np.ndarray:
    return np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], dtype=np.float64)


def euler_angles(matrix: np.ndarray) -> np.ndarray:
    """(yaw about y, pitch about x, roll about z) of R = Rz(roll) Ry(yaw) Rx(pitch)."""
    yaw = math.asin(max(-1.0, min(1.0, -matrix[2, 0])))
    pitch = math.atan2(matrix[2, 1], matrix[2, 2])
    roll = math.atan2(matrix[1, 0], matrix[0, 0])
    return np.array([yaw, pitch, roll])


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw), math.cos(roll), math.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose_rmse(pose_a: np.ndarray, pose_b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pose_a) - np.asarray(pose_b)) ** 2)))
