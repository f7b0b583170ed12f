"""One entry point to the preprocessing networks, each loaded (and downloaded) on first use.

``FaceToolkit`` is what the CLI, the ComfyUI nodes and the training data preparation call:
face boxes, crops, landmarks, parsing, the condition image and AU intensities.

Two choices: the ``detector`` that finds faces and their 68 landmarks (``face_alignment``:
S3FD + 2D-FAN, downloaded; ``dlib``: HOG + dlib's predictor, shipped with the
``face_recognition_models`` package) and the ``jaw`` of the condition image (``3dmm``: the
authors' expression-free 3D fit, :mod:`.d3dfr`; ``2d``: the landmark model's own jaw line).
Crops are framed from the landmarks whichever detector found the face.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import assets
from ..au import AUVector
from ..devices import DeviceSettings
from ..errors import ImageInputError, SettingsError
from ..imaging import check_image_size
from ..settings import as_path, check_face_index, group, option, require
from .condition import person_mask, render_condition
from .crop import CropTransform, crop_from_landmarks
from .landmarks import FaceBox, pick_face

PARSERS = ("bisenet", "facer")
DETECTORS = ("face_alignment", "dlib")
JAW_SOURCES = ("3dmm", "2d")

@dataclass(frozen=True)
class FaceToolsChoice:
    """Which networks a graph's face steps use: the detector (and 68-point landmarks), the face
    parser and the jaw line of the condition image."""

    detector: str = option("face_alignment", "face detection + 68 landmarks: face_alignment (S3FD + 2D-FAN, "
                           "downloaded) or dlib (shipped with face_recognition_models; its 68-point model is for "
                           "non-commercial use)", choices=DETECTORS)
    parser: str = option("bisenet", "face parsing backend", choices=PARSERS)
    jaw: str = option("3dmm", "jaw line of the condition image: 3dmm (the authors' expression-free 3D fit; downloads "
                      "d3dfr_res50_nofc.pth and BFM_model_front.mat) or 2d (the landmark model's own jaw)",
                      choices=JAW_SOURCES)

    def __post_init__(self):
        _check_choice("face detector", self.detector, DETECTORS)
        _check_choice("face parser", self.parser, PARSERS)
        _check_choice("jaw source", self.jaw, JAW_SOURCES)


@dataclass(frozen=True)
class FaceSettings(FaceToolsChoice):
    """The face networks of a job outside ComfyUI: which ones, and the folder of their weights."""

    face_weights: Path | None = option(None, "folder for the face detection/parsing/AU weights "
                                             "(default: the magicface cache)")

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "face_weights", as_path(self.face_weights))

    def toolkit(self, device: torch.device | str = "cpu") -> "FaceToolkit":
        """The networks, built on first use (nothing loads here)."""
        return default_toolkit(device, self.parser, self.face_weights, self.detector, self.jaw)


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
                 search: tuple[str | os.PathLike, ...] = (), detector: str = "face_alignment", jaw: str = "3dmm",
                 placement: Placement | None = None):
        _check_choice("face parser", parser, PARSERS)
        _check_choice("face detector", detector, DETECTORS)
        _check_choice("jaw source", jaw, JAW_SOURCES)
        self.root = Path(weights_root)
        self.device = torch.device(device)
        self.parser_name = parser
        self.detector_name = detector
        self.jaw = jaw
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
        """The detector + 68-point landmark backend: ``detect(image)``, ``landmarks(image, box)``."""
        if self.detector_name == "dlib":
            from .dlib_backend import DlibBackend

            return DlibBackend()
        from .landmarks import FaceAlignmentBackend

        return FaceAlignmentBackend(self._weight(assets.S3FD), self._weight(assets.FAN_2D), self.device)

    @functools.cached_property
    def _d3dfr(self):
        from .d3dfr import D3DFRLandmarks

        return D3DFRLandmarks.from_files(self._weight(assets.D3DFR), self._weight(assets.BFM), self.device)

    def _parser(self, name: str | None = None):
        name = name or self.parser_name
        _check_choice("face parser", name, PARSERS)
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
        check_image_size(image.shape[1], image.shape[0])
        self._ready(*self._alignment.detection_modules)
        return self._alignment.detect(image)

    def face(self, image: np.ndarray, face_index: int = 0) -> FaceBox:
        check_face_index(face_index)  # before the detector loads
        return pick_face(self.detect(image), face_index, image.shape)

    def crop(self, image: np.ndarray, face_index: int = 0) -> tuple[np.ndarray, CropTransform]:
        """The 512 portrait of the chosen face, framed from its landmarks as the authors framed theirs."""
        return crop_from_landmarks(image, self.landmarks(image, face_index))

    def landmarks(self, image: np.ndarray, face_index: int = 0) -> np.ndarray:
        box = self.face(image, face_index)  # checks the image and the index before the networks load
        return self.landmarks_in_box(image, box)

    def landmarks_in_box(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """68 points of the face in ``box`` (a box found earlier, or one followed through a clip)."""
        self._ready(*self._alignment.landmark_modules)
        return self._alignment.landmarks(image, box)

    def parse(self, image: np.ndarray, parser: str | None = None) -> np.ndarray:
        check_image_size(image.shape[1], image.shape[0])
        return self._parser(parser).parse(image)

    def jaw_landmarks(self, portrait: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """68 points whose jaw line (0..16) the condition draws: the 3DMM fit's, or ``landmarks`` themselves."""
        if landmarks is None:
            landmarks = self.landmarks(portrait)
        if self.jaw == "2d":
            return np.asarray(landmarks)
        from .d3dfr import five_points_from_68

        self._ready(self._d3dfr.network)
        return self._d3dfr.landmarks68(portrait, five_points_from_68(landmarks))

    def condition(self, portrait: np.ndarray, landmarks: np.ndarray | None = None,
                  parser: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The condition image of a 512 portrait and its person mask (bool HxW).

        ``landmarks``: the portrait's 68 2D landmarks, if already known (with the 3dmm jaw they give
        the five points of the fit); ``parser`` overrides the toolkit's default for this call.
        """
        parsing = self.parse(portrait, parser)
        jaw = self.jaw_landmarks(portrait, landmarks)
        return render_condition(portrait, parsing, jaw), person_mask(parsing)

    # --- the same on batches of images (one network call per step where the backend allows) ---
    def detect_batch(self, images: list[np.ndarray]) -> list[list[FaceBox]]:
        """:meth:`detect` of each image; S3FD runs once per batch of equal-sized images (dlib per image)."""
        for image in images:
            check_image_size(image.shape[1], image.shape[0])
        self._ready(*self._alignment.detection_modules)
        if hasattr(self._alignment, "detect_batch"):
            return self._alignment.detect_batch(images)
        return [self._alignment.detect(image) for image in images]

    def landmarks_in_boxes(self, images: list[np.ndarray], boxes: list[FaceBox]) -> list[np.ndarray]:
        """:meth:`landmarks_in_box` of each image and box; 2D-FAN runs once per batch."""
        self._ready(*self._alignment.landmark_modules)
        if hasattr(self._alignment, "landmarks_batch"):
            return self._alignment.landmarks_batch(images, boxes)
        return [self._alignment.landmarks(image, box) for image, box in zip(images, boxes, strict=True)]

    def parse_batch(self, images: list[np.ndarray], parser: str | None = None) -> list[np.ndarray]:
        """:meth:`parse` of each image; BiSeNet runs once per batch (facer per image)."""
        for image in images:
            check_image_size(image.shape[1], image.shape[0])
        backend = self._parser(parser)
        if hasattr(backend, "parse_batch"):
            return backend.parse_batch(images)
        return [backend.parse(image) for image in images]

    def jaw_landmarks_batch(self, portraits: list[np.ndarray], landmarks: list[np.ndarray]
                            ) -> list[np.ndarray | ImageInputError]:
        """:meth:`jaw_landmarks` of each portrait (D3DFR runs once per batch); a face the 3D fit
        cannot use gets its error in its place."""
        if self.jaw == "2d":
            return [np.asarray(points) for points in landmarks]
        from .d3dfr import five_points_from_68

        self._ready(self._d3dfr.network)
        return self._d3dfr.landmarks68_batch(portraits, [five_points_from_68(points) for points in landmarks])

    def estimate_aus(self, images: list[np.ndarray], face_index: int = 0,
                     landmarks: list[np.ndarray] | None = None) -> AUVector:
        """AU intensities (0..5) of the chosen face in each image (``landmarks`` if already known)."""
        if len(images) == 0:
            raise ImageInputError("no images to estimate AUs on: the batch is empty")
        for image in images:
            check_image_size(image.shape[1], image.shape[0])
        if landmarks is None:
            landmarks = [self.landmarks(image, face_index) for image in images]
        self._ready(self._au_estimator.model)
        return self._au_estimator.estimate(list(zip(images, landmarks)))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")


@functools.lru_cache(maxsize=8)
def shared_toolkit(weights_root: str, device: str, detector: str = "face_alignment", jaw: str = "3dmm",
                   placement: Placement | None = None, search: tuple = (),
                   progress: assets.Progress | None = None) -> FaceToolkit:
    """One toolkit per weights folder, device, detector, jaw source, placement, search folders and
    download reporter, so networks load once per process (the parser is chosen per call). Callers
    never change a shared toolkit: everything it depends on is part of its key."""
    return FaceToolkit(weights_root, device, detector=detector, jaw=jaw, placement=placement, search=search,
                       progress=progress)


def default_toolkit(device: torch.device | str = "cpu", parser: str = "bisenet",
                    weights_root: str | os.PathLike | None = None, detector: str = "face_alignment",
                    jaw: str = "3dmm") -> FaceToolkit:
    """The toolkit outside ComfyUI: weights under ``<cache>/preprocessing`` unless ``weights_root`` is given."""
    return FaceToolkit(weights_root or assets.preprocessing_dir(), device, parser, detector=detector, jaw=jaw)


@dataclass(frozen=True)
class EstimateJob:
    """``python -m magicface_core estimate``: the AU intensities of faces."""

    image: list[Path] | None = option(None, "the images", required=True, nargs="+")
    face_index: int = option(0, "which face (0 = largest)", min=0)
    device: DeviceSettings = group(DeviceSettings)
    faces: FaceSettings = group(FaceSettings)

    def __post_init__(self):
        require(self, "image")
        object.__setattr__(self, "image", [Path(p) for p in self.image])
        check_face_index(self.face_index)


@dataclass(frozen=True)
class ConditionJob:
    """``python -m magicface_core condition``: the condition image of a portrait."""

    image: Path | None = option(None, "a 512x512 portrait", required=True)
    out: Path | None = option(None, "the condition image", required=True)
    overwrite: bool = option(False, "replace the output file if it exists")
    device: DeviceSettings = group(DeviceSettings)
    faces: FaceSettings = group(FaceSettings)

    def __post_init__(self):
        require(self, "image", "out")
        object.__setattr__(self, "image", as_path(self.image))
        object.__setattr__(self, "out", as_path(self.out))
