"""dlib's HOG face detector and 68-point shape predictor behind the two calls tracking makes.

Test support only, standing in for the library's own dlib backend until that lands: the
weights are the real ones of the ``face_recognition_models`` package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from magicface_core.faces.landmarks import FaceBox, largest_first


def _models_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")  # its __init__ needs pkg_resources
    return Path(spec.submodule_search_locations[0]) / "models"


class DlibFaces:
    def __init__(self, upsample: int = 0):
        import dlib

        self.upsample = upsample
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(_models_dir() / "shape_predictor_68_face_landmarks.dat"))

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        rects = self.detector(np.ascontiguousarray(image), self.upsample)
        return largest_first([FaceBox(r.left(), r.top(), r.right() + 1, r.bottom() + 1) for r in rects])

    def landmarks_in_box(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        import dlib

        rect = dlib.rectangle(round(box.x0), round(box.y0), round(box.x1) - 1, round(box.y1) - 1)
        shape = self.predictor(np.ascontiguousarray(image), rect)
        return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float32)


def dlib_toolkit(weights_root: Path):
    """A FaceToolkit that finds faces and landmarks with dlib; parsing and AUs from the files in ``weights_root``."""
    from magicface_core.faces.toolkit import FaceToolkit

    class DlibToolkit(FaceToolkit):
        def __init__(self):
            super().__init__(weights_root, "cpu")
            self.dlib = DlibFaces()

        def detect(self, image):
            return self.dlib.detect(image)

        def landmarks_in_box(self, image, box):
            return self.dlib.landmarks_in_box(image, box)

        def landmarks(self, image, face_index=0):
            return self.dlib.landmarks_in_box(image, self.face(image, face_index))

    return DlibToolkit()
