"""One entry point to the preprocessing networks, each loaded (and downloaded) on first use.

``FaceToolkit`` is what the CLI, the ComfyUI nodes and the training data preparation call:
face boxes, crops, landmarks, parsing, the condition image and AU intensities.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import assets
from ..au import AUVector
from .condition import person_mask, render_condition
from .crop import CropTransform, crop_face
from .landmarks import FaceBox, pick_face

PARSERS = ("bisenet", "facer")

# Given a network, returns what brings it to the compute device before each use (e.g. ComfyUI's
# memory management); without one, each network stays where it was built.
Placement = Callable[[torch.nn.Module], Callable[[], None]]


def _stay(module: torch.nn.Module) -> Callable[[], None]:
    return lambda: None


class FaceToolkit:
    """``device``: where the networks are built (and run, unless ``placement`` moves them);
    ``parser``: the default face parser, which :meth:`parse` and :meth:`condition` can override per call."""

    def __init__(self, weights_root: str | os.PathLike, device: torch.device | str = "cpu",
                 parser: str = "bisenet", progress: assets.Progress | None = None,
                 search: tuple[str | os.PathLike, ...] = (), placement: Placement | None = None):
        _check_parser(parser)
        self.root = Path(weights_root)
        self.device = torch.device(device)
        self.parser_name = parser
        self.progress = progress
        self.search = search
        self.placement = placement or _stay
        self._parsers: dict = {}
        self._loaders: dict[int, Callable[[], None]] = {}

    def _ready(self, *modules: torch.nn.Module) -> None:
        """Each network on the compute device (through ``placement``, registered once per network)."""
        for module in modules:
            if id(module) not in self._loaders:
                self._loaders[id(module)] = self.placement(module)
            self._loaders[id(module)]()

    def _weight(self, spec: assets.WeightFile) -> Path:
        return assets.ensure_weight(spec, self.root, self.progress, self.search)

    @functools.cached_property
    def _alignment(self):
        from .landmarks import FaceAlignmentBackend

        return FaceAlignmentBackend(self._weight(assets.S3FD), self._weight(assets.FAN_2D), self.device)

    def _parser(self, name: str | None = None):
        name = name or self.parser_name
        _check_parser(name)
        if name not in self._parsers:
            if name == "facer":
                from .parsing import FacerParser

                self._parsers[name] = FacerParser(self.device)
            else:
                from .parsing import BiSeNetParser, load_bisenet

                self._parsers[name] = BiSeNetParser(load_bisenet(self._weight(assets.BISENET), self.device))
        parser = self._parsers[name]
        if hasattr(parser, "model"):
            self._ready(parser.model)
        return parser

    @functools.cached_property
    def _au_estimator(self):
        from .au_estimation import LibreFaceEstimator, load_libreface

        return LibreFaceEstimator(load_libreface(self._weight(assets.LIBREFACE_AU), self.device))

    # --- what callers use -----------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[FaceBox]:
        self._ready(self._alignment.detector.face_detector)
        return self._alignment.detect(image)

    def face(self, image: np.ndarray, face_index: int = 0) -> FaceBox:
        return pick_face(self.detect(image), face_index, image.shape)

    def crop(self, image: np.ndarray, face_index: int = 0) -> tuple[np.ndarray, CropTransform]:
        return crop_face(image, self.face(image, face_index))

    def landmarks(self, image: np.ndarray, face_index: int = 0) -> np.ndarray:
        box = self.face(image, face_index)
        self._ready(self._alignment.fan)
        return self._alignment.landmarks(image, box)

    def parse(self, image: np.ndarray, parser: str | None = None) -> np.ndarray:
        return self._parser(parser).parse(image)

    def condition(self, portrait: np.ndarray, landmarks: np.ndarray | None = None,
                  parser: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The condition image of a 512 portrait and its person mask (bool HxW)."""
        parsing = self.parse(portrait, parser)
        if landmarks is None:
            landmarks = self.landmarks(portrait)
        return render_condition(portrait, parsing, landmarks), person_mask(parsing)

    def estimate_aus(self, images: list[np.ndarray], face_index: int = 0,
                     landmarks: list[np.ndarray] | None = None) -> AUVector:
        """AU intensities (0..5) of the chosen face in each image (``landmarks`` if already known)."""
        if landmarks is None:
            landmarks = [self.landmarks(image, face_index) for image in images]
        self._ready(self._au_estimator.model)
        return self._au_estimator.estimate(list(zip(images, landmarks)))


def _check_parser(name: str) -> None:
    if name not in PARSERS:
        raise ValueError(f"unknown face parser {name!r}: choose one of {', '.join(PARSERS)}")


@functools.lru_cache(maxsize=4)
def shared_toolkit(weights_root: str, device: str, placement: Placement | None = None) -> FaceToolkit:
    """One toolkit per weights folder and device, so networks load once per process (the parser is
    chosen per call)."""
    return FaceToolkit(weights_root, device, placement=placement)
