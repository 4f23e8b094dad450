"""Nuisance differences between two acquisitions of an unchanged scene, applied to one date of a training pair.

The SECOND-CC paper lists what a change captioner must not call change: illumination differences, small
misregistration, blur and resolution differences between dates. Real archives add seasons (vegetation turning
yellow or brown) and haze. :func:`nuisance` draws a random mix of them from its generator; each one is a simple
pixel operation on a uint8 (H, W, 3) array, so the same draw on the same image always gives the same result.

Rules: the output has the input's shape and dtype; geometry changes (shift, rotation) are a few pixels at most and
fill the border by reflection, so no black margin announces a "change"; ``strength`` scales every effect (0 returns
the input unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["NuisanceConfig", "nuisance"]


@dataclass(frozen=True)
class NuisanceConfig:
    """Probabilities and ranges of each nuisance (a draw applies each one with its probability).

    Attributes:
        illumination: probability of a gain / gamma / per-channel tint change.
        season: probability of a vegetation colour shift (green towards yellow-brown, or back).
        shift: probability of a misregistration of up to ``max_shift`` pixels and ``max_rotation`` degrees.
        blur: probability of a Gaussian blur of sigma up to ``max_blur`` pixels.
        resolution: probability of a down-then-up resampling by a factor up to ``max_downscale``.
        haze: probability of a haze veil.
        noise: probability of sensor noise.
    """

    illumination: float = 0.8
    season: float = 0.4
    shift: float = 0.5
    blur: float = 0.3
    resolution: float = 0.3
    haze: float = 0.2
    noise: float = 0.3
    max_shift: float = 4.0
    max_rotation: float = 2.0
    max_blur: float = 1.5
    max_downscale: float = 3.0


def _illumination(x: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    gain = 1.0 + s * rng.uniform(-0.3, 0.3)
    gamma = float(np.exp(s * rng.uniform(-0.35, 0.35)))
    tint = 1.0 + s * rng.uniform(-0.08, 0.08, 3)
    return np.clip((np.clip(x * gain, 0, 1) ** gamma) * tint, 0, 1)


def _season(x: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    green = np.clip((g - np.maximum(r, b)) * 6.0, 0, 1)[..., None]  # how vegetated each pixel looks
    if rng.random() < 0.7:  # summer -> autumn / dry season: green turns yellow-brown
        target = np.stack([g * rng.uniform(0.9, 1.15), g * rng.uniform(0.75, 0.9), b * rng.uniform(0.6, 0.9)], -1)
    else:  # dry -> green
        target = np.stack([r * rng.uniform(0.7, 0.9), g * rng.uniform(1.05, 1.25), b * rng.uniform(0.8, 1.0)], -1)
    amount = s * rng.uniform(0.4, 1.0)
    return np.clip(x + amount * green * (target - x), 0, 1)


def _shift(image: Image.Image, rng: np.random.Generator, s: float, cfg: NuisanceConfig) -> Image.Image:
    w, h = image.size
    pad = int(np.ceil(cfg.max_shift * s)) + 4
    padded = np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    big = Image.fromarray(padded)
    dx, dy = (s * rng.uniform(-cfg.max_shift, cfg.max_shift, 2)).tolist()
    angle = float(s * rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    big = big.rotate(angle, resample=Image.Resampling.BILINEAR, translate=(dx, dy))
    return big.crop((pad, pad, pad + w, pad + h))


def nuisance(image: np.ndarray, rng: np.random.Generator, config: NuisanceConfig | None = None,
             strength: float = 1.0) -> np.ndarray:
    """``image`` (uint8 (H, W, 3)) as another acquisition of the same unchanged scene (see the module docstring)."""
    cfg = config or NuisanceConfig()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"nuisance() takes uint8 (H, W, 3) RGB arrays, got {image.dtype} {image.shape}")
    if strength <= 0:
        return image
    s = float(strength)
    pil = Image.fromarray(image)
    h, w = image.shape[:2]
    if rng.random() < cfg.shift:
        pil = _shift(pil, rng, s, cfg)
    if rng.random() < cfg.resolution:
        factor = 1.0 + s * rng.uniform(0.3, cfg.max_downscale - 1.0)
        small = pil.resize((max(8, round(w / factor)), max(8, round(h / factor))), Image.Resampling.BILINEAR)
        pil = small.resize((w, h), Image.Resampling.BICUBIC)
    if rng.random() < cfg.blur:
        pil = pil.filter(ImageFilter.GaussianBlur(float(s * rng.uniform(0.4, cfg.max_blur))))
    x = np.asarray(pil, dtype=np.float32) / 255.0
    if rng.random() < cfg.illumination:
        x = _illumination(x, rng, s)
    if rng.random() < cfg.season:
        x = _season(x, rng, s)
    if rng.random() < cfg.haze:
        veil = np.array([0.75, 0.78, 0.82]) * rng.uniform(0.8, 1.0)
        x = x + s * rng.uniform(0.05, 0.25) * (veil - x)
    if rng.random() < cfg.noise:
        x = x + rng.normal(0.0, s * rng.uniform(0.005, 0.03), x.shape)
    return (np.clip(x, 0, 1) * 255.0 + 0.5).astype(np.uint8)
