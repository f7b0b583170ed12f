"""ComfyUI-MagicFace: facial expression editing by Action Units (MagicFace on SD 1.5)."""

try:  # the nodes are ComfyUI V3 nodes; imported elsewhere (e.g. as a test package) the pack offers none
    import comfy_api.latest  # noqa: F401
except ImportError:
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
