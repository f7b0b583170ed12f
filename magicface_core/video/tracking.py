"""Following one face through a clip: per-frame detections linked by overlap, and a crop
transform framed from the face's landmarks and smoothed over time.

Detection runs on every ``detect_every``-th frame (and whenever the face was lost); frames in
between place the landmark model on the previous box, moved as the landmarks moved. At each
detection the face kept is the one overlapping the face followed so far the most (IoU), so the
chosen face stays the chosen face when faces cross or change size. The first detection picks
``face_index`` (0 = the largest face).

The crop is framed from the 68 landmarks rather than the detector's box, which jumps from frame
to frame, by the one framing rule of single photos (:func:`~magicface_core.faces.crop.frame_from_landmarks`).
Centre and log-width are then smoothed with the zero-lag One-Euro filter of
:mod:`.smoothing`, each run of frames with a face on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np

from ..errors import ImageInputError, NoFaceError, VideoInputError
from ..faces.crop import BOX_ASPECT, CropTransform, frame_from_landmarks
from ..faces.landmarks import FaceBox, largest_first
from .smoothing import CROP_BETA, CROP_MIN_CUTOFF_HZ, smooth_series


class FaceSource(Protocol):
    """What tracking needs from a face backend (:class:`~magicface_core.faces.toolkit.FaceToolkit` has it)."""

    def detect(self, image: np.ndarray) -> list[FaceBox]: ...

    def landmarks_in_box(self, image: np.ndarray, box: FaceBox) -> np.ndarray: ...


@dataclass(frozen=True)
class TrackSettings:
    face_index: int = 0
    detect_every: int = 1
    min_cutoff_hz: float = CROP_MIN_CUTOFF_HZ
    beta: float = CROP_BETA
    link_iou: float = 0.3  # a detection this much overlapping the followed face is that face

    def check(self) -> None:
        if self.detect_every < 1:
            raise VideoInputError(f"detect_every must be 1 or more (detect on every N-th frame), got {self.detect_every}")
        if self.face_index < 0:
            raise VideoInputError(f"face_index must be 0 or more (0 = the largest face), got {self.face_index}")


@dataclass
class FaceTrack:
    """Per frame: the smoothed crop transform and the raw landmarks (source pixels), None without a face."""

    transforms: list[CropTransform | None]
    landmarks: list[np.ndarray | None]
    frame_shape: tuple[int, int] = field(default=(0, 0))
    face_index: int = 0
    most_faces: int = 0  # the most faces any frame had that was searched for the face to follow

    def __len__(self) -> int:
        return len(self.transforms)

    @property
    def found(self) -> list[int]:
        return [i for i, t in enumerate(self.transforms) if t is not None]

    @property
    def missing(self) -> list[int]:
        return [i for i, t in enumerate(self.transforms) if t is None]

    def no_face_error(self, clip: str = "the clip") -> NoFaceError:
        """Why nothing was followed: no face at all, or fewer faces than the face index asks for."""
        if self.face_index and self.most_faces:
            return NoFaceError(
                f"face index {self.face_index} asks for face number {self.face_index + 1} by size (0 = the largest), "
                f"but no frame of {clip} has more than {self.most_faces} face{'s' if self.most_faces > 1 else ''}; "
                f"use a face index below {self.most_faces}")
        return NoFaceError(f"no face found in any of {clip}'s {len(self)} frames")


def nearest_found(found: list[int], frames: int) -> list[int]:
    """For each frame, the frame with a face nearest to it (the framing a faceless frame borrows)."""
    if not found:
        raise ImageInputError(f"no face found in any of the {frames} frames")
    return [min(found, key=lambda f: abs(f - t)) for t in range(frames)]


def estimate_aus_where_found(faces, images: list[np.ndarray], found: list[bool], face_index: int = 0,
                             landmarks: list | None = None):
    """AU intensities per image; images without a face (``found`` False) take the nearest one's."""
    from ..au import AUVector, NUM_AUS
    from .smoothing import fill_gaps

    rows = np.full((len(images), NUM_AUS), np.nan, dtype=np.float32)
    todo = [i for i, ok in enumerate(found) if ok]
    if todo:
        aus = faces.estimate_aus([images[i] for i in todo], face_index,
                                 landmarks=None if landmarks is None else [landmarks[i] for i in todo])
        rows[todo] = aus.values.numpy()
    return AUVector(fill_gaps(rows))


def iou(a: FaceBox, b: FaceBox) -> float:
    w = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    h = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = w * h
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def landmark_framing(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, width) of the face box that the authors' framing centres, from 68 points:
    the quantities the tracker smooths."""
    box = frame_from_landmarks(landmarks)
    return (*box.center, box.width)


def _shifted(box: FaceBox, dx: float, dy: float) -> FaceBox:
    return FaceBox(box.x0 + dx, box.y0 + dy, box.x1 + dx, box.y1 + dy, box.score)


def track_faces(frames: Iterable[np.ndarray], faces: FaceSource, fps: float,
                settings: TrackSettings = TrackSettings()) -> FaceTrack:
    """Follow the chosen face through ``frames`` (HxWx3 uint8): see the module's description."""
    settings.check()
    landmarks: list[np.ndarray | None] = []
    box = detected = None  # the followed face's box now, and at its last detection
    landmarks_at_detection = None
    shape = None
    most_faces = 0
    for t, frame in enumerate(frames):
        if shape is None:
            shape = frame.shape[:2]
        elif frame.shape[:2] != shape:
            raise VideoInputError(f"frame {t} is {frame.shape[1]}x{frame.shape[0]}, the clip {shape[1]}x{shape[0]}")
        if box is None or t % settings.detect_every == 0:
            boxes = faces.detect(frame)
            if detected is None:  # nothing followed yet: the chosen face
                most_faces = max(most_faces, len(boxes))
                ranked = largest_first(boxes)
                box = ranked[settings.face_index] if settings.face_index < len(ranked) else None
            else:
                reference = box or detected
                best = max(boxes, key=lambda b: iou(b, reference), default=None)
                box = best if best is not None and iou(best, reference) >= settings.link_iou else None
            if box is not None:
                detected = box
                landmarks_at_detection = None
        elif landmarks[-1] is not None and landmarks_at_detection is not None:
            # Between detections: the last detected box, moved as the landmarks moved since.
            shift = landmarks[-1].mean(axis=0) - landmarks_at_detection.mean(axis=0)
            box = _shifted(detected, float(shift[0]), float(shift[1]))
        if box is None:
            landmarks.append(None)
            continue
        points = np.asarray(faces.landmarks_in_box(frame, box), dtype=np.float32)
        if landmarks_at_detection is None:
            landmarks_at_detection = points
        landmarks.append(points)
    if shape is None:
        raise VideoInputError("the clip has no frames")
    return FaceTrack(_smoothed_transforms(landmarks, shape, fps, settings), landmarks, shape, settings.face_index,
                     most_faces)


def _smoothed_transforms(landmarks: list[np.ndarray | None], shape: tuple[int, int], fps: float,
                         settings: TrackSettings) -> list[CropTransform | None]:
    transforms: list[CropTransform | None] = [None] * len(landmarks)
    t = 0
    while t < len(landmarks):
        if landmarks[t] is None:
            t += 1
            continue
        end = t
        while end < len(landmarks) and landmarks[end] is not None:
            end += 1
        raw = np.array([landmark_framing(points) for points in landmarks[t:end]])
        raw[:, 2] = np.log(raw[:, 2])  # smooth the size in proportion, not in pixels
        smooth = smooth_series(raw, fps, settings.min_cutoff_hz, settings.beta)
        for i, (cx, cy, log_width) in enumerate(smooth, start=t):
            half_w = np.exp(log_width) / 2
            half_h = BOX_ASPECT * half_w
            try:
                transforms[i] = CropTransform.from_box(FaceBox(cx - half_w, cy - half_h, cx + half_w, cy + half_h), shape)
            except ImageInputError:  # too small to edit here: the frame passes through
                transforms[i] = None
        t = end
    return transforms
