"""The two video edits, top to bottom.

**Edit a clip** (each frame keeps its pose, background and performance; an expression change is
added). For frame t, as in MagicFace's training pairs: identity = one reference frame,
condition = frame t's own background and jaw, AU delta = AUs(t) + change(t) - AUs(reference).

    frames -> track the face -> AUs per frame, smoothed -> deltas
           -> identity features once (reference frame)
           -> per chunk of frames: crops -> conditions -> sampling (same start noise) -> decode
              -> paste back through the smoothed transform

**Animate a portrait** (a still photo follows a driving clip's expressions): the driving AUs are
estimated and smoothed; delta(t) = AUs(t) - AUs(neutral frame) (relative) or AUs(t) - the
portrait's AUs (absolute); every delta is sampled against the portrait's one identity and condition.

Memory stays flat in the clip's length: frames are read as they are needed (a
:class:`~magicface_core.video.io.VideoFile` decodes afresh on each pass) and sampled
``frames_per_chunk`` at a time; what is kept for the whole clip is small (a transform, 68
points and 12 AUs per frame). Progress counts frames x steps; a progress callback that raises
stops the edit within the step.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ..au import AUVector
from ..devices import DeviceSettings
from ..batching import ChunkProgress, chunk_items, chunks
from ..edit import EditSettings, decode_images, encode_identity, encode_images
from ..errors import NoFaceError, VideoInputError
from ..faces.crop import crop_to_transform, paste_back
from ..faces.toolkit import FaceSettings, FaceToolkit
from ..imaging import as_portrait, load_image, needs_resize_to_portrait
from ..model.magicface import MagicFace
from ..model.sd15 import SD15Parts
from ..settings import ModelSettings, as_path, check_au_delta, check_face_index, group, option, require
from .keyframes import INTERPOLATIONS, ExpressionChange
from .smoothing import AU_CUTOFF_HZ, fill_gaps, smooth_aus
from .tracking import FaceTrack, TrackSettings, track_faces

Frames = Iterable[np.ndarray]  # re-iterable: a list, or a VideoFile
Progress = Callable[[int, int], None]  # (frame-steps done, frame-steps in all)
ANIMATE_MODES = ("relative", "absolute")


@dataclass(frozen=True)
class VideoSettings:
    """How a clip is followed and sampled (the CLI's video and animate, and the nodes' defaults)."""

    # 8: the CLI's long-standing value and its memory figures (docs/PERFORMANCE.md); the KSampler node's too.
    frames_per_chunk: int = option(8, "frames sampled together; memory grows with this, not with the clip", min=1)
    detect_every: int = option(1, "run face detection on every N-th frame", min=1)
    face_index: int = option(0, "which face to follow (0 = largest)", min=0)
    au_cutoff_hz: float = option(AU_CUTOFF_HZ, "low-pass cutoff (Hz) for the AU trajectory; 0 turns smoothing off",
                                 min=0.0, flag="--au-cutoff", metavar="HZ")

    def check(self) -> None:
        if self.frames_per_chunk < 1:
            raise VideoInputError(f"frames_per_chunk must be 1 or more, got {self.frames_per_chunk}")
        if not (isinstance(self.au_cutoff_hz, numbers.Real) and math.isfinite(self.au_cutoff_hz)
                and self.au_cutoff_hz >= 0):
            raise VideoInputError(f"the AU smoothing cutoff (--au-cutoff, au_cutoff_hz) must be a finite number of Hz, "
                                  f"0 (off) or more, got {self.au_cutoff_hz!r}")
        self.track().check()

    def track(self) -> TrackSettings:
        return TrackSettings(face_index=self.face_index, detect_every=self.detect_every)


@dataclass(frozen=True)
class VideoJob:
    """Everything an edit of a clip takes (``python -m magicface_core video``), checked when made."""

    video: Path | None = option(None, "the clip to edit", required=True)
    au: list[str] = option(help="an AU change added to every frame, e.g. AU12=3 (repeatable, or comma-separated)",
                           repeat=True, metavar="AU=VALUE")
    keyframes: str | None = option(None, 'keyframed AU changes, e.g. "0:AU12=0;30:AU12=3;60:AU12=0" (frames from 0)',
                                   metavar="SPEC")
    interpolation: str = option("linear", "how keyframes blend", choices=INTERPOLATIONS)
    reference_frame: int | None = option(None, "the frame whose face gives the identity (default: the first frame "
                                               "with a face)", min=0)
    out: Path | None = option(None, "the edited clip", required=True)
    model: ModelSettings = group(ModelSettings)
    sampling: EditSettings = group(EditSettings)
    clip: VideoSettings = group(VideoSettings)
    overwrite: bool = option(False, "replace --out if it exists")
    device: DeviceSettings = group(DeviceSettings)
    faces: FaceSettings = group(FaceSettings)
    change: ExpressionChange = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        require(self, "video", "out")
        object.__setattr__(self, "video", as_path(self.video))
        object.__setattr__(self, "out", as_path(self.out))
        check_face_index(self.clip.face_index)
        self.clip.check()
        change = ExpressionChange(check_au_delta(AUVector.parse(",".join(self.au))), self.keyframes,
                                  self.interpolation)
        object.__setattr__(self, "change", change)


@dataclass(frozen=True)
class AnimateJob:
    """Everything animating a portrait takes (``python -m magicface_core animate``), checked when made."""

    image: Path | None = option(None, "a 512x512 portrait, or any photo with --crop", required=True)
    driving: Path | None = option(None, "the clip whose expressions to follow", required=True)
    mode: str = option("relative", {"--relative": "delta = driving AUs - driving AUs at the neutral frame",
                                    "--absolute": "delta = driving AUs - the portrait's AUs"},
                       choices=ANIMATE_MODES, switches={"--relative": "relative", "--absolute": "absolute"})
    neutral_frame: int | None = option(None, "with --relative: the driving frame taken as neutral (default: the "
                                             "first with a face)", min=0)
    crop: bool = option(False, "find the face in a full photo and paste the result back")
    out: Path | None = option(None, "the animated clip", required=True)
    model: ModelSettings = group(ModelSettings)
    sampling: EditSettings = group(EditSettings)
    clip: VideoSettings = group(VideoSettings)
    overwrite: bool = option(False, "replace --out if it exists")
    device: DeviceSettings = group(DeviceSettings)
    faces: FaceSettings = group(FaceSettings)

    def __post_init__(self):
        require(self, "image", "driving", "out")
        for name in ("image", "driving", "out"):
            object.__setattr__(self, name, as_path(getattr(self, name)))
        if self.mode not in ANIMATE_MODES:
            raise VideoInputError(f"unknown mode {self.mode!r}: choose one of {', '.join(ANIMATE_MODES)}")
        check_face_index(self.clip.face_index)
        self.clip.check()

    def load_portrait(self) -> np.ndarray:
        """The portrait, refused before any model loads when it cannot be animated (non-square without crop)."""
        photo = load_image(self.image)
        if not self.crop:
            needs_resize_to_portrait(photo.shape[1], photo.shape[0], "the portrait")
        return photo


@dataclass
class VideoReport:
    frames: int
    edited: int
    without_face: list[int] = field(default_factory=list)
    reference_frame: int | None = None
    animated: bool = False  # frames without a face: held AUs (animate), or passed through (edit)

    def __str__(self) -> str:
        text = f"{self.edited} of {self.frames} frames {'made' if self.animated else 'edited'}"
        if self.without_face:
            shown = ", ".join(map(str, self.without_face[:20])) + (", ..." if len(self.without_face) > 20 else "")
            what = "took the nearest frame's AUs" if self.animated else "passed through unchanged"
            text += f"; {len(self.without_face)} without a face {what} ({shown})"
        if self.reference_frame is not None:
            text += f"; {'neutral' if self.animated else 'identity from'} frame {self.reference_frame}"
        return text


def check_frame_index(index: int | None, frames: int, what: str) -> None:
    """A frame number given by the user (``what`` names it, e.g. "--reference-frame"): None, or 0..frames-1."""
    if index is None:
        return
    if index < 0:
        raise VideoInputError(f"{what} {index} is negative: frames count from 0 (the clip's first frame)")
    if index >= frames:
        raise VideoInputError(f"{what} {index} is past the clip's end: it has {frames} frames, 0 to {frames - 1}")


def check_clip_job(clip, out: str | os.PathLike, change: ExpressionChange | None = None,
                   reference_frame: int | None = None, neutral_frame: int | None = None) -> None:
    """What can be checked of a video job from the clip's container alone, before any model loads:
    the output container, and every frame number (reference, neutral, keyframes) against the clip's length."""
    from .io import check_video_output

    check_video_output(out, audio_from=clip.path)
    frames = clip.count_frames()
    check_frame_index(reference_frame, frames, "--reference-frame")
    check_frame_index(neutral_frame, frames, "--neutral-frame")
    if change is not None:
        change.check_frames(frames)


def edit_clip(frames: Frames, fps: float, change: ExpressionChange, model: MagicFace, sd15: SD15Parts,
              faces: FaceToolkit, settings: VideoSettings = VideoSettings(), edit: EditSettings = EditSettings(),
              reference_frame: int | None = None, on_progress: Progress | None = None
              ) -> tuple[VideoReport, Iterator[np.ndarray]]:
    """Plan the edit (every check, tracking, AUs, identity) and return its report and the edited frames.

    The frames are made as the iterator is consumed, chunk by chunk.
    """
    settings.check()
    # 1. Follow the face: a smoothed crop transform per frame (None: no face, the frame passes through).
    track = track_faces(frames, faces, fps, settings.track())
    if not track.found:
        raise track.no_face_error()

    # 2. The reference frame gives the identity; by default the first frame with a face.
    reference = track.found[0] if reference_frame is None else reference_frame
    if not 0 <= reference < len(track):
        raise VideoInputError(f"the reference frame {reference} is outside the clip (frames 0..{len(track) - 1})")
    if track.transforms[reference] is None:
        raise NoFaceError(f"no face in the reference frame {reference}; frames with a face: {_ranges(track.found)}")

    # 3. The AUs of each frame, smoothed over time, and 4. each frame's AU delta.
    aus = au_trajectory(frames, track, faces, fps, settings)
    deltas = aus + change.per_frame(len(track)) - aus[reference]

    # 5. Identity features, once.
    portrait = crop_to_transform(_nth(frames, reference), track.transforms[reference])
    features, text = encode_identity(model, sd15, portrait)

    report = VideoReport(len(track), len(track.found), track.missing, reference)
    sample = _ChunkSampler(model, sd15, features, text, edit, len(track.found), on_progress)

    # 6. Chunk by chunk: crops, conditions from each frame itself, sampling, decode, paste back.
    def render() -> Iterator[np.ndarray]:
        for chunk in chunk_items(enumerate(frames), settings.frames_per_chunk):
            todo = [(t, frame) for t, frame in chunk if track.transforms[t] is not None]
            edited = {}
            if todo:
                crops = [crop_to_transform(frame, track.transforms[t]) for t, frame in todo]
                conditions = [faces.condition(crop, track.transforms[t].to_crop(track.landmarks[t]))[0]
                              for (t, _), crop in zip(todo, crops)]
                images = sample(encode_images(sd15, conditions), _rows(deltas, [t for t, _ in todo]))
                edited = {t: paste_back(frame, image, track.transforms[t]) for (t, frame), image in zip(todo, images)}
            for t, frame in chunk:
                yield edited.get(t, frame)

    return report, render()


def animate_portrait(photo: np.ndarray, driving: Frames, fps: float, model: MagicFace, sd15: SD15Parts,
                     faces: FaceToolkit, settings: VideoSettings = VideoSettings(),
                     edit: EditSettings = EditSettings(), mode: str = "relative", neutral_frame: int | None = None,
                     crop: bool = False, on_progress: Progress | None = None
                     ) -> tuple[VideoReport, Iterator[np.ndarray]]:
    """The photo's face following the driving clip's expressions: one output frame per driving frame."""
    settings.check()
    if mode not in ANIMATE_MODES:
        raise VideoInputError(f"unknown mode {mode!r}: choose one of {', '.join(ANIMATE_MODES)}")
    # 1. The portrait: its 512 crop, condition and identity, once.
    transform = None
    if crop:
        portrait, transform = faces.crop(photo, settings.face_index)
    else:
        portrait = as_portrait(photo)
    condition, _ = faces.condition(portrait)
    features, text = encode_identity(model, sd15, portrait)
    cond_latents = encode_images(sd15, [condition])

    # 2. The driving clip's AU trajectory.
    track = track_faces(driving, faces, fps, settings.track())
    if len(track) < 2:
        raise VideoInputError(f"the driving clip has {len(track)} frame; animating needs at least 2")
    if not track.found:
        raise track.no_face_error("the driving clip")
    aus = au_trajectory(driving, track, faces, fps, settings)

    # 3. The deltas: relative to a neutral driving frame, or absolute against the portrait's own AUs.
    if mode == "relative":
        neutral = track.found[0] if neutral_frame is None else neutral_frame
        check_frame_index(neutral, len(track), "the neutral frame")
        if track.transforms[neutral] is None:
            raise NoFaceError(f"no face in the neutral frame {neutral}; frames with a face: {_ranges(track.found)}")
        deltas = aus - aus[neutral]
    else:
        neutral = None
        deltas = aus - faces.estimate_aus([portrait])

    # 4. Chunk by chunk: sample every delta against the one portrait, decode, paste back into the photo.
    report = VideoReport(len(track), len(track), track.missing, neutral, animated=True)
    sample = _ChunkSampler(model, sd15, features, text, edit, len(track), on_progress)

    def render() -> Iterator[np.ndarray]:
        for index in chunks(len(track), settings.frames_per_chunk):
            images = sample(cond_latents, deltas[index])
            for image in images:
                yield image if transform is None else paste_back(photo, image, transform)

    return report, render()


def au_trajectory(frames: Frames, track: FaceTrack, faces: FaceToolkit, fps: float,
                  settings: VideoSettings) -> AUVector:
    """AU intensities per frame (from each frame's own landmarks), gaps held, smoothed over time."""
    rows = np.full((len(track), 12), np.nan, dtype=np.float32)
    for chunk in chunk_items(enumerate(frames), settings.frames_per_chunk):
        todo = [(t, frame) for t, frame in chunk if track.landmarks[t] is not None]
        if todo:
            aus = faces.estimate_aus([frame for _, frame in todo], landmarks=[track.landmarks[t] for t, _ in todo])
            rows[[t for t, _ in todo]] = aus.values.numpy()
    return smooth_aus(AUVector(fill_gaps(rows)), fps, settings.au_cutoff_hz)


class _ChunkSampler:
    """Samples one chunk of deltas at a time from the same identity and the same start noise."""

    def __init__(self, model, sd15, features, text, edit: EditSettings, frames: int, on_progress: Progress | None):
        self.model, self.sd15, self.features, self.text, self.edit = model, sd15, features, text, edit
        report = None if on_progress is None else (lambda done, total, _denoised: on_progress(done, total))
        self.progress = ChunkProgress(frames, edit.steps, report)

    def __call__(self, cond_latents: torch.Tensor, deltas: AUVector) -> list[np.ndarray]:
        # The same seed draws the same start noise for every chunk: every frame starts alike.
        latents = self.model.sample(self.features, cond_latents, deltas, self.text, steps=self.edit.steps,
                                    guidance=self.edit.guidance, sampler=self.edit.sampler, seed=self.edit.seed,
                                    callback=self.progress.for_chunk(len(deltas)))
        return decode_images(self.sd15, latents)


def _nth(frames: Frames, index: int) -> np.ndarray:
    frame = next(itertools.islice(iter(frames), index, None), None)
    if frame is None:
        raise VideoInputError(f"the clip has no frame {index}")
    return frame


def _rows(vectors: AUVector, indices: list[int]) -> AUVector:
    return AUVector(vectors.values[indices])


def _ranges(indices: list[int]) -> str:
    spans, start = [], None
    for i, t in enumerate(indices):
        if start is None:
            start = t
        if i + 1 == len(indices) or indices[i + 1] != t + 1:
            spans.append(str(start) if start == t else f"{start}-{t}")
            start = None
    return ", ".join(spans[:10]) + (", ..." if len(spans) > 10 else "")
