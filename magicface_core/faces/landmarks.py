"""Face boxes and 68-point landmarks, from the face-alignment package (S3FD detector + 2D-FAN).

face-alignment is an optional dependency, imported on first use. Its networks are built from
the package and loaded from weight files we download and check ourselves (see
:mod:`magicface_core.assets`), so nothing lands in torch.hub's cache behind the user's back.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MissingDependencyError, NoFaceError
from ..settings import check_face_index

logger = logging.getLogger(__name__)

DETECTION_MAX_SIDE = 1024  # S3FD is slow on big photos; faces stay findable at this size
JAW = slice(0, 17)  # the 68-point scheme's jaw line, index 0 on the image's left


@dataclass(frozen=True)
class FaceBox:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def scaled(self, factor: float) -> "FaceBox":
        return FaceBox(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score)


def largest_first(boxes: list[FaceBox]) -> list[FaceBox]:
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def pick_face(boxes: list[FaceBox], index: int, image_shape: tuple[int, ...]) -> FaceBox:
    """The ``index``-th largest face, with errors that say what was found."""
    index = check_face_index(index)
    height, width = image_shape[:2]
    if not boxes:
        raise NoFaceError(
            f"no face found in the {width}x{height} image. MagicFace needs a clearly visible, roughly "
            "frontal face; try a larger or better-lit photo."
        )
    if index >= len(boxes):
        raise NoFaceError(f"face {index} was asked for, but only {len(boxes)} face(s) were found (index 0 is the largest)")
    if len(boxes) > 1:
        logger.info("%d faces found; using face %d (0 is the largest)", len(boxes), index)
    return largest_first(boxes)[index]


def _import_face_alignment():
    try:
        import face_alignment  # noqa: F401
        from face_alignment.detection.sfd.sfd_detector import SFDDetector
        from face_alignment.models import FAN
        from face_alignment.utils import crop, flip, get_preds_fromhm
    except ImportError as exc:
        raise MissingDependencyError(
            "face detection and landmarks need the face-alignment package: pip install face-alignment "
            f"(in ComfyUI's Python environment) ({exc})"
        ) from exc
    return SFDDetector, FAN, crop, flip, get_preds_fromhm


class FaceAlignmentBackend:
    """S3FD face boxes and 2D-FAN landmarks (68 points, image pixel coordinates).

    Each network runs wherever its weights are at call time, so a memory manager may move them."""

    def __init__(self, detector_path, fan_path, device: torch.device | str = "cpu"):
        from ..model.checkpoint import load_strict, read_weights_file

        SFDDetector, FAN, crop, flip, get_preds_fromhm = _import_face_alignment()
        self._crop, self._flip, self._get_preds = crop, flip, get_preds_fromhm
        self.device = str(device)
        try:  # face-alignment reads it weights-only; say which file when that refuses it
            self.detector = SFDDetector(self.device, path_to_detector=str(detector_path))
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            from ..errors import CheckpointError

            raise CheckpointError(
                f"{detector_path} could not be read as a weights-only PyTorch file ({str(exc).splitlines()[0]}). "
                "Only plain tensors are loaded; download s3fd-619a316812.pth again."
            ) from exc
        self.fan = FAN(4)
        load_strict(self.fan, read_weights_file(fan_path), str(fan_path), "face-alignment's 2D-FAN (2DFAN4)")
        self.fan.to(self.device).eval()

    # The networks a host's memory management places before each use.
    @property
    def detection_modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.detector.face_detector,)

    @property
    def landmark_modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.fan,)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Face boxes, largest first."""
        return self.detect_batch([image])[0]

    @torch.no_grad()
    def detect_batch(self, images: list[np.ndarray]) -> list[list[FaceBox]]:
        """Face boxes of each image, largest first; images of one size go through S3FD as one batch.

        S3FD scores every anchor of every image, then keeps each image's own boxes above its
        threshold, so a batch gives each image the boxes it gets alone (to float rounding)."""
        scales, smalls = [], []
        for image in images:
            scale = min(1.0, DETECTION_MAX_SIDE / max(image.shape[:2]))
            small = image
            if scale < 1.0:
                from ..imaging import resize

                small = resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))))
            scales.append(scale)
            smalls.append(np.ascontiguousarray(small))
        self.detector.device = str(next(self.detector.face_detector.parameters()).device)
        found: list[list[FaceBox]] = [[] for _ in images]
        for shape in dict.fromkeys(s.shape for s in smalls):
            members = [i for i, s in enumerate(smalls) if s.shape == shape]
            batch = torch.from_numpy(np.stack([smalls[i] for i in members])).permute(0, 3, 1, 2).float()
            for i, boxes in zip(members, self.detector.detect_from_batch(batch)):
                boxes = [FaceBox(*map(float, b[:4]), float(b[4])) for b in boxes]
                found[i] = largest_first([b.scaled(1.0 / scales[i]) for b in boxes])
        return found

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """68 ``(x, y)`` points for the face in ``box`` (face-alignment's own framing of the box)."""
        return self.landmarks_batch([image], [box])[0]

    @torch.no_grad()
    def landmarks_batch(self, images: list[np.ndarray], boxes: list[FaceBox]) -> list[np.ndarray]:
        """68 points of the face in each image's box; the 2D-FAN sees all their 256 patches as one batch."""
        from face_alignment.utils import CENTER_Y_OFFSET

        if not images:
            return []
        frames = []
        for image, box in zip(images, boxes, strict=True):
            center = np.array([box.center[0], box.center[1] - box.height * CENTER_Y_OFFSET])
            scale = (box.width + box.height) / self.detector.reference_scale
            patch = self._crop(image, center, scale).transpose(2, 0, 1).astype(np.float32) / 255.0
            frames.append((center, scale, patch))
        patch = torch.from_numpy(np.stack([f[2] for f in frames])).to(next(self.fan.parameters()).device)
        heatmaps = _last_stack(self.fan(patch))
        heatmaps += self._flip(_last_stack(self.fan(self._flip(patch))), is_label=True)  # test-time flip, as upstream
        heatmaps = heatmaps.cpu().float().numpy()
        points = []
        for k, (center, scale, _) in enumerate(frames):
            _, found, _ = self._get_preds(heatmaps[k:k + 1], center, scale)
            points.append(found.reshape(68, 2).astype(np.float32))
        return points


def _last_stack(output) -> torch.Tensor:
    """FAN returns its hourglass stacks' heatmaps as a list in some versions; the last one counts."""
    return (output[-1] if isinstance(output, (list, tuple)) else output).detach()
