"""What every node's V3 schema shares: our socket types as ComfyUI types, and the schema's fixed parts."""

from __future__ import annotations

from comfy_api.latest import io

from .types import AU_DELTA, AU_VECTOR, CATEGORY, MAGICFACE_CROP, MAGICFACE_FACE_TOOLS, MAGICFACE_ID, MAGICFACE_MODEL

MagicFaceModel = io.Custom(MAGICFACE_MODEL)
Identity = io.Custom(MAGICFACE_ID)
AUs = io.Custom(AU_VECTOR)
AUDelta = io.Custom(AU_DELTA)
Crop = io.Custom(MAGICFACE_CROP)
FaceTools = io.Custom(MAGICFACE_FACE_TOOLS)


def schema(node_id: str, display_name: str, description: str, inputs: list, outputs: list) -> io.Schema:
    """A MagicFace node's schema: the class key (``node_id``) and display name are what saved
    workflows and the menu show; inputs keep their order (widget values are stored by position)."""
    return io.Schema(node_id=node_id, display_name=display_name, category=CATEGORY, description=description,
                     inputs=inputs, outputs=outputs)
