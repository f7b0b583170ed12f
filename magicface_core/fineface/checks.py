"""Checks made before anything loads or samples."""

from __future__ import annotations

import logging
import math

from ..au import AUVector
from ..errors import AUInputError, SettingsError
from .au_token import SD2_WIDTH, SD15_WIDTH

logger = logging.getLogger(__name__)

AU_RANGE = (0.0, 5.0)  # FineFace's training intensities
AU_HARD_LIMIT = 10.0  # past this the result is noise, not an expression


def check_base_width(width: int, sd15_variant: bool, source: str = "the model") -> None:
    """SD 2.x (cross-attention 1024) for FineFace, SD 1.5 (768) for its variant."""
    want = SD15_WIDTH if sd15_variant else SD2_WIDTH
    if width == want:
        return
    given = {SD2_WIDTH: "an SD 2.x model", SD15_WIDTH: "an SD 1.5 model"}.get(width, f"a model with cross-attention width {width}")
    need = "an SD 1.5 model (FineFace's SD 1.5 variant)" if sd15_variant else "SD 2.1-base (cross-attention width 1024)"
    hint = (" Choose the SD 1.5 variant's weights for an SD 1.5 model." if width == SD15_WIDTH and not sd15_variant
            else " Choose FineFace's SD 2.1 weights for an SD 2.x model." if width == SD2_WIDTH else "")
    raise SettingsError(f"{source} is {given}, but these FineFace weights need {need}.{hint}")


def check_aus(aus) -> AUVector:
    """Absolute AU intensities: warn outside 0..5, refuse non-finite or past +-:data:`AU_HARD_LIMIT`."""
    aus = AUVector.coerce(aus)
    values = aus.values
    if not bool(values.isfinite().all()):
        raise AUInputError("AU intensities must be finite numbers")
    low, high = float(values.min()), float(values.max())
    if low < -AU_HARD_LIMIT or high > AU_HARD_LIMIT:
        raise AUInputError(f"an AU intensity of {high if high > AU_HARD_LIMIT else low:g} is far outside FineFace's "
                           f"range 0..5 (the limit is +-{AU_HARD_LIMIT:g})")
    if low < AU_RANGE[0] or high > AU_RANGE[1]:
        logger.warning("AU intensities outside 0..5 (%g..%g): FineFace was trained on 0..5; results may be odd", low, high)
    return aus


def check_scale(value, name: str, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > limit:
        raise SettingsError(f"{name} must be a finite number within +-{limit:g}, got {value!r}")
    return float(value)
