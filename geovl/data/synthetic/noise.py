"""Deterministic noise fields and periodic patterns used by the synthetic scene renderer.

Image-sized computations here are elementwise float32 arithmetic (no reductions and no transcendental ufuncs)
plus Pillow resampling, so a given seed gives the same bytes on any machine with the same numpy and Pillow.
All fields are float32 arrays of shape ``(height, width)``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

#: Below this feature size (pixels) noise is generated at this size and its amplitude reduced instead: texture
#: finer than a pixel averages out, as it does in a real sensor's point-spread function.
_MIN_CELL_PX = 0.75


def wave(t: np.ndarray) -> np.ndarray:
    """Smooth periodic wave of period 1 and range [-1, 1], shaped like ``cos(2πt)``.

    A polynomial of a triangle wave rather than ``np.cos``, so the result is bit-reproducible across platforms.
    """
    f = t - np.floor(t)
    g = 2.0 * np.abs(2.0 * f - 1.0) - 1.0
    return (g * (1.5 - 0.5 * g * g)).astype(np.float32, copy=False)


@lru_cache(maxsize=8)
def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(xs, ys)``, each float32 ``(height, width)``; cached and read-only."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def value_noise(rng: np.random.Generator, height: int, width: int, cell_px: float) -> np.ndarray:
    """Smooth random field with values around [0, 1] (mean 0.5) and blobs about ``cell_px`` pixels across.

    Features smaller than a pixel are not aliased: their amplitude shrinks towards a flat 0.5.
    """
    if cell_px <= 0:
        raise ValueError(f"cell_px must be positive, got {cell_px}")
    amp = 1.0
    if cell_px < _MIN_CELL_PX:
        amp = cell_px / _MIN_CELL_PX
        cell_px = _MIN_CELL_PX
    gh = int(height / cell_px) + 4
    gw = int(width / cell_px) + 4
    grid = rng.random((gh, gw), dtype=np.float32)
    ox, oy = 1.0 + float(rng.random()), 1.0 + float(rng.random())
    box = (ox, oy, ox + width / cell_px, oy + height / cell_px)
    out = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC, box=box))
    if amp != 1.0:
        out = 0.5 + (out - 0.5) * np.float32(amp)
    return out


def fbm(rng: np.random.Generator, height: int, width: int, cell_px: float, octaves: int = 3) -> np.ndarray:
    """Fractal (multi-octave) value noise around [0, 1]; the largest features are ``cell_px`` pixels across."""
    total = np.zeros((height, width), np.float32)
    weight_sum = 0.0
    weight = 1.0
    for _ in range(octaves):
        # Octaves far below a pixel contribute nothing visible; skip them to save time.
        if cell_px < 0.2 and weight_sum > 0:
            break
        total += np.float32(weight) * (value_noise(rng, height, width, cell_px) - 0.5)
        weight_sum += weight
        weight *= 0.5
        cell_px *= 0.5
    return 0.5 + total / np.float32(weight_sum) * np.float32(1.6)


def shift(field: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``field`` translated by ``(dx, dy)`` pixels with edge replication (for relief shading)."""
    if dx == 0 and dy == 0:
        return field
    h, w = field.shape[:2]
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return field[ys][:, xs]


def soften(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur (edges replicated), a cheap stand-in for a sensor point-spread function."""
    p = np.concatenate([img[:1], img, img[-1:]], axis=0)
    v = (p[:-2] + 2.0 * p[1:-1] + p[2:]) * np.float32(0.25)
    q = np.concatenate([v[:, :1], v, v[:, -1:]], axis=1)
    return ((q[:, :-2] + 2.0 * q[:, 1:-1] + q[:, 2:]) * np.float32(0.25)).astype(np.float32, copy=False)
