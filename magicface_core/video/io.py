"""Reading and writing video with PyAV, keeping the source's audio stream as it is.

A :class:`VideoFile` decodes its frames afresh each time it is iterated, so a clip is never held
in memory whole. :func:`write_video` writes to a temporary file next to the target and renames
it at the end: if anything fails on the way, nothing is left at the target.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import MissingDependencyError, VideoInputError
from ..files import atomic_path, exclusive_output


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    frame_count: int  # as the container states it (0 when it does not say)
    has_audio: bool


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


class VideoFile:
    """A video on disk: its :class:`VideoInfo`, and its frames (HxWx3 uint8) each time it is iterated."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with _open(self.path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise VideoInputError(f"{self.path} does not say its frame rate")
            self.info = VideoInfo(stream.codec_context.width, stream.codec_context.height, Fraction(rate),
                                  int(stream.frames or 0), bool(container.streams.audio))

    def __iter__(self) -> Iterator[np.ndarray]:
        av = _import_av()

        with _open(self.path) as container:
            try:
                for frame in container.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")
            except av.error.FFmpegError as exc:
                raise VideoInputError(f"cannot decode {self.path}: {exc}") from exc

    def frame(self, index: int) -> np.ndarray:
        count = 0
        for count, frame in enumerate(self, 1):
            if count - 1 == index:
                return frame
        raise VideoInputError(f"{self.path} has no frame {index} (it has {count} frames)")


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: Fraction | float,
                audio_from: str | os.PathLike | None = None, crf: int = 18) -> int:
    """Encode ``frames`` (HxWx3 uint8) as H.264 at ``fps``, copying the audio of ``audio_from``.

    Returns the number of frames written. The file appears at ``path`` only once complete.
    """
    av = _import_av()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(100000)
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
                image = np.ascontiguousarray(image)
                if stream is None:
                    stream = out.add_stream("libx264", rate=rate)
                    stream.width, stream.height = image.shape[1], image.shape[0]
                    # 4:2:0 needs even sizes; odd-sized clips keep every pixel in 4:4:4.
                    even = image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0
                    stream.pix_fmt = "yuv420p" if even else "yuv444p"
                    stream.options = {"crf": str(crf)}
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = count
                frame.time_base = 1 / rate
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
