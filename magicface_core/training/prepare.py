"""``python -m magicface_core prepare --videos DIR --out DATA``: build a training set from videos.

For every clip (a video file, or a folder of frames) it samples frames, crops the face like the
authors' portraits, estimates the 12 AUs, renders the condition image, and saves both images;
then it pairs frames of the same clip that lie at least ``--min-gap`` frames apart (so pose or
background differ). Everything is cached under DATA, with ``index.json`` listing frames and
pairs, so training does no face processing. A clip is done once its ``done.json`` exists: an
interrupted run resumes where it stopped. Unreadable videos and frames without a usable face are
skipped and counted.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..devices import DeviceSettings
from ..errors import ImageInputError, MagicFaceError, NoFaceError
from ..faces.toolkit import FaceSettings
from ..files import atomic_path
from ..imaging import load_image, save_image
from ..settings import as_path, check_limits, group, option, require
from .dataset import Frame, Pair, write_index

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
CLIPS = "clips"
DONE = "done.json"


@dataclass
class Settings:
    """Which frames of each clip are kept and paired (stored in index.json with the data)."""

    frame_step: int = option(5, "keep every n-th frame", min=1)
    max_frames: int = option(200, "frames kept per clip", min=1)
    min_gap: int = option(30, "frames between the two frames of a pair (so pose or background differ)", min=0)
    pairs_per_clip: int = option(50, "pairs drawn per clip", min=0)
    seed: int = option(0, "the draw of the pairs", min=0)


@dataclass(frozen=True)
class PrepareJob:
    """Everything ``python -m magicface_core prepare`` takes, checked when made (before the face networks load)."""

    videos: Path | None = option(None, "folder of videos and/or frame folders", required=True)
    out: Path | None = option(None, "output folder (re-run to resume)", required=True)
    settings: Settings = group(Settings)
    device: DeviceSettings = group(DeviceSettings, skip=("dtype",))  # the face networks run in fp32
    faces: FaceSettings = group(FaceSettings)

    def __post_init__(self):
        require(self, "videos", "out")
        object.__setattr__(self, "videos", as_path(self.videos))
        object.__setattr__(self, "out", as_path(self.out))
        check_settings(self.settings)


@dataclass
class Report:
    clips: int = 0
    unreadable_clips: list[str] = field(default_factory=list)
    frames_kept: int = 0
    frames_without_face: int = 0
    pairs: int = 0


def find_clips(folder: Path) -> list[Path]:
    """Video files and folders of frames directly under ``folder``, in name order."""
    if not folder.is_dir():
        raise MagicFaceError(f"{folder} is not a folder: give the folder holding the videos or frame folders")
    return sorted(p for p in folder.iterdir()
                  if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
                  or (p.is_dir() and any(c.suffix.lower() in IMAGE_SUFFIXES for c in p.iterdir())))


def read_frames(clip: Path, settings: Settings) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, RGB image) for every ``frame_step``-th frame, at most ``max_frames``."""
    if clip.is_dir():
        files = sorted(p for p in clip.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for number in range(0, len(files), settings.frame_step)[: settings.max_frames]:
            try:
                yield number, load_image(files[number])
            except ImageInputError as exc:
                logger.warning("skipping %s: %s", files[number], exc)
        return
    import cv2

    capture = cv2.VideoCapture(str(clip))
    if not capture.isOpened():
        raise OSError(f"cannot open {clip}")
    try:
        number = kept = 0
        while kept < settings.max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if number % settings.frame_step == 0:
                kept += 1
                yield number, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            number += 1
        if number == 0:
            raise OSError(f"no frame could be decoded from {clip}")
    finally:
        capture.release()


def clip_keys(clips: list[Path]) -> dict[Path, str]:
    """Each clip's folder name and key: its stem, or its whole name where two clips share a stem
    (a.mp4 and a.mkv), so no clip reuses another's done.json."""
    stems = [c.stem for c in clips]
    return {c: c.stem if stems.count(c.stem) == 1 else c.name for c in clips}


def check_settings(settings: Settings) -> None:
    """Refuse settings that would give no frames or loop forever, before any model loads."""
    check_limits(settings, flag_style=True)


def _read_done(done: Path) -> dict | None:
    """A clip's finished record, or None when absent or half-written (the clip is then done again)."""
    try:
        record = json.loads(done.read_text())
        return record if isinstance(record, dict) and {"frames", "frames_without_face"} <= record.keys() else None
    except (OSError, ValueError):
        return None


def process_clip(clip: Path, out: Path, toolkit, settings: Settings, key: str | None = None) -> dict:
    """Crop, AUs and condition for the clip's frames; returns (and stores) its done.json record."""
    key = clip.stem if key is None else key
    folder = out / CLIPS / key
    folder.mkdir(parents=True, exist_ok=True)
    frames, without_face = [], 0
    for number, image in read_frames(clip, settings):
        try:
            portrait, _ = toolkit.crop(image)
            landmarks = toolkit.landmarks(portrait)
            condition, _ = toolkit.condition(portrait, landmarks)
            aus = toolkit.estimate_aus([portrait], landmarks=[landmarks])
        except (NoFaceError, ImageInputError) as exc:
            without_face += 1
            logger.info("%s frame %d: %s", clip.name, number, exc)
            continue
        image_path, condition_path = folder / f"{number:06d}.png", folder / f"{number:06d}_cond.png"
        save_image(portrait, image_path)
        save_image(condition, condition_path)
        frames.append(asdict(Frame(key, number, str(image_path.relative_to(out)),
                                   str(condition_path.relative_to(out)), tuple(aus.values[0].tolist()))))
    record = {"frames": frames, "frames_without_face": without_face}
    with atomic_path(folder / DONE) as temporary:  # a crash never leaves a half-written done.json
        temporary.write_text(json.dumps(record))
    return record


def make_pairs(frames: list[Frame], settings: Settings) -> list[Pair]:
    """Same-clip pairs at least ``min_gap`` frames apart, up to ``pairs_per_clip`` per clip, both directions."""
    by_clip: dict[str, list[int]] = {}
    for index, frame in enumerate(frames):
        by_clip.setdefault(frame.clip, []).append(index)
    pairs = []
    for clip, indices in sorted(by_clip.items()):
        candidates = [(a, b) for a in indices for b in indices
                      if a != b and abs(frames[a].frame - frames[b].frame) >= settings.min_gap]
        rng = random.Random(f"{settings.seed}:{clip}")
        rng.shuffle(candidates)
        pairs.extend(Pair(a, b) for a, b in candidates[: settings.pairs_per_clip])
    return pairs


def prepare(videos: Path, out: Path, toolkit, settings: Settings) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    report = Report()
    frames: list[Frame] = []
    check_settings(settings)
    clips = find_clips(videos)
    if not clips:
        raise MagicFaceError(f"{videos} holds no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) "
                             f"and no folders of frames: nothing to prepare")
    keys = clip_keys(clips)
    for clip in clips:
        record = _read_done(out / CLIPS / keys[clip] / DONE)
        if record is None:
            try:
                record = process_clip(clip, out, toolkit, settings, keys[clip])
            except OSError as exc:
                report.unreadable_clips.append(clip.name)
                logger.warning("skipping %s: %s", clip.name, exc)
                continue
        report.clips += 1
        report.frames_without_face += record["frames_without_face"]
        frames.extend(Frame(**{**f, "aus": tuple(f["aus"])}) for f in record["frames"])
    report.frames_kept = len(frames)
    pairs = make_pairs(frames, settings)
    report.pairs = len(pairs)
    write_index(out, frames, pairs, {**asdict(report), "settings": asdict(settings)})
    return report


def run(job: PrepareJob, toolkit) -> Report:
    """The prepare command: ``job``'s clips through ``toolkit``, and a line that sums it up."""
    report = prepare(job.videos, job.out, toolkit, job.settings)
    print(f"{report.clips} clips ({len(report.unreadable_clips)} unreadable: {', '.join(report.unreadable_clips) or '-'}), "
          f"{report.frames_kept} frames kept, {report.frames_without_face} without a usable face, "
          f"{report.pairs} pairs -> {job.out / 'index.json'}")
    return report
