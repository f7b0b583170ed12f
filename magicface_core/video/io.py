"""Reading and writing video with PyAV, keeping the source's audio stream as it is.

A :class:`VideoFile` decodes its frames afresh each time it is iterated, so a clip is never held
in memory whole. Frames come upright: a rotation in the stream's display matrix (what phones
write) is applied, so faces are found the way the clip plays. :func:`write_video` writes to a
temporary file next to the target and renames it at the end: if anything fails on the way,
nothing is left at the target. Given the source clip's ``timing`` and ``rotation`` it keeps them:
each frame its own timestamp (a variable frame rate stays in sync with the copied audio), and
the frames stored turned as before, with the same display matrix.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import MissingDependencyError, OutputPathError, VideoInputError
from ..files import atomic_path, exclusive_output

logger = logging.getLogger(__name__)

# What an edited clip is written as: H.264 video, the source's audio copied as it is. These
# containers hold H.264 (.webm, .gif, .avi... do not, or not with every audio codec).
VIDEO_FORMATS = {".mp4": "mp4", ".mov": "mov", ".m4v": "ipod", ".mkv": "matroska"}


@dataclass(frozen=True)
class VideoInfo:
    width: int  # as the clip plays, i.e. after its rotation
    height: int
    fps: Fraction  # the average rate; a variable-rate clip's frames keep their own timestamps
    frame_count: int  # as the container states it (0 when it does not say)
    has_audio: bool
    rotation: int = 0  # degrees counter-clockwise the stored frames are turned to play (display matrix)
    time_base: Fraction | None = None  # the unit of the video stream's timestamps


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise MissingDependencyError(
            f"video needs PyAV: pip install av (in ComfyUI's Python environment it is already installed) ({exc})"
        ) from exc
    return av


def _open(path: str | os.PathLike):
    av = _import_av()

    path = Path(path)
    if not path.is_file():
        raise VideoInputError(f"no video at {path}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise VideoInputError(f"cannot read the video {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoInputError(f"{path} holds no video frames (no video stream)")
    return container


def _quarter_turns(rotation: float) -> int:
    """np.rot90's k for a counter-clockwise display rotation (to the nearest quarter turn)."""
    return round(rotation / 90) % 4


def _mirrored(frame) -> bool:
    """Whether the frame's display matrix flips it (a negative determinant); ``frame.rotation`` ignores that."""
    for data in frame.side_data:
        if data.type.name == "DISPLAYMATRIX":
            m = np.frombuffer(bytes(data), dtype=np.int32)
            return int(m[0]) * int(m[4]) - int(m[1]) * int(m[3]) < 0
    return False


class VideoFile:
    """A video on disk: its :class:`VideoInfo`, and its frames (HxWx3 uint8, upright) each time it is iterated."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._timestamps: list[int] | None = None  # known after one whole pass
        with _open(self.path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise VideoInputError(f"{self.path} does not say its frame rate")
            # PyAV reads the display matrix from the frames, not the stream: the first frame's.
            first = next(self._decode(container), None)
            rotation = int(first.rotation) if first is not None else 0
            if first is not None and _mirrored(first):
                logger.warning("%s is mirrored by its display matrix; the edit keeps its rotation, not the mirroring",
                               self.path)
            if rotation % 90:
                logger.warning("%s is turned by %d degrees to play; it is read turned by the nearest quarter turn",
                               self.path, rotation)
            width, height = stream.codec_context.width, stream.codec_context.height
            if _quarter_turns(rotation) % 2:
                width, height = height, width
            self.info = VideoInfo(width, height, Fraction(rate), int(stream.frames or 0),
                                  bool(container.streams.audio), rotation,
                                  Fraction(stream.time_base) if stream.time_base else None)

    def _decode(self, container):
        av = _import_av()
        try:
            yield from container.decode(video=0)
        except av.error.FFmpegError as exc:
            raise VideoInputError(f"cannot decode {self.path}: {exc}") from exc

    def __iter__(self) -> Iterator[np.ndarray]:
        with _open(self.path) as container:
            stamps = []
            for frame in self._decode(container):
                stamps.append(frame.pts)
                image = frame.to_ndarray(format="rgb24")
                turns = _quarter_turns(frame.rotation)
                yield np.ascontiguousarray(np.rot90(image, turns)) if turns else image
            self._timestamps = stamps

    def timestamps(self) -> list[int] | None:
        """Each frame's presentation time in ``info.time_base`` units, in order; None where the clip has none."""
        if self._timestamps is None:
            with _open(self.path) as container:
                self._timestamps = [frame.pts for frame in self._decode(container)]
        if not self._timestamps or None in self._timestamps or self.info.time_base is None:
            return None
        return list(self._timestamps)

    def count_frames(self) -> int:
        """The number of frames: as the container states it, else counted from its packets (no decoding)."""
        if self.info.frame_count:
            return self.info.frame_count
        if self._timestamps is not None:
            return len(self._timestamps)
        with _open(self.path) as container:
            return sum(1 for packet in container.demux(video=0) if packet.size)

    def frame(self, index: int) -> np.ndarray:
        count = 0
        for count, frame in enumerate(self, 1):
            if count - 1 == index:
                return frame
        raise VideoInputError(f"{self.path} has no frame {index} (it has {count} frames)")


def check_video_output(path: str | os.PathLike, audio_from: str | os.PathLike | None = None,
                       option: str = "--out") -> Path:
    """Refuse, before any work, a video output whose container cannot hold H.264 and ``audio_from``'s audio."""
    av = _import_av()

    path = Path(path)
    formats = ", ".join(VIDEO_FORMATS)
    if path.is_dir():
        raise OutputPathError(f"{path} is a folder; give {option} a video file name ending in {formats}")
    container_format = VIDEO_FORMATS.get(path.suffix.lower())
    if container_format is None:
        what = f"a {path.suffix} file" if path.suffix else "a name without an extension"
        raise OutputPathError(f"{what} cannot hold the edited clip (H.264 video and the clip's audio): "
                              f"end {option} in one of {formats}")
    # The real check: the muxer takes both streams (an audio codec a container refuses fails here).
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(_open(audio_from)) if audio_from is not None else None
        audio = source.streams.audio[0] if source is not None and source.streams.audio else None
        trial = stack.enter_context(av.open(io.BytesIO(), "w", format=container_format))
        try:
            video = trial.add_stream("libx264", rate=25)
            video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
            if audio is not None:
                trial.add_stream_from_template(audio)
            trial.start_encoding()
        except (ValueError, av.error.FFmpegError) as exc:
            codec = f" with the clip's {audio.codec_context.name} audio" if audio is not None else ""
            others = ", ".join(s for s in VIDEO_FORMATS if s != path.suffix.lower())
            raise OutputPathError(f"a {path.suffix} file cannot hold H.264 video{codec} ({exc}); "
                                  f"end {option} in one of {others}") from None
    return path


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: Fraction | float,
                audio_from: str | os.PathLike | None = None, crf: int = 18, timing: VideoFile | None = None,
                rotation: int = 0) -> int:
    """Encode ``frames`` (HxWx3 uint8) as H.264 at ``fps``, copying the audio of ``audio_from``.

    With ``timing`` (the clip the frames follow, one output frame per frame of it) each frame
    keeps that clip's timestamp. ``rotation`` (a clip's ``info.rotation``) stores the upright
    frames turned back and writes the same display matrix, so the clip plays as its source did.
    Returns the number of frames written. The file appears at ``path`` only once complete.
    """
    av = _import_av()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(100000)
    stamps = timing.timestamps() if timing is not None else None
    time_base = timing.info.time_base if stamps else 1 / rate
    turns = _quarter_turns(rotation)
    step = max(1, round(1 / (rate * time_base)))  # one frame at ``fps``, past the source's last timestamp
    pts = None
    count = 0
    # A unique temporary name and a lock: two runs with the same --out never mix their frames.
    with exclusive_output(path), atomic_path(path, keep_suffix=True) as partial:
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(av.open(str(partial), "w"))
            stream = audio_in = source = None
            if audio_from is not None:
                source = stack.enter_context(_open(audio_from))
                audio_in = source.streams.audio[0] if source.streams.audio else None
            audio_out = out.add_stream_from_template(audio_in) if audio_in is not None else None
            for image in frames:
                image = np.ascontiguousarray(np.rot90(image, -turns) if turns else image)
                if stream is None:
                    stream = out.add_stream("libx264", rate=rate)
                    stream.codec_context.time_base = stream.time_base = time_base
                    if turns:
                        stream.set_display_rotation(rotation)
                    stream.width, stream.height = image.shape[1], image.shape[0]
                    # 4:2:0 needs even sizes; odd-sized clips keep every pixel in 4:4:4.
                    even = image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0
                    stream.pix_fmt = "yuv420p" if even else "yuv444p"
                    stream.options = {"crf": str(crf)}
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                # The source's own timestamp (kept strictly increasing, as the encoder needs).
                wanted = stamps[count] if stamps and count < len(stamps) else (pts + step if pts is not None else 0)
                pts = wanted if pts is None else max(wanted, pts + 1)
                frame.pts, frame.time_base = pts, time_base
                for packet in stream.encode(frame):
                    out.mux(packet)
                count += 1
            if stream is None:
                raise VideoInputError("no frames to write")
            for packet in stream.encode():
                out.mux(packet)
            if audio_out is not None:
                for packet in source.demux(audio_in):
                    if packet.dts is None:  # the demuxer's final empty packet
                        continue
                    packet.stream = audio_out
                    out.mux(packet)
    return count
