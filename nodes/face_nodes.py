"""Face nodes: crop a photo to the 512 portrait, build the condition image, paste an edit back."""

from __future__ import annotations

import numpy as np

from ..magicface_core import ImageInputError
from ..magicface_core.faces.crop import paste_back
from ..magicface_core.faces.toolkit import DETECTORS, JAW_SOURCES, PARSERS
from .host import face_toolkit
from .images import to_arrays, to_image, to_mask
from .types import CATEGORY, MAGICFACE_CROP


# Optional inputs with defaults, so workflows saved before they existed still load.
DETECTOR_INPUT = ("detector", (list(DETECTORS), {
    "default": "face_alignment",
    "tooltip": "face_alignment: S3FD + 2D-FAN (downloaded); dlib: no download (face_recognition_models; "
               "its 68-point model is for non-commercial use). The crop is framed from the landmarks either way."}))
JAW_INPUT = ("jaw", (list(JAW_SOURCES), {
    "default": "3dmm",
    "tooltip": "3dmm: the authors' jaw line, from a 3D face fit with the expression removed (downloads "
               "d3dfr_res50_nofc.pth and BFM_model_front.mat); 2d: the landmark model's own jaw line"}))


class MagicFaceFaceCrop:
    DESCRIPTION = "Finds the face and crops the 512x512 portrait MagicFace edits, framed like the authors' crops."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", MAGICFACE_CROP)
    RETURN_NAMES = ("portrait", "crop")
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "face_index": ("INT", {"default": 0, "min": 0, "max": 32, "tooltip": "0 = the largest face"}),
        }, "optional": dict([DETECTOR_INPUT])}

    def crop(self, image, face_index: int, detector: str = "face_alignment"):
        toolkit = face_toolkit(detector=detector)
        crops, transforms = zip(*(toolkit.crop(photo, face_index) for photo in to_arrays(image, "the image")))
        return (to_image(list(crops)), tuple(transforms))


class MagicFaceFaceParseContour:
    DESCRIPTION = ("The condition image: the person blacked out (face parsing) with the jaw line drawn as "
                   "coloured dots; and the person's mask.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("condition", "person_mask")
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "the 512x512 portrait (from Face Crop or an authors'-style crop)"}),
            "parser": (list(PARSERS), {"default": "bisenet",
                                       "tooltip": "bisenet: the authors' parser; facer: needs pyfacer + torchvision"}),
        }, "optional": {"crop": (MAGICFACE_CROP, {"tooltip": "from Face Track: frames marked without a face are "
                                                             "skipped (Paste Back passes them through)"}),
                     **dict([JAW_INPUT, DETECTOR_INPUT])}}

    def condition(self, image, parser: str, crop=None, jaw: str = "3dmm", detector: str = "face_alignment"):
        toolkit = face_toolkit(detector, jaw)
        portraits = to_arrays(image, "the portrait")
        if crop is not None and len(crop) != len(portraits):
            raise ImageInputError(f"{len(portraits)} portraits but {len(crop)} crops")
        results = [
            toolkit.condition(portrait, parser=parser) if crop is None or crop[i] is not None
            else (portrait, np.zeros(portrait.shape[:2], dtype=bool))
            for i, portrait in enumerate(portraits)
        ]
        conditions, masks = zip(*results)
        return (to_image(list(conditions)), to_mask(list(masks)))


class MagicFacePasteBack:
    DESCRIPTION = "Blends edited portraits back into the original photo around the face; the rest is untouched."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "paste"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "original": ("IMAGE",),
                "edited": ("IMAGE", {"tooltip": "decoded edits (any square size: upscaled crops paste back sharper)"}),
                "crop": (MAGICFACE_CROP,),
                "keep_detail": ("BOOLEAN", {"default": True, "tooltip":
                                "add only what the edit changed, keeping the photo's own detail"}),
            },
            "optional": {"mask": ("MASK", {"tooltip": "where to paste, in crop coordinates (default: the face)"})},
        }

    def paste(self, original, edited, crop, keep_detail: bool, mask=None):
        if not crop:
            raise ImageInputError(
                "Paste Back needs the crop output of the MagicFace Face Crop node that cut the portrait from "
                "this photo; connect it to the crop input"
            )
        originals, edits = to_arrays(original, "the original photo"), to_arrays(edited, "the edited portrait")
        count = max(len(originals), len(edits), len(crop))
        if any(n not in (1, count) for n in (len(originals), len(edits), len(crop))):
            raise ImageInputError(
                f"batch sizes do not match: {len(originals)} originals, {len(edits)} edits, {len(crop)} crops")
        masks = [None] * count if mask is None else [np.asarray(m) for m in mask.cpu().float().numpy()]
        # A crop of None (Face Track: no face in that frame) passes the original through.
        results = [
            originals[i % len(originals)] if crop[i % len(crop)] is None else
            paste_back(originals[i % len(originals)], edits[i % len(edits)], crop[i % len(crop)],
                       mask=masks[i % len(masks)], keep_detail=keep_detail)
            for i in range(count)
        ]
        return (to_image(results),)
