"""``python -m magicface_core prepare --videos DIR --out DATA``: build a training set from videos.

For every clip (a video file, or a folder of frames) it samples frames, crops the face like the
authors' portraits, estimates the 12 AUs, renders the condition image, and saves both images;
then it pairs frames of the same clip that lie at least ``--min-gap`` frames apart (so pose or
background differ). Everything is cached under DATA, with ``index.json`` listing frames and
pairs, so training does no face processing. A clip is done once its ``done.json`` exists: an
interrupted run resumes where it stopped. Unreadable videos and frames without a usable face are
skipped and counted.

Scaling out (:mod:`magicface_core.scaleout`): under ``torchrun`` / ``accelerate launch`` each process
takes every N-th clip by sorted clip key, and ``--shard I/N`` does the same for independent jobs
(a Slurm array). Each process writes only its clips' folders (every file atomically, ``done.json``
last). ``index.json`` is written once, from the ``done.json`` files on disk, after every clip is
done: by rank 0 after a barrier, and with ``--shard`` by whichever job finds every clip done when
it finishes (jobs finishing together write the same bytes), or by ``prepare --merge``. So the
index and every image are the same however the work was split. ``--batch-size`` frames of a clip
go through each face network at once; batches never span clips, so the split does not change them.
Each ``done.json`` records the frame settings it was made with; a run (or a shard, or the merge)
with other frame settings is refused before any work, so one index never mixes two samplings.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import scaleout
from ..devices import DeviceSettings
from ..errors import ImageInputError, MagicFaceError, NoFaceError, SettingsError
from ..faces.toolkit import FaceSettings
from ..files import atomic_path
from ..imaging import load_image, save_image
from ..scaleout import Shard
from ..settings import as_path, check_limits, group, option, require
from .dataset import INDEX_FILE, Frame, Pair, write_index

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
    batch_size: int = option(1, "frames of a clip that go through each face network at once", min=1)
    shard: str = option("0/1", "I/N: this job's part of the clips when N jobs share the work (a Slurm array); "
                               "the last to finish writes index.json")
    merge: bool = option(False, "only write index.json from the clips the shards prepared")
    device: DeviceSettings = group(DeviceSettings, skip=("dtype",))  # the face networks run in fp32
    faces: FaceSettings = group(FaceSettings)

    def __post_init__(self):
        require(self, "videos", "out")
        object.__setattr__(self, "videos", as_path(self.videos))
        object.__setattr__(self, "out", as_path(self.out))
        check_settings(self.settings)
        check_batch_size(self.batch_size)
        Shard.parse(self.shard)


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


def check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SettingsError(f"--batch-size must be a whole number, at least 1 (got {batch_size!r})")


# The settings that decide a clip's own files; the pairing settings only shape index.json, which
# each merge writes anew from its own.
CLIP_FIELDS = ("frame_step", "max_frames")


def clip_settings(settings: Settings) -> dict:
    return {name: getattr(settings, name) for name in CLIP_FIELDS}


def check_clips_match(out: Path, keys: dict[Path, str], settings: Settings) -> None:
    """Refuse, before any work, clips in ``out`` prepared with other frame settings (an earlier run,
    or another shard started with other flags): their frames would not be this run's."""
    wanted = clip_settings(settings)
    for clip, key in keys.items():
        record = _read_done(out / CLIPS / key / DONE)
        # an unreadable clip is tried again by every run, so its settings do not matter
        made = None if record is None or "unreadable" in record else record.get("settings")
        if isinstance(made, dict) and made != wanted:
            differ = ", ".join(f"--{n.replace('_', '-')} {made.get(n)!r} there, {wanted[n]!r} here"
                               for n in CLIP_FIELDS if made.get(n) != wanted[n])
            raise SettingsError(f"{clip.name} was prepared in {out} with other frame settings ({differ}): "
                                f"give every shard and rerun the same settings, or prepare into a new --out")


def _read_done(done: Path) -> dict | None:
    """A clip's record (its frames, or why it was unreadable), or None when absent or half-written
    (the clip is then done again)."""
    try:
        record = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if {"frames", "frames_without_face"} <= record.keys() or isinstance(record.get("unreadable"), str):
        return record
    return None


FrameFaces = tuple[np.ndarray, np.ndarray, list[float]]  # portrait, condition image, 12 AUs


def face_of_frame(image: np.ndarray, toolkit) -> FrameFaces | MagicFaceError:
    """(portrait, condition image, 12 AUs) of one frame, or the reason it has no usable face."""
    try:
        portrait, _ = toolkit.crop(image)
        landmarks = toolkit.landmarks(portrait)
        condition, _ = toolkit.condition(portrait, landmarks)
        aus = toolkit.estimate_aus([portrait], landmarks=[landmarks])
    except (NoFaceError, ImageInputError) as exc:
        return exc
    return portrait, condition, aus.values[0].tolist()


def faces_of_frames(images: list[np.ndarray], toolkit) -> list[FrameFaces | MagicFaceError]:
    """:func:`face_of_frame` of each frame, each network run once on all the frames still in.

    The same steps (``crop`` -> the portrait's ``landmarks`` -> ``condition`` -> ``estimate_aus``)
    through the toolkit's batch calls; a frame that fails a step drops out with its reason."""
    from ..faces.crop import crop_from_landmarks
    from ..faces.condition import render_condition
    from ..faces.landmarks import pick_face

    results: list = [None] * len(images)

    def landmarks_of(pictures: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        keys, boxes = [], []
        for k, found in zip(pictures, toolkit.detect_batch(list(pictures.values()))):
            try:
                boxes.append(pick_face(found, 0, pictures[k].shape))
                keys.append(k)
            except (NoFaceError, ImageInputError) as exc:
                results[k] = exc
        return dict(zip(keys, toolkit.landmarks_in_boxes([pictures[k] for k in keys], boxes)))

    portraits = {}
    for k, points in landmarks_of(dict(enumerate(images))).items():
        try:
            portraits[k] = crop_from_landmarks(images[k], points)[0]
        except (NoFaceError, ImageInputError) as exc:
            results[k] = exc
    landmarks = landmarks_of(portraits)
    keys = list(landmarks)
    parsings = toolkit.parse_batch([portraits[k] for k in keys])
    jaws = toolkit.jaw_landmarks_batch([portraits[k] for k in keys], [landmarks[k] for k in keys])
    conditions = {}
    for k, parsing, jaw in zip(keys, parsings, jaws):
        try:
            if isinstance(jaw, MagicFaceError):
                raise jaw
            conditions[k] = render_condition(portraits[k], parsing, jaw)
        except (NoFaceError, ImageInputError) as exc:
            results[k] = exc
    keys = list(conditions)
    if keys:
        aus = toolkit.estimate_aus([portraits[k] for k in keys], landmarks=[landmarks[k] for k in keys])
        for row, k in enumerate(keys):
            results[k] = (portraits[k], conditions[k], aus.values[row].tolist())
    return results


def _batches(frames: Iterator[tuple[int, np.ndarray]], size: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def process_clip(clip: Path, out: Path, toolkit, settings: Settings, key: str | None = None,
                 batch_size: int = 1) -> dict:
    """Crop, AUs and condition for the clip's frames; returns (and stores) its done.json record."""
    key = clip.stem if key is None else key
    folder = out / CLIPS / key
    folder.mkdir(parents=True, exist_ok=True)
    frames, without_face = [], 0
    for batch in _batches(read_frames(clip, settings), batch_size):
        images = [image for _, image in batch]
        results = [face_of_frame(images[0], toolkit)] if batch_size == 1 else faces_of_frames(images, toolkit)
        for (number, _), result in zip(batch, results):
            if isinstance(result, MagicFaceError):
                without_face += 1
                logger.info("%s frame %d: %s", clip.name, number, result)
                continue
            portrait, condition, aus = result
            image_path, condition_path = folder / f"{number:06d}.png", folder / f"{number:06d}_cond.png"
            save_image(portrait, image_path)
            save_image(condition, condition_path)
            frames.append(asdict(Frame(key, number, str(image_path.relative_to(out)),
                                       str(condition_path.relative_to(out)), tuple(aus))))
    record = {"frames": frames, "frames_without_face": without_face, "settings": clip_settings(settings)}
    _write_record(folder, record)
    return record


def _write_record(folder: Path, record: dict) -> None:
    with atomic_path(folder / DONE) as temporary:  # a crash never leaves a half-written done.json
        temporary.write_text(json.dumps(record))


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


def _clips(videos: Path) -> dict[Path, str]:
    """Every clip under ``videos`` (in name order) with its key."""
    clips = find_clips(videos)
    if not clips:
        raise MagicFaceError(f"{videos} holds no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) "
                             f"and no folders of frames: nothing to prepare")
    return clip_keys(clips)


def prepare(videos: Path, out: Path, toolkit, settings: Settings, shard: Shard = Shard(),
            batch_size: int = 1) -> Report | None:
    """Prepare this process's clips, then write ``index.json`` if every clip is done.

    ``shard``: this job's part of the clips (``--shard``); under a launcher it is split again over
    the job's processes. Returns the index's report, or None where this process leaves the index to
    another (a launcher's rank 0, or the shard that finishes last)."""
    check_settings(settings)
    check_batch_size(batch_size)
    processes = scaleout.launched()
    mine = shard.split(processes)
    out.mkdir(parents=True, exist_ok=True)
    keys = _clips(videos)
    check_clips_match(out, keys, settings)
    own = set(mine.take(keys.values()))
    for clip, key in keys.items():
        if key not in own:
            continue
        record = _read_done(out / CLIPS / key / DONE)
        if record is not None and "unreadable" not in record:
            continue
        try:
            process_clip(clip, out, toolkit, settings, key, batch_size)
        except OSError as exc:
            logger.warning("skipping %s: %s", clip.name, exc)
            # recorded, so that whoever merges counts it; tried again on the next run
            _write_record(out / CLIPS / key, {"unreadable": str(exc)})
    scaleout.barrier(processes)  # every process of this job has written its clips
    try:
        if processes.index != 0:
            return None
        waiting = [clip.name for clip, key in keys.items() if _read_done(out / CLIPS / key / DONE) is None]
        if waiting:
            logger.info("shard %s done; %d clip(s) of other shards are not done yet (%s); the shard that "
                        "finishes last writes %s, or run prepare --merge", shard, len(waiting),
                        ", ".join(waiting[:3]), INDEX_FILE)
            return None
        return merge(videos, out, settings)
    finally:
        scaleout.finish()


def merge(videos: Path, out: Path, settings: Settings) -> Report:
    """``index.json`` from every clip's ``done.json`` (all must be done), in clip order.

    Written only when its bytes change, so re-running a finished run leaves everything as it was."""
    check_settings(settings)
    keys = _clips(videos)
    check_clips_match(out, keys, settings)
    report = Report()
    frames: list[Frame] = []
    waiting = []
    for clip, key in keys.items():
        record = _read_done(out / CLIPS / key / DONE)
        if record is None:
            waiting.append(clip.name)
        elif "unreadable" in record:
            report.unreadable_clips.append(clip.name)
        else:
            report.clips += 1
            report.frames_without_face += record["frames_without_face"]
            frames.extend(Frame(**{**f, "aus": tuple(f["aus"])}) for f in record["frames"])
    if waiting:
        raise MagicFaceError(
            f"{len(waiting)} clip(s) of {videos} are not prepared in {out} yet ({', '.join(waiting[:5])}"
            f"{', ...' if len(waiting) > 5 else ''}): run the shards that hold them first (or prepare without --shard)")
    report.frames_kept = len(frames)
    pairs = make_pairs(frames, settings)
    report.pairs = len(pairs)
    write_index(out, frames, pairs, {**asdict(report), "settings": asdict(settings)})
    return report


def run(job: PrepareJob, toolkit) -> Report | None:
    """The prepare command: ``job``'s clips (this shard's, this process's) through ``toolkit``, or with
    ``merge`` only the index from the clips the shards prepared; a line that sums it up."""
    shard = Shard.parse(job.shard)
    if job.merge:
        report = merge(job.videos, job.out, job.settings)
    else:
        report = prepare(job.videos, job.out, toolkit, job.settings, shard, job.batch_size)
    if report is None:
        print(f"this process's clips are done (shard {shard}, process {scaleout.launched()}); index.json is "
              f"written once every clip is: by rank 0, or by the shard that finishes last (or prepare --merge)")
        return None
    print(f"{report.clips} clips ({len(report.unreadable_clips)} unreadable: {', '.join(report.unreadable_clips) or '-'}), "
          f"{report.frames_kept} frames kept, {report.frames_without_face} without a usable face, "
          f"{report.pairs} pairs -> {job.out / 'index.json'}")
    return report
