"""One entry point to the preprocessing networks, each loaded (and downloaded) on first use.

``FaceToolkit`` is what the CLI, the ComfyUI nodes and the training data preparation call:
face boxes, crops, landmarks, parsing, the condition image and AU intensities.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from .. import assets
from ..au import AUVector
from .condition import person_mask, render_condition
from .crop import CropTransform, crop_face
from .landmarks import FaceBox, pick_face

PARSERS = ("bisenet", "facer")


class FaceToolkit:
    def __init__(self, weights_root: str | os.PathLike, device: torch.device | str = "cpu",
                 parser: str = "bisenet", progress: assets.Progress | None = None,
                 search: tuple[str | os.PathLike, ...] = ()):
        if parser not in PARSERS:
            raise ValueError(f"unknown face parser {parser!r}: choose one of {', '.join(PARSERS)}")
        self.root = Path(weights_root)
        self.device = torch.device(device)
        self.parser_name = parser
        self.progress = progress
        self.search = search

    def _weight(self, spec: assets.WeightFile) -> Path:
        return assets.ensure_weight(spec, self.root, self.progress, self.search)

    @functools.cached_property
    def _alignment(self):
        from .landmarks import FaceAlignmentBackend

        return FaceAlignmentBackend(self._weight(assets.S3FD), self._weight(assets.FAN_2D), self.device)

    @functools.cached_property
    def _parser(self):
        if self.parser_name == "facer":
            from .parsing import FacerParser

            return FacerParser(self.device)
        from .parsing import BiSeNetParser, load_bisenet

        return BiSeNetParser(load_bisenet(self._weight(assets.BISENET), self.device))

    @functools.cached_property
    def _au_estimator(self):
        from .au_estimation import LibreFaceEstimator, load_libreface

        return LibreFaceEstimator(load_libreface(self._weight(assets.LIBREFACE_AU), self.device))

    # --- what callers use -----------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[FaceBox]:
        return self._alignment.detect(image)

    def face(self, image: np.ndarray, face_index: int = 0) -> FaceBox:
        return pick_face(self.detect(image), face_index, image.shape)

    def crop(self, image: np.ndarray, face_index: int = 0) -> tuple[np.ndarray, CropTransform]:
        return crop_face(image, self.face(image, face_index))

    def landmarks(self, image: np.ndarray, face_index: int = 0) -> np.ndarray:
        return self._alignment.landmarks(image, self.face(image, face_index))

    def landmarks_in_box(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """68 points of the face in ``box`` (a box found earlier, or one followed through a clip)."""
        return self._alignment.landmarks(image, box)

    def parse(self, image: np.ndarray) -> np.ndarray:
        return self._parser.parse(image)

    def condition(self, portrait: np.ndarray, landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The condition image of a 512 portrait and its person mask (bool HxW)."""
        parsing = self.parse(portrait)
        if landmarks is None:
            landmarks = self.landmarks(portrait)
        return render_condition(portrait, parsing, landmarks), person_mask(parsing)

    def estimate_aus(self, images: list[np.ndarray], face_index: int = 0,
                     landmarks: list[np.ndarray] | None = None) -> AUVector:
        """AU intensities (0..5) of the chosen face in each image (``landmarks`` if already known)."""
        if landmarks is None:
            landmarks = [self.landmarks(image, face_index) for image in images]
        return self._au_estimator.estimate(list(zip(images, landmarks)))


@functools.lru_cache(maxsize=4)
def shared_toolkit(weights_root: str, device: str, parser: str = "bisenet") -> FaceToolkit:
    """One toolkit per settings, so networks load once per process."""
    return FaceToolkit(weights_root, device, parser)
