"""Synthetic clips from the authors' portraits: a face moved, scaled or held still on a canvas."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.support.paths import OFFICIAL


def portrait(name: str = "00381.png", size: int = 256) -> np.ndarray:
    return np.asarray(Image.open(OFFICIAL / name).convert("RGB").resize((size, size), Image.Resampling.LANCZOS))


def place(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> np.ndarray:
    """``canvas`` with ``image`` pasted with its top-left corner at (x, y) (clipped at the edges)."""
    out = canvas.copy()
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(canvas.shape[1], x + w), min(canvas.shape[0], y + h)
    out[y0:y1, x0:x1] = image[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


def moving_clip(path: list[tuple[int, int]], name: str = "00381.png", size: int = 256,
                canvas: tuple[int, int] = (480, 640), noise: float = 2.0, seed: int = 0) -> list[np.ndarray]:
    """The portrait at each (x, y) of ``path`` on a grey canvas, with a little sensor noise per frame."""
    face = portrait(name, size)
    rng = np.random.default_rng(seed)
    background = np.full((*canvas, 3), 110, np.uint8)
    frames = []
    for x, y in path:
        frame = place(background, face, x, y).astype(np.float32)
        frame += rng.normal(0.0, noise, frame.shape)
        frames.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
    return frames


def linear_path(start: tuple[int, int], step: tuple[int, int], frames: int) -> list[tuple[int, int]]:
    return [(start[0] + i * step[0], start[1] + i * step[1]) for i in range(frames)]


def write_clip(path, frames: list[np.ndarray], fps=25, audio_seconds: float | None = None,
               pts: list[int] | None = None, rotation: int = 0) -> None:
    """An H.264 mp4 of ``frames``, with an AAC sine tone as long as the clip when ``audio_seconds`` is given.

    ``pts``: each frame's timestamp in 1/fps units (a variable frame rate); ``rotation``: the display
    matrix's counter-clockwise turn, the frames stored as given (a phone clip stores them turned)."""
    import fractions

    import av

    rate = fractions.Fraction(fps)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        audio = None
        if audio_seconds is not None:
            audio = out.add_stream("aac", rate=16000)
            audio.layout = "mono"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = (i if pts is None else pts[i]), 1 / rate
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            t = np.arange(int(16000 * audio_seconds)) / 16000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for start in range(0, tone.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp",
                                                   layout="mono")
                frame.sample_rate, frame.pts = 16000, start
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)


def audio_packets(path) -> list[bytes]:
    import av

    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]
