"""The custom socket types our nodes exchange (the names are written into workflow files). Constants only."""

MAGICFACE_MODEL = "MAGICFACE_MODEL"  # nodes.loaded_model.LoadedMagicFace
MAGICFACE_ID = "MAGICFACE_ID"  # magicface_core.IdentityFeatures
AU_VECTOR = "AU_VECTOR"  # magicface_core.AUVector of absolute intensities (0..5), one row per image
AU_DELTA = "AU_DELTA"  # magicface_core.AUVector of variations, one row per edit
AU_KEY = "magicface_au"  # the CONDITIONING entry holding AU rows [B, 12] for the MagicFace MODEL
MAGICFACE_CROP = "MAGICFACE_CROP"  # tuple of magicface_core.faces.crop.CropTransform, one per image
MAGICFACE_FACE_TOOLS = "MAGICFACE_FACE_TOOLS"  # magicface_core.faces.toolkit.FaceToolsChoice

CATEGORY = "MagicFace"
