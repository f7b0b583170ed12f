"""Video nodes over IMAGE batches (one image per frame): follow the face through a clip, smooth
an AU trajectory, add keyframed AU changes. Sampling in chunks and pasting back a batch are the
KSampler's and Paste Back's own jobs; ComfyUI's LoadVideo / GetVideoComponents give the frames,
audio and fps, and CreateVideo / SaveVideo write them back.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..magicface_core import AUInputError, AUVector
from ..magicface_core.faces.crop import crop_to_transform
from ..magicface_core.settings import default_of
from ..magicface_core.video.edit import VideoJob, VideoSettings
from ..magicface_core.video.keyframes import INTERPOLATIONS, interpolate_keyframes
from ..magicface_core.video.smoothing import smooth_aus
from ..magicface_core.video.tracking import TrackSettings, nearest_found, track_faces
from .face_nodes import face_tools_input
from .face_tools import face_toolkit
from .images import to_arrays, to_image
from .schema import AUDelta, AUs, Crop, schema


def fps_input():
    return io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001,
                          tooltip="the clip's frame rate (connect GetVideoComponents' fps)")


class MagicFaceFaceTrack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceFaceTrack", "MagicFace Face Track (video)", (
            "Follows one face through a batch of frames and crops the 512 portraits, with the crop smoothed over "
            "time: a still head gives a still crop. Frames without the face keep the nearest framing and are "
            "passed through unchanged by Paste Back."), [
            io.Image.Input("images", tooltip="the clip's frames"),
            fps_input(),
            io.Int.Input("face_index", default=default_of(VideoSettings, "face_index"), min=0, max=32, tooltip=(
                "the face to follow (0 = largest in the first frame with a face)")),
            io.Int.Input("detect_every", default=default_of(VideoSettings, "detect_every"), min=1, max=120, tooltip=(
                "detect faces on every N-th frame; landmarks follow in between")),
            face_tools_input(),
        ], [io.Image.Output(display_name="portraits"), Crop.Output(display_name="crop"),
            io.String.Output(display_name="report")])

    @classmethod
    def execute(cls, images, fps: float, face_index: int, detect_every: int, face_tools=None):
        frames = to_arrays(images)
        track = track_faces(frames, face_toolkit(face_tools), fps,
                            TrackSettings(face_index=face_index, detect_every=detect_every))
        if not track.found:
            raise track.no_face_error("the batch")  # or fewer faces than face_index asks for
        # Frames without a face are cropped where the nearest face was, so the batch stays one per frame.
        portraits = [crop_to_transform(frame, track.transforms[n])
                     for frame, n in zip(frames, nearest_found(track.found, len(frames)))]
        report = f"face in {len(track.found)} of {len(frames)} frames"
        if track.missing:
            report += f"; without a face (passed through): {track.missing}"
        return io.NodeOutput(to_image(portraits), tuple(track.transforms), report)


class MagicFaceAUSmooth(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceAUSmooth", "MagicFace AU Smooth (video)",
                      "Smooths an AU trajectory (one row per frame) over time: AU estimates jitter from frame to frame.", [
                          AUs.Input("aus"),
                          fps_input(),
                          io.Float.Input("cutoff_hz", default=default_of(VideoSettings, "au_cutoff_hz"), min=0.0, max=30.0, step=0.1, tooltip=(
                              "low-pass cutoff, applied forwards and backwards (no lag); 0 = off")),
                      ], [AUs.Output(display_name="aus")])

    @classmethod
    def execute(cls, aus: AUVector, fps: float, cutoff_hz: float):
        return io.NodeOutput(smooth_aus(aus, fps, cutoff_hz))


class MagicFaceAUKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceAUKeyframes", "MagicFace AU Keyframes (video)", (
            "Adds keyframed AU changes to a per-frame AU variation, e.g. '0:AU12=0; 30:AU12=3; 60:AU12=0'. Each AU "
            "moves between the keyframes that name it and holds before the first and after the last."), [
            io.String.Input("keyframes", default="0:AU12=0; 30:AU12=3", multiline=True,
                            tooltip="FRAME:AU=VALUE,AU=VALUE; ... (frames from 0)"),
            io.Combo.Input("interpolation", options=list(INTERPOLATIONS), default=default_of(VideoJob, "interpolation")),
            io.Int.Input("frames", default=0, min=0, max=100000,
                         tooltip="how many frames; 0 = as many as the rows of base"),
            AUDelta.Input("base", optional=True, tooltip="per-frame variation the keyframes are added to"),
        ], [AUDelta.Output(display_name="au_delta"), io.String.Output(display_name="table")])

    @classmethod
    def execute(cls, keyframes: str, interpolation: str, frames: int, base: AUVector | None = None):
        count = frames or (len(base) if base is not None else 0)
        if count < 1:
            raise AUInputError("set frames, or connect a base AU variation with one row per frame")
        if base is not None and len(base) not in (1, count):
            raise AUInputError(f"base has {len(base)} rows but frames is {count}")
        delta = interpolate_keyframes(keyframes, count, interpolation)
        if base is not None:
            delta = base + delta
        return io.NodeOutput(delta, delta[: min(len(delta), 8)].table(title=f"AU variation, first frames of {count}"))
