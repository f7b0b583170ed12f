"""Face nodes: choose the face networks, crop a photo to the 512 portrait, build the condition image,
paste an edit back."""

from __future__ import annotations

import numpy as np
from comfy_api.latest import io

from ..magicface_core import ImageInputError
from ..magicface_core.batching import batch_size
from ..magicface_core.faces.crop import paste_back
from ..magicface_core.edit import EditJob
from ..magicface_core.faces.toolkit import DETECTORS, JAW_SOURCES, PARSERS, FaceToolsChoice
from ..magicface_core.settings import default_of
from .face_tools import face_toolkit
from .images import to_arrays, to_image, to_mask
from .schema import Crop, FaceTools, schema

DETECTOR_TIP = ("face_alignment: S3FD + 2D-FAN (downloaded); dlib: no download (face_recognition_models; its "
                "68-point model is for non-commercial use). The crop is framed from the landmarks either way.")
JAW_TIP = ("3dmm: the authors' jaw line, from a 3D face fit with the expression removed (downloads "
           "d3dfr_res50_nofc.pth and BFM_model_front.mat); 2d: the landmark model's own jaw line")
PARSER_TIP = "bisenet: the authors' parser; facer: needs pyfacer + torchvision"


# Optional inputs with defaults, so workflows saved before they existed still load.
def detector_input():
    return io.Combo.Input("detector", options=list(DETECTORS), default=default_of(FaceToolsChoice, "detector"),
                          optional=True,
                          tooltip=DETECTOR_TIP)


def jaw_input():
    return io.Combo.Input("jaw", options=list(JAW_SOURCES), default=default_of(FaceToolsChoice, "jaw"), optional=True,
                          tooltip=JAW_TIP)


def face_index_input():
    return io.Int.Input("face_index", default=default_of(EditJob, "face_index"), min=0, max=32,
                        tooltip="0 = the largest face")


def face_tools_input():
    return FaceTools.Input("face_tools", optional=True, tooltip=(
        "from MagicFace Face Tools: one choice of networks for the whole graph (it overrides this node's "
        "detector, parser and jaw widgets)"))


def face_tools_for(face_tools: FaceToolsChoice | None, **widgets) -> FaceToolsChoice:
    """The connected Face Tools choice, else the one this node's own widgets make."""
    return face_tools if face_tools is not None else FaceToolsChoice(**widgets)


class MagicFaceFaceTools(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceFaceTools", "MagicFace Face Tools", (
            "One choice of face networks for the graph: connect it to Face Crop, Face Parse + Contour, AU Estimate "
            "and Face Track so they all detect, parse and draw the jaw alike."), [
            io.Combo.Input("detector", options=list(DETECTORS), default=default_of(FaceToolsChoice, "detector"),
                           tooltip=DETECTOR_TIP),
            io.Combo.Input("parser", options=list(PARSERS), default=default_of(FaceToolsChoice, "parser"),
                           tooltip=PARSER_TIP),
            io.Combo.Input("jaw", options=list(JAW_SOURCES), default=default_of(FaceToolsChoice, "jaw"),
                           tooltip=JAW_TIP),
        ], [FaceTools.Output(display_name="face_tools")])

    @classmethod
    def execute(cls, detector: str, parser: str, jaw: str):
        return io.NodeOutput(FaceToolsChoice(detector=detector, parser=parser, jaw=jaw))


class MagicFaceFaceCrop(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceFaceCrop", "MagicFace Face Crop",
                      "Finds the face and crops the 512x512 portrait MagicFace edits, framed like the authors' crops.", [
                          io.Image.Input("image"), face_index_input(), detector_input(), face_tools_input(),
                      ], [io.Image.Output(display_name="portrait"), Crop.Output(display_name="crop")])

    @classmethod
    def execute(cls, image, face_index: int, detector: str = "face_alignment", face_tools=None):
        toolkit = face_toolkit(face_tools_for(face_tools, detector=detector))
        crops, transforms = zip(*(toolkit.crop(photo, face_index) for photo in to_arrays(image, "the image")))
        return io.NodeOutput(to_image(list(crops)), tuple(transforms))


class MagicFaceFaceParseContour(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFaceFaceParseContour", "MagicFace Face Parse + Contour", (
            "The condition image: the person blacked out (face parsing) with the jaw line drawn as coloured dots; "
            "and the person's mask."), [
            io.Image.Input("image", tooltip="the 512x512 portrait (from Face Crop or an authors'-style crop)"),
            io.Combo.Input("parser", options=list(PARSERS), default=default_of(FaceToolsChoice, "parser"),
                           tooltip=PARSER_TIP),
            Crop.Input("crop", optional=True, tooltip=(
                "from Face Track: frames marked without a face are skipped (Paste Back passes them through)")),
            jaw_input(), detector_input(), face_tools_input(),
        ], [io.Image.Output(display_name="condition"), io.Mask.Output(display_name="person_mask")])

    @classmethod
    def execute(cls, image, parser: str, crop=None, jaw: str = "3dmm", detector: str = "face_alignment",
                face_tools=None):
        choice = face_tools_for(face_tools, detector=detector, parser=parser, jaw=jaw)
        toolkit = face_toolkit(choice)
        portraits = to_arrays(image, "the portrait")
        if crop is not None and len(crop) != len(portraits):
            raise ImageInputError(f"{len(portraits)} portraits but {len(crop)} crops")
        results = [
            toolkit.condition(portrait, parser=choice.parser) if crop is None or crop[i] is not None
            else (portrait, np.zeros(portrait.shape[:2], dtype=bool))
            for i, portrait in enumerate(portraits)
        ]
        conditions, masks = zip(*results)
        return io.NodeOutput(to_image(list(conditions)), to_mask(list(masks)))


class MagicFacePasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema("MagicFacePasteBack", "MagicFace Paste Back",
                      "Blends edited portraits back into the original photo around the face; the rest is untouched.", [
                          io.Image.Input("original"),
                          io.Image.Input("edited", tooltip=(
                              "decoded edits (any square size: upscaled crops paste back sharper)")),
                          Crop.Input("crop"),
                          io.Boolean.Input("keep_detail", default=True, tooltip=(
                              "add only what the edit changed, keeping the photo's own detail")),
                          io.Mask.Input("mask", optional=True, tooltip=(
                              "where to paste, in crop coordinates (default: the face)")),
                      ], [io.Image.Output(display_name="image")])

    @classmethod
    def execute(cls, original, edited, crop, keep_detail: bool, mask=None):
        if not crop:
            raise ImageInputError(
                "Paste Back needs the crop output of the MagicFace Face Crop node that cut the portrait from "
                "this photo; connect it to the crop input"
            )
        originals, edits = to_arrays(original, "the original photo"), to_arrays(edited, "the edited portrait")
        count = batch_size({"originals": len(originals), "edits": len(edits), "crops": len(crop)})
        masks = [None] if mask is None else [np.asarray(m) for m in mask.cpu().float().numpy()]
        # A crop of None (Face Track: no face in that frame) passes the original through.
        results = [
            originals[i % len(originals)] if crop[i % len(crop)] is None else
            paste_back(originals[i % len(originals)], edits[i % len(edits)], crop[i % len(crop)],
                       mask=masks[i % len(masks)], keep_detail=keep_detail)
            for i in range(count)
        ]
        return io.NodeOutput(to_image(results))
