"""Percentile stretch of arbitrary-depth bands to 8 bit, honouring nodata."""

from __future__ import annotations

import numpy as np


def percentile_limits(
    bands: np.ndarray,
    low: float = 2.0,
    high: float = 98.0,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Per-band ``(low, high)`` percentiles of a CxHxW array over ``valid`` pixels (HxW bool mask).

    Returns:
        float64 array of shape (C, 2). Bands with no valid pixel get ``(0, 1)``.
    """
    if bands.ndim != 3:
        raise ValueError(f"expected a CxHxW array, got shape {bands.shape}")
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got ({low}, {high})")
    limits = np.zeros((bands.shape[0], 2), dtype=np.float64)
    for c in range(bands.shape[0]):
        values = bands[c] if valid is None else bands[c][valid]
        values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if values.size == 0:
            limits[c] = (0.0, 1.0)
            continue
        lo, hi = np.percentile(values, [low, high])
        limits[c] = (lo, hi if hi > lo else lo + 1.0)
    return limits


def apply_limits(bands: np.ndarray, limits: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Map each band linearly from its ``(lo, hi)`` limits to 0..255 uint8; invalid pixels become 0."""
    if limits.shape != (bands.shape[0], 2):
        raise ValueError(f"limits must have shape ({bands.shape[0]}, 2), got {limits.shape}")
    lo = limits[:, 0].reshape(-1, 1, 1)
    span = (limits[:, 1] - limits[:, 0]).reshape(-1, 1, 1)
    scaled = (bands.astype(np.float32) - lo.astype(np.float32)) / span.astype(np.float32)
    out = np.clip(np.nan_to_num(scaled, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if valid is not None:
        out[:, ~valid] = 0
    return out


def stretch_to_uint8(
    bands: np.ndarray,
    low: float = 2.0,
    high: float = 98.0,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Percentile-stretch a CxHxW array (any dtype) to uint8 CxHxW. uint8 input is returned unchanged."""
    if bands.dtype == np.uint8:
        return bands
    return apply_limits(bands, percentile_limits(bands, low, high, valid), valid)
