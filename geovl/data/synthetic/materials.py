"""Procedural ground textures. Each material turns a :class:`MaterialContext` into ``(mix, shade)``.

``mix`` (float32 ``(H, W)``, clipped to [0, 1] by the caller) blends each area's ``colour_a`` into its
``colour_b``; ``shade`` (float32 ``(H, W)``, around 1) multiplies the result. Texture sizes are given in metres
and converted with the ground sample distance, so the same material looks coarser at 0.3 m/px than at 3 m/px
and sub-pixel detail (crop rows, ripples, single crowns) fades out instead of aliasing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geovl.data.synthetic.noise import fbm, pixel_grid, shift, value_noise, wave


@dataclass
class MaterialContext:
    """Inputs for one material: tile size (px), ``gsd`` (m/px), a texture rng, the unit vector towards the sun
    in image coordinates, per-scene material ``params`` and ``lut(key, default)`` giving a per-pixel map of a
    per-area parameter (float32 ``(H, W)``)."""

    height: int
    width: int
    gsd: float
    rng: np.random.Generator
    sun: tuple[float, float]
    params: dict[str, float]
    lut: Callable[[str, float], np.ndarray]

    def px(self, metres: float) -> float:
        """Length in pixels of ``metres`` on the ground."""
        return metres / self.gsd

    def noise(self, metres: float) -> np.ndarray:
        """Value noise with features ``metres`` across."""
        return value_noise(self.rng, self.height, self.width, self.px(metres))

    def fbm(self, metres: float, octaves: int = 3) -> np.ndarray:
        """Fractal noise whose largest features are ``metres`` across."""
        return fbm(self.rng, self.height, self.width, self.px(metres), octaves)

    def relief(self, heights: np.ndarray, metres: float) -> np.ndarray:
        """Slope of ``heights`` towards the sun over ``metres`` (positive = lit side), per pixel."""
        step = max(1.0, self.px(metres))
        dx, dy = round(self.sun[0] * step), round(self.sun[1] * step)
        if dx == 0 and dy == 0:
            dx = 1 if abs(self.sun[0]) >= abs(self.sun[1]) else 0
            dy = 0 if dx else 1
        return (heights - shift(heights, dx, dy)).astype(np.float32, copy=False)


Material = Callable[[MaterialContext], tuple[np.ndarray, np.ndarray]]
_F = np.float32


def _grass(ctx: MaterialContext) -> tuple[np.ndarray, np.ndarray]:
    mix = ctx.fbm(ctx.params.get("patch_m", 18.0))
    shade = (1.0 + _F(0.22) * (ctx.noise(0.8) - 0.5) + _F(0.2) * (ctx.noise(3.0) - 0.5)
             + _F(0.18) * (ctx.noise(9.0) - 0.5) + _F(0.25) * (ctx.fbm(60.0, 2) - 0.5))
    return mix, shade


def _forest(ctx: MaterialContext) -> tuple[np.ndarray, np.ndarray]:
    crown = ctx.params.get("crown_m", 6.0)
    c1 = ctx.noise(crown)
    c2 = ctx.noise(crown * 0.45)
    canopy = _F(0.7) * c1 + _F(0.3) * c2
    lit = ctx.relief(canopy, crown * 0.3)
    shade = np.clip(_F(0.45) + _F(1.0) * canopy + _F(2.2) * lit, 0.3, 1.5) + _F(0.16) * (ctx.noise(0.8) - 0.5)
    mix = _F(0.55) * ctx.fbm(60.0) + _F(0.45) * c2
    return mix, shade


def _water(ctx: MaterialContext) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = pixel_grid(ctx.height, ctx.width)
    period = ctx.px(ctx.params.get("wave_m", 8.0))
    amp = ctx.params.get("wave_amp", 0.03) * float(np.clip((period - 2.0) / 3.0, 0.0, 1.0))
    mix = ctx.fbm(45.0)
    shade = 1.0 + _F(0.03) * (ctx.noise(3.0) - 0.5)
    if amp > 0:
        ang = ctx.params.get("wave_angle", 0.0)
        u = xs * _F(math.cos(ang)) + ys * _F(math.sin(ang))
        warp = ctx.fbm(ctx.params.get("wave_m", 8.0) * 4.0, 2)
        shade = shade + _F(amp) * wave(u / _F(period) + _F(1.6) * warp)
    return mix, shade


def _sand(ctx: MaterialContext) -> tuple[np.ndarray, np.ndarray]:
    mix = ctx.fbm(12.0)
    shade = 1.0 + _F(0.1) * (ctx.noise(0.6) - 0.5) + _F(0.05) * (ctx.noise(3.0) - 0.5)
    return mix, shade


def _dunes(ctx: MaterialContext) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = pixel_grid(ctx.height, ctx.width)
    period_m = ctx.params.get("dune_m", 60.0)
    ang = ctx.params.get("dune_angle", 0.0)
    period = ctx.px(period_m)
    warp = ctx.fbm(period_m * 1.8, 2)
    u = (xs * _F(math.cos(ang)) + ys * _F(math.sin(ang))) / _F(period) + _F(1.4) * warp
    f = u - np.floor(u)
    # Asymmetric profile: a long gentle windward slope and a short steep slip face.
    p = np.where(f < 0.72, f / _F(0.72), (1.0 - f) / _F(0.28))
    heights = (p * p * (3.0 - 2.0 * p)).astype(np.float32)
    step = max(1.0, 0.04 * period)
    # Scaled so the windward slope brightens by ~15 % and the slip face darkens by ~40 %.
    lit = ctx.relief(heights, step * ctx.gsd) * _F(0.108 * period / step)
    shade = np.clip(_F(0.96) + _F(0.08) * heights + lit, 0.5, 1.3)
    # Wind ripples (1-3 m apart) across the dunes, visible only at fine resolution.
    ripple = ctx.px(ctx.params.get("ripple_m", 1.5))
    if ripple >= 2.5:
        r = (xs * _F(math.cos(ang)) + ys * _F(math.sin(ang))) / _F(ripple) + _F(3.0) * ctx.fbm(8.0, 2)
        shade = shade + _F(0.05 * min(1.0, (ripple - 2.5) / 2.0)) * wave(r)
    shade = shade + _F(0.06) * (ctx.noise(0.8) - 0.5)
    mix = ctx.fbm(period_m * 2.5, 2)
    return mix, shade


def _soil(ctx: MaterialContext) -> tuple[np.ndarray, np.ndarray]:
    mix = ctx.fbm(25.0)
    shade = (1.0 + _F(0.3) * (ctx.noise(0.7) - 0.5) + _F(0.2) * (ctx.noise(3.0) - 0.5)
             + _F(0.18) * (ctx.noise(12.0) - 0.5))
    return mix, shade


def _asphalt(ctx: MaterialContext) -> tuple[np.ndarray, np.ndarray]:
    mix = _F(0.2) + _F(0.6) * ctx.fbm(25.0, 2)
    shade = 1.0 + _F(0.12) * (ctx.noise(0.5) - 0.5)
    return mix, shade


def _concrete(ctx: MaterialContext) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = pixel_grid(ctx.height, ctx.width)
    mix = ctx.fbm(22.0, 2)
    shade = 1.0 + _F(0.07) * (ctx.noise(0.6) - 0.5)
    slab = ctx.px(ctx.params.get("slab_m", 6.0))
    if slab >= 5.0:
        ang = ctx.params.get("angle", 0.0)
        c, s = _F(math.cos(ang)), _F(math.sin(ang))
        u = (xs * c + ys * s) / _F(slab)
        v = (ys * c - xs * s) / _F(slab)
        edge = _F(1.0 / slab)
        joint = ((u - np.floor(u)) < edge) | ((v - np.floor(v)) < edge)
        shade = shade - _F(0.07) * joint
    return mix, shade


def _field(ctx: MaterialContext) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = pixel_grid(ctx.height, ctx.width)
    period = ctx.lut("period_m", 3.0) / _F(ctx.gsd)
    u = xs * ctx.lut("cos", 1.0) + ys * ctx.lut("sin", 0.0)
    amp = np.clip((period - 2.0) / 3.0, 0.0, 1.0) * ctx.lut("amp", 0.12)
    mix = ctx.fbm(30.0, 2)
    shade = 1.0 + amp * wave(u / period) + _F(0.08) * (ctx.noise(1.0) - 0.5)
    return mix, shade


def _urban(ctx: MaterialContext) -> tuple[np.ndarray, np.ndarray]:
    # Built-up blocks at resolutions where single buildings are under ~2 px: roofs (colour_b) cover a fraction
    # ``density`` of the ground (colour_a) in building-sized blobs, which average out as the gsd grows.
    blobs = ctx.noise(ctx.params.get("building_m", 12.0))
    mix = np.clip(ctx.lut("density", 0.3) + (blobs - 0.5) * _F(4.0), 0.0, 1.0)
    shade = 1.0 + _F(0.25) * (ctx.noise(ctx.params.get("building_m", 12.0) * 0.5) - 0.5)
    return mix, shade


MATERIALS: dict[str, Material] = {
    "urban": _urban,
    "grass": _grass,
    "forest": _forest,
    "water": _water,
    "sand": _sand,
    "dunes": _dunes,
    "soil": _soil,
    "asphalt": _asphalt,
    "concrete": _concrete,
    "field": _field,
}
