"""AU intensities (0..5) of the 12 DISFA AUs with LibreFace's ResNet-18 regressor.

The ``libreface`` package pins torch 2.0, mediapipe and dlib, which would break a ComfyUI
install, so its published weights load into the model defined here (same parameter names:
a torchvision ResNet-18 trunk as ``encoder``, a small MLP as ``classifier``).

Alignment differs from LibreFace's in where the landmarks come from: LibreFace aligns with
MediaPipe's face mesh, we align with the 68 points of 2D-FAN, using the same FFHQ-style rule
(eye centres and mouth corners give an oriented square, 512 px, then resized to 256 and
centre-cropped to 224). Eye centres here average the 6 eye-contour points of the 68-point
scheme instead of MediaPipe's 16, and out-of-image areas are filled black instead of with
LibreFace's blurred padding. Expect small differences from LibreFace's numbers, larger for
faces cut by the image border.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn

from . import resnet
from ..au import AU_NAMES, AUVector
from ..model.checkpoint import load_strict, read_weights_file

ALIGNED_SIZE = 512
MODEL_INPUT = (256, 224)  # resize, then centre crop
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_INTENSITY = 5.0


class LibreFaceAUNet(nn.Module):
    """ResNet-18 features -> 128 -> 12 sigmoid outputs, times 5 for DISFA's intensity scale."""

    def __init__(self, num_aus: int = len(AU_NAMES)):
        super().__init__()
        conv1, bn1 = resnet.stem()
        self.encoder = nn.Sequential(
            conv1, bn1, nn.ReLU(), nn.MaxPool2d(3, 2, 1), *(resnet.stage(*s) for s in resnet.STAGES),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(
            nn.Linear(512, 128), nn.ReLU(), nn.BatchNorm1d(128), nn.Dropout(0.1), nn.Linear(128, num_aus), nn.Sigmoid()
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images).flatten(1)
        return (self.classifier(features) * MAX_INTENSITY).clamp(0.0, MAX_INTENSITY)


def load_libreface(path: str | os.PathLike, device: torch.device | str = "cpu") -> LibreFaceAUNet:
    state = read_weights_file(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = load_strict(LibreFaceAUNet(), state, str(path), "LibreFace's AU intensity ResNet-18 (AU_Recognition resnet.pt)")
    return model.to(device).eval()


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ alignment square (4 corners: top-left, bottom-left, bottom-right, top-right)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    center = eye_avg + eye_to_mouth * 0.1
    return np.stack([center - x - y, center - x + y, center + x + y, center + x - y])


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The face warped onto an upright ``size`` square, FFHQ-style."""
    from PIL import Image

    quad = ffhq_quad(landmarks)
    warped = Image.fromarray(image).transform((size, size), Image.Transform.QUAD, (quad + 0.5).flatten(),
                                              Image.Resampling.BILINEAR)
    return np.asarray(warped)


def model_input(aligned: np.ndarray) -> torch.Tensor:
    """LibreFace's test transform: resize to 256, centre crop 224, ImageNet normalisation."""
    from PIL import Image

    resize, crop = MODEL_INPUT
    image = Image.fromarray(aligned).resize((resize, resize), Image.Resampling.BILINEAR)
    offset = (resize - crop) // 2
    array = np.asarray(image)[offset:offset + crop, offset:offset + crop].astype(np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


class LibreFaceEstimator:
    def __init__(self, model: LibreFaceAUNet):
        self.model = model

    @torch.no_grad()
    def estimate(self, faces: list[tuple[np.ndarray, np.ndarray]]) -> AUVector:
        """AU intensities for ``(image, 68 landmarks)`` pairs, one row each."""
        param = next(self.model.parameters())
        batch = torch.stack([model_input(align_face(image, lm)) for image, lm in faces])
        return AUVector(self.model(batch.to(param.device, param.dtype)).float().cpu())
