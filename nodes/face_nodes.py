"""Face nodes: crop a photo to the 512 portrait, build the condition image, paste an edit back."""

from __future__ import annotations

import numpy as np

from ..magicface_core import ImageInputError
from ..magicface_core.faces.crop import paste_back
from ..magicface_core.faces.toolkit import PARSERS
from .host import face_toolkit
from .images import to_arrays, to_image, to_mask
from .types import CATEGORY, MAGICFACE_CROP


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
        }}

    def crop(self, image, face_index: int):
        toolkit = face_toolkit()
        crops, transforms = zip(*(toolkit.crop(photo, face_index) for photo in to_arrays(image)))
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
        }}

    def condition(self, image, parser: str):
        toolkit = face_toolkit()
        conditions, masks = zip(*(toolkit.condition(portrait, parser=parser) for portrait in to_arrays(image)))
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
        originals, edits = to_arrays(original), to_arrays(edited)
        count = max(len(originals), len(edits), len(crop))
        if any(n not in (1, count) for n in (len(originals), len(edits), len(crop))):
            raise ImageInputError(
                f"batch sizes do not match: {len(originals)} originals, {len(edits)} edits, {len(crop)} crops")
        masks = [None] * count if mask is None else [np.asarray(m) for m in mask.cpu().float().numpy()]
        results = [
            paste_back(originals[i % len(originals)], edits[i % len(edits)], crop[i % len(crop)],
                       mask=masks[i % len(masks)], keep_detail=keep_detail)
            for i in range(count)
        ]
        return (to_image(results),)
