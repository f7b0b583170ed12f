"""AU intensities (0..5) of the 12 DISFA AUs with LibreFace's ResNet-18 regressor.

The ``libreface`` package pins torch 2.0, mediapipe and dlib, which would break a ComfyUI
install, so its published weights load into the model defined here (same parameter names:
a torchvision ResNet-18 trunk as ``encoder``, a small MLP as ``classifier``).

Alignment follows LibreFace's ``image_align`` step for step (FFHQ-style oriented square from
the eye centres and mouth corners, shrink for large faces, crop with a border, blurred padding
where the square leaves the photo, bilinear quad warp to 512), then its test transform (resize
256, centre crop 224, ImageNet normalisation). Only the landmarks differ: LibreFace takes them
from MediaPipe's face mesh, we from any 68-point model. The same rule applies to them: eye
centres are the means of the eye contours (6 points each instead of MediaPipe's 16), mouth
corners the left- and right-most lip points.
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


LIBREFACE_OUTPUT = 256  # image_align's output_size argument: it only sets the shrink factor


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ alignment square (4 corners: top-left, bottom-left, bottom-right, top-right), LibreFace's rule."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    lips = lm[48:68]
    mouth_avg = (lips[np.argmin(lips[:, 0])] + lips[np.argmax(lips[:, 0])]) / 2.0
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    center = eye_avg + eye_to_mouth * 0.1
    return np.stack([center - x - y, center - x + y, center + x + y, center + x - y])


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The face warped onto an upright ``size`` square, as LibreFace's ``image_align`` does it."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    quad = ffhq_quad(landmarks)
    qsize = np.hypot(*(quad[3] - quad[0]))
    img = Image.fromarray(np.asarray(image))
    # Shrink large faces first, so the quad warp does not alias.
    shrink = int(np.floor(qsize / LIBREFACE_OUTPUT * 0.5))
    if shrink > 1:
        img = img.resize((int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink))),
                         Image.Resampling.LANCZOS)
        quad, qsize = quad / shrink, qsize / shrink
    # Crop to the square plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.size[0]),
            min(hi[1] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad = quad - crop[:2]
    # Where the square leaves the photo: pad, blur towards the edge and fade to the median colour.
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.size[0] + border, 0),
           max(hi[1] - img.size[1] + border, 0))
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        padded = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "constant")
        h, w, _ = padded.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                          1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]))
        blur = qsize * 0.02
        padded += (gaussian_filter(padded, [blur, blur, 0]) - padded) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        padded += (np.median(padded, axis=(0, 1)) - padded) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(padded), 0, 255)), "RGB")
        quad = quad + pad[:2]
    warped = img.transform((size, size), Image.Transform.QUAD, (quad + 0.5).flatten(), Image.Resampling.BILINEAR)
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
