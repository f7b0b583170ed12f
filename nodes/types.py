"""The custom socket types our nodes exchange (the names are written into workflow files)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..magicface_core import MagicFace
from .host import ManagedModule

MAGICFACE_MODEL = "MAGICFACE_MODEL"  # LoadedMagicFace
MAGICFACE_ID = "MAGICFACE_ID"  # magicface_core.IdentityFeatures
AU_VECTOR = "AU_VECTOR"  # magicface_core.AUVector of absolute intensities (0..5), one row per image
AU_DELTA = "AU_DELTA"  # magicface_core.AUVector of variations, one row per edit
AU_KEY = "magicface_au"  # the CONDITIONING entry holding AU rows [B, 12] for the MagicFace MODEL
MAGICFACE_CROP = "MAGICFACE_CROP"  # tuple of magicface_core.faces.crop.CropTransform, one per image

CATEGORY = "MagicFace"


@dataclass
class LoadedMagicFace:
    """MagicFace's two UNets, each under ComfyUI's memory management."""

    model: MagicFace
    denoiser: ManagedModule
    id_encoder: ManagedModule
    name: str
    comfy_unets: dict = field(default_factory=dict, repr=False)  # ComfyUI ModelPatchers, built on first use

    @property
    def text_dim(self) -> int:
        return self.model.denoiser.config.cross_attention_dim

    # ComfyUI places each UNet (loading it may offload others); the model then computes there.
    def encode_identity(self, *args, **kwargs):
        self.id_encoder.load()
        return self.model.encode_identity(*args, **kwargs)

    def sample(self, *args, **kwargs):
        self.denoiser.load()
        return self.model.sample(*args, **kwargs)
