"""Smoothing over time: the One-Euro filter, run forwards and backwards over a whole clip.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a low-pass filter whose cutoff
rises with speed: ``cutoff = min_cutoff + beta * |dx/dt|``. Still values are smoothed hard
(jitter goes), fast ones lightly (no lag while they move). A clip is known in full before it is
edited, so each series is filtered forwards and then backwards: the two passes' phase lags
cancel, and a head moving at constant speed is followed with no lag at all (the ends included:
the series is extended past them by reflection first).
"""

from __future__ import annotations

import math

import numpy as np

from ..au import AUVector

# Crop transforms (pixels): hold a still head still, follow a moving one. With beta at 0.05 the
# cutoff reaches 1 + 0.05 * 100 = 6 Hz when the face moves at 100 px/s.
CROP_MIN_CUTOFF_HZ = 1.0
CROP_BETA = 0.05
# AU intensities (0..5): a plain low-pass at 3 Hz (beta 0). Expressions rise and fall over a
# few hundred milliseconds; frame-to-frame jitter of the estimator is faster than that.
AU_CUTOFF_HZ = 3.0
DERIVATIVE_CUTOFF_HZ = 1.0


def _alpha(cutoff_hz: np.ndarray | float, rate_hz: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau * rate_hz)


def one_euro(series: np.ndarray, rate_hz: float, min_cutoff_hz: float, beta: float = 0.0,
             derivative_cutoff_hz: float = DERIVATIVE_CUTOFF_HZ) -> np.ndarray:
    """One causal One-Euro pass over ``series`` ``[T, D]`` sampled at ``rate_hz``."""
    x = np.asarray(series, dtype=np.float64)
    out = np.empty_like(x)
    if len(x) == 0:
        return out
    out[0] = x[0]
    derivative = np.zeros_like(x[0])
    a_d = _alpha(derivative_cutoff_hz, rate_hz)
    for t in range(1, len(x)):
        derivative = a_d * (x[t] - out[t - 1]) * rate_hz + (1 - a_d) * derivative
        a = _alpha(min_cutoff_hz + beta * np.abs(derivative), rate_hz)
        out[t] = a * x[t] + (1 - a) * out[t - 1]
    return out


def smooth_series(series: np.ndarray, rate_hz: float, min_cutoff_hz: float, beta: float = 0.0) -> np.ndarray:
    """Zero-lag One-Euro smoothing: a forward pass, then a backward pass over its output.

    Each end is first extended by a second of the series mirrored through its end point (odd
    reflection, as scipy's ``filtfilt`` pads), so the filters settle on the padding: a steady motion
    then runs through the first and last frames too, instead of lagging there."""
    if rate_hz <= 0:
        raise ValueError(f"the frame rate must be positive, got {rate_hz}")
    x = np.asarray(series, dtype=np.float64)
    if len(x) == 0:
        return x.copy()
    pad = max(1, round(rate_hz))
    x = np.pad(x, [(pad, pad)] + [(0, 0)] * (x.ndim - 1), mode="reflect", reflect_type="odd")
    forward = one_euro(x, rate_hz, min_cutoff_hz, beta)
    smoothed = one_euro(forward[::-1], rate_hz, min_cutoff_hz, beta)[::-1]
    return smoothed[pad:len(smoothed) - pad].copy()


def smooth_aus(aus: AUVector, fps: float, cutoff_hz: float = AU_CUTOFF_HZ) -> AUVector:
    """An AU trajectory (one row per frame) low-passed at ``cutoff_hz`` (0 leaves it as is)."""
    if cutoff_hz <= 0 or len(aus) < 2:
        return aus
    smoothed = smooth_series(aus.values.numpy(), fps, cutoff_hz, beta=0.0)
    return AUVector(smoothed.astype(np.float32))


def fill_gaps(rows: np.ndarray) -> np.ndarray:
    """A series ``[T, D]`` whose NaN rows (frames without a face) take the nearest earlier row, or
    before the first valid row, that row. At least one row must be valid."""
    filled = np.array(rows, dtype=np.float32)
    valid = ~np.isnan(filled).any(axis=1)
    if not valid.any():
        raise ValueError("no valid row to fill the gaps from")
    last = None
    for t in range(len(filled)):
        if valid[t]:
            last = filled[t]
        elif last is not None:
            filled[t] = last
    first = int(np.flatnonzero(valid)[0])
    filled[:first] = filled[first]
    return filled
