"""Face boxes, 68 landmarks and the 128-d face descriptor from dlib, with zero downloads.

The model files ship in the ``face_recognition_models`` package; the networks run in dlib
(the ``dlib-bin`` wheel). We call dlib directly: the ``face_recognition`` package, and
``face_recognition_models``' own ``__init__``, look files up through ``pkg_resources``, which
setuptools 81 and newer no longer ship, so we locate the package folder with
``importlib.util.find_spec`` (which does not execute it).

Licence: dlib's 68-point model (``shape_predictor_68_face_landmarks.dat``) was trained on the
iBUG 300-W data set, whose terms exclude commercial use. The face descriptor model is CC0.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError
from .landmarks import FaceBox, largest_first

LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"
DETECTION_MAX_SIDE = 1024  # HOG is slow on big photos; faces over ~40 px stay findable at this size
UPSAMPLE_BELOW = 800  # smaller images are upsampled once so that small faces are found too


def _import_dlib():
    try:
        import dlib
    except ImportError as exc:
        raise MissingDependencyError(
            f"the dlib face backend needs dlib: pip install dlib-bin face_recognition_models ({exc})"
        ) from exc
    return dlib


def model_path(name: str) -> Path:
    """The path of one of ``face_recognition_models``' files, without importing that package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the dlib face backend needs the face_recognition_models package, which ships dlib's model "
            "files: pip install face_recognition_models"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise MissingDependencyError(f"{path} is missing: reinstall face_recognition_models")
    return path


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


class DlibBackend:
    """dlib's HOG face detector and its 68-point shape predictor (image pixel coordinates)."""

    def __init__(self):
        dlib = _import_dlib()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_path(LANDMARKS_68)))

    # dlib's models are not torch modules: nothing for a host to place.
    detection_modules = landmark_modules = ()

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Face boxes, largest first."""
        image = _rgb(image)
        scale = min(1.0, DETECTION_MAX_SIDE / max(image.shape[:2]))
        small = image
        if scale < 1.0:
            from ..imaging import resize

            small = resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))))
        upsample = 1 if max(small.shape[:2]) <= UPSAMPLE_BELOW else 0
        rects, scores, _ = self.detector.run(small, upsample)
        boxes = [FaceBox(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(s)) for r, s in zip(rects, scores)]
        return largest_first([b.scaled(1.0 / scale) for b in boxes])

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """68 ``(x, y)`` points for the face in ``box``."""
        rect = self._dlib.rectangle(round(box.x0), round(box.y0), round(box.x1) - 1, round(box.y1) - 1)
        shape = self.predictor(_rgb(image), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class DlibFaceEncoder:
    """The 128-d face descriptor the paper's ID metric uses, computed as ``face_recognition.face_encodings``
    computes it by default: HOG detection upsampled once, the 5-point predictor, one jitter."""

    def __init__(self):
        dlib = _import_dlib()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_path(LANDMARKS_5)))
        self.encoder = dlib.face_recognition_model_v1(str(model_path(DESCRIPTOR)))

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """The descriptor of the first face found, or None without a face."""
        image = _rgb(image)
        rects = self.detector(image, 1)
        if len(rects) == 0:
            return None
        shape = self.predictor(image, rects[0])
        return np.array(self.encoder.compute_face_descriptor(image, shape, 1))
