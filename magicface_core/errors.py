"""Errors a user can act on.

Every exception the pack raises on purpose derives from :class:`MagicFaceError`; its message
is written for the person running the edit (ComfyUI shows it in the error dialog), so it says
what went wrong and what to do about it.
"""


class MagicFaceError(Exception):
    """Base class of the pack's user-facing errors."""


class CheckpointError(MagicFaceError):
    """A checkpoint is malformed: missing, unexpected or mis-shaped weights, or a bad config."""


class WeightsNotFoundError(MagicFaceError):
    """Weights are neither on disk nor downloadable (offline, or the download failed)."""


class AUInputError(MagicFaceError, ValueError):
    """An AU vector or AU specification is malformed."""


class ImageInputError(MagicFaceError, ValueError):
    """An input image or latent has the wrong size, shape or content."""


class NoFaceError(MagicFaceError):
    """No face was found where one is needed."""


class MissingDependencyError(MagicFaceError, ImportError):
    """An optional package that a backend needs is not installed."""


class SettingsError(MagicFaceError, ValueError):
    """A setting (steps, guidance, seed, face index, device, a training option, ...) is out of range, of the
    wrong type, or does not work with the others; always checked before anything loads."""


class OutputPathError(MagicFaceError):
    """An output would replace an input, an existing file or a training run (``--overwrite`` allows the
    latter two), or cannot be written in that format."""


class DataError(MagicFaceError):
    """A prepared training set is missing, empty or too small for the run."""


class NonFiniteError(MagicFaceError, FloatingPointError):
    """A computation produced NaN or infinite values (nothing is saved from it)."""


class VideoInputError(MagicFaceError, ValueError):
    """A video cannot be read, is empty or too short, or a video setting is wrong."""
