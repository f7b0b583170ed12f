"""ComfyUI nodes over magicface_core; each module holds the nodes of one task."""

from .au_nodes import MagicFaceAUDeltaBatch, MagicFaceAUDeltaEditor, MagicFaceAUEstimate, MagicFaceAUSweep
from .face_nodes import MagicFaceFaceCrop, MagicFaceFaceParseContour, MagicFacePasteBack
from .model_nodes import MagicFaceEditConditioning, MagicFaceIdentityModel
from .models import MagicFaceModelLoader
from .sampling import MagicFaceIDEncoder, MagicFaceKSampler
from .video_nodes import MagicFaceAUKeyframes, MagicFaceAUSmooth, MagicFaceFaceTrack

NODE_CLASS_MAPPINGS = {
    "MagicFaceModelLoader": MagicFaceModelLoader,
    "MagicFaceAUEstimate": MagicFaceAUEstimate,
    "MagicFaceAUDeltaEditor": MagicFaceAUDeltaEditor,
    "MagicFaceAUSweep": MagicFaceAUSweep,
    "MagicFaceAUDeltaBatch": MagicFaceAUDeltaBatch,
    "MagicFaceFaceCrop": MagicFaceFaceCrop,
    "MagicFaceFaceParseContour": MagicFaceFaceParseContour,
    "MagicFaceIDEncoder": MagicFaceIDEncoder,
    "MagicFaceKSampler": MagicFaceKSampler,
    "MagicFacePasteBack": MagicFacePasteBack,
    "MagicFaceFaceTrack": MagicFaceFaceTrack,
    "MagicFaceAUSmooth": MagicFaceAUSmooth,
    "MagicFaceAUKeyframes": MagicFaceAUKeyframes,
    "MagicFaceIdentityModel": MagicFaceIdentityModel,
    "MagicFaceEditConditioning": MagicFaceEditConditioning,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "MagicFaceModelLoader": "MagicFace Model Loader",
    "MagicFaceAUEstimate": "MagicFace AU Estimate",
    "MagicFaceAUDeltaEditor": "MagicFace AU Delta Editor",
    "MagicFaceAUSweep": "MagicFace AU Sweep",
    "MagicFaceAUDeltaBatch": "MagicFace AU Delta Batch",
    "MagicFaceFaceCrop": "MagicFace Face Crop",
    "MagicFaceFaceParseContour": "MagicFace Face Parse + Contour",
    "MagicFaceIDEncoder": "MagicFace ID Encoder",
    "MagicFaceKSampler": "MagicFace KSampler",
    "MagicFacePasteBack": "MagicFace Paste Back",
    "MagicFaceFaceTrack": "MagicFace Face Track (video)",
    "MagicFaceAUSmooth": "MagicFace AU Smooth (video)",
    "MagicFaceAUKeyframes": "MagicFace AU Keyframes (video)",
    "MagicFaceIdentityModel": "MagicFace Identity MODEL",
    "MagicFaceEditConditioning": "MagicFace Edit Conditioning",
}
