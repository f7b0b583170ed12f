"""ComfyUI nodes over magicface_core (V3 schema); each module holds the nodes of one task."""

from .au_nodes import MagicFaceAUDeltaBatch, MagicFaceAUDeltaEditor, MagicFaceAUEstimate, MagicFaceAUSweep
from .face_nodes import MagicFaceFaceCrop, MagicFaceFaceParseContour, MagicFaceFaceTools, MagicFacePasteBack
from .loader_node import MagicFaceModelLoader
from .model_path_nodes import MagicFaceEditConditioning, MagicFaceIdentityModel
from .sampler_nodes import MagicFaceIDEncoder, MagicFaceKSampler
from .video_nodes import MagicFaceAUKeyframes, MagicFaceAUSmooth, MagicFaceFaceTrack

NODES = [
    MagicFaceModelLoader,
    MagicFaceAUEstimate,
    MagicFaceAUDeltaEditor,
    MagicFaceAUSweep,
    MagicFaceAUDeltaBatch,
    MagicFaceFaceCrop,
    MagicFaceFaceParseContour,
    MagicFaceIDEncoder,
    MagicFaceKSampler,
    MagicFacePasteBack,
    MagicFaceFaceTrack,
    MagicFaceAUSmooth,
    MagicFaceAUKeyframes,
    MagicFaceIdentityModel,
    MagicFaceEditConditioning,
    MagicFaceFaceTools,
]
# FineFace's nodes (nodes/fineface_nodes.py) join here: NODES += fineface_nodes.NODES
from .fineface_nodes import NODES as _FINEFACE_NODES  # noqa: E402

NODES += _FINEFACE_NODES

# V3 classes registered the V1 way: ComfyUI v0.8.0 and later run io.ComfyNode classes found in these mappings.
NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _node in NODES:
    _schema = _node.GET_SCHEMA()
    NODE_CLASS_MAPPINGS[_schema.node_id] = _node
    NODE_DISPLAY_NAME_MAPPINGS[_schema.node_id] = _schema.display_name
