"""Video nodes over IMAGE batches (one image per frame): follow the face through a clip, smooth
an AU trajectory, add keyframed AU changes. Sampling in chunks and pasting back a batch are the
KSampler's and Paste Back's own jobs; ComfyUI's LoadVideo / GetVideoComponents give the frames,
audio and fps, and CreateVideo / SaveVideo write them back.
"""

from __future__ import annotations

from ..magicface_core import AUInputError, AUVector, NoFaceError
from ..magicface_core.faces.crop import crop_to_transform
from ..magicface_core.video.keyframes import INTERPOLATIONS, interpolate_keyframes
from ..magicface_core.video.smoothing import AU_CUTOFF_HZ, smooth_aus
from ..magicface_core.video.tracking import TrackSettings, track_faces
from .host import face_toolkit
from .images import to_arrays, to_image
from .types import AU_DELTA, AU_VECTOR, CATEGORY, MAGICFACE_CROP

FPS_INPUT = ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001,
                       "tooltip": "the clip's frame rate (connect GetVideoComponents' fps)"})


class MagicFaceFaceTrack:
    DESCRIPTION = ("Follows one face through a batch of frames and crops the 512 portraits, with the crop "
                   "smoothed over time: a still head gives a still crop. Frames without the face keep the "
                   "nearest framing and are passed through unchanged by Paste Back.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", MAGICFACE_CROP, "STRING")
    RETURN_NAMES = ("portraits", "crop", "report")
    FUNCTION = "track"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "the clip's frames"}),
            "fps": FPS_INPUT,
            "face_index": ("INT", {"default": 0, "min": 0, "max": 32, "tooltip": "the face to follow (0 = largest in "
                                                                                "the first frame with a face)"}),
            "detect_every": ("INT", {"default": 1, "min": 1, "max": 120,
                                     "tooltip": "detect faces on every N-th frame; landmarks follow in between"}),
        }}

    def track(self, images, fps: float, face_index: int, detect_every: int):
        frames = to_arrays(images)
        track = track_faces(frames, face_toolkit(), fps, TrackSettings(face_index=face_index, detect_every=detect_every))
        found = track.found
        if not found:
            raise NoFaceError(f"no face found in any of the {len(frames)} frames")
        # Frames without a face are cropped where the nearest face was, so the batch stays one per frame.
        nearest = [min(found, key=lambda f: abs(f - t)) for t in range(len(frames))]
        portraits = [crop_to_transform(frame, track.transforms[n]) for frame, n in zip(frames, nearest)]
        report = f"face in {len(found)} of {len(frames)} frames"
        if track.missing:
            report += f"; without a face (passed through): {track.missing}"
        return (to_image(portraits), tuple(track.transforms), report)


class MagicFaceAUSmooth:
    DESCRIPTION = "Smooths an AU trajectory (one row per frame) over time: AU estimates jitter from frame to frame."
    CATEGORY = CATEGORY
    RETURN_TYPES = (AU_VECTOR,)
    RETURN_NAMES = ("aus",)
    FUNCTION = "smooth"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "aus": (AU_VECTOR,),
            "fps": FPS_INPUT,
            "cutoff_hz": ("FLOAT", {"default": AU_CUTOFF_HZ, "min": 0.0, "max": 30.0, "step": 0.1,
                                    "tooltip": "low-pass cutoff, applied forwards and backwards (no lag); 0 = off"}),
        }}

    def smooth(self, aus: AUVector, fps: float, cutoff_hz: float):
        return (smooth_aus(aus, fps, cutoff_hz),)


class MagicFaceAUKeyframes:
    DESCRIPTION = ("Adds keyframed AU changes to a per-frame AU variation, e.g. '0:AU12=0; 30:AU12=3; 60:AU12=0'. "
                   "Each AU moves between the keyframes that name it and holds before the first and after the last.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (AU_DELTA, "STRING")
    RETURN_NAMES = ("au_delta", "table")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "keyframes": ("STRING", {"default": "0:AU12=0; 30:AU12=3", "multiline": True,
                                         "tooltip": "FRAME:AU=VALUE,AU=VALUE; ... (frames from 0)"}),
                "interpolation": (list(INTERPOLATIONS), {"default": "linear"}),
                "frames": ("INT", {"default": 0, "min": 0, "max": 100000,
                                   "tooltip": "how many frames; 0 = as many as the rows of base"}),
            },
            "optional": {"base": (AU_DELTA, {"tooltip": "per-frame variation the keyframes are added to"})},
        }

    def build(self, keyframes: str, interpolation: str, frames: int, base: AUVector | None = None):
        count = frames or (len(base) if base is not None else 0)
        if count < 1:
            raise AUInputError("set frames, or connect a base AU variation with one row per frame")
        if base is not None and len(base) not in (1, count):
            raise AUInputError(f"base has {len(base)} rows but frames is {count}")
        delta = interpolate_keyframes(keyframes, count, interpolation)
        if base is not None:
            delta = base + delta
        return (delta, delta[: min(len(delta), 8)].table(title=f"AU variation, first frames of {count}"))
