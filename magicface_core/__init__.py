"""MagicFace: facial expression editing by Action Units, on Stable Diffusion 1.5.

The library behind the ComfyUI nodes and the ``python -m magicface_core`` CLI. It has no
ComfyUI imports, and heavy libraries (diffusers, transformers) load on first use.
"""

from .au import AU_ACTIONS, AU_NAMES, EMOTION_PRESETS, AUVector, emotion_preset
from .errors import (
    AUInputError,
    CheckpointError,
    ImageInputError,
    MagicFaceError,
    MissingDependencyError,
    NoFaceError,
    NonFiniteError,
    OutputPathError,
    SettingsError,
    WeightsNotFoundError,
)
from .faces.d3dfr import D3DFRLandmarks
from .model.identity_attention import IdentityFeatures
from .model.magicface import LATENT_SCALE, MagicFace
from .samplers import SAMPLER_NAMES

__all__ = [
    "AU_ACTIONS", "AU_NAMES", "EMOTION_PRESETS", "AUVector", "emotion_preset",
    "AUInputError", "CheckpointError", "ImageInputError", "MagicFaceError", "MissingDependencyError",
    "NoFaceError", "NonFiniteError", "OutputPathError", "SettingsError", "WeightsNotFoundError",
    "D3DFRLandmarks", "IdentityFeatures", "LATENT_SCALE", "MagicFace", "SAMPLER_NAMES",
]

__version__ = "0.1.0"
