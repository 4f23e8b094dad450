"""Small planar-geometry helpers in pixel coordinates (x to the right, y down) and the spatial words for them.

Geometry is scalar Python math on a handful of vertices; only the rasterised results are image-sized.
"""

from __future__ import annotations

import math

import numpy as np

Point = tuple[float, float]


def rect_corners(cx: float, cy: float, length: float, width: float, angle: float) -> list[Point]:
    """Corners of a ``length`` x ``width`` rectangle centred at ``(cx, cy)``, long axis at ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    hl, hw = length / 2.0, width / 2.0
    return [
        (cx + c * u - s * v, cy + s * u + c * v)
        for u, v in ((hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw))
    ]


def local_to_px(cx: float, cy: float, angle: float, pts: list[Point]) -> list[Point]:
    """Map points given in an object frame (u along ``angle``, v across) to pixels around ``(cx, cy)``."""
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + c * u - s * v, cy + s * u + c * v) for u, v in pts]


def blob(
    rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0,
    roughness: float = 0.25, n: int = 40,
) -> list[Point]:
    """Irregular closed outline (lake, clearing, field of shrubs) around an ellipse of radii ``rx``, ``ry``.

    The radius is modulated by a few random low-frequency harmonics so outlines look natural, not elliptical.
    """
    amps = rng.uniform(0, roughness, 4) / np.arange(1, 5)
    phases = rng.uniform(0, 2 * math.pi, 4)
    c, s = math.cos(angle), math.sin(angle)
    pts: list[Point] = []
    for i in range(n):
        t = 2 * math.pi * i / n
        harmonics = enumerate(zip(amps, phases, strict=True))
        r = 1.0 + sum(float(a) * math.cos((k + 2) * t + float(p)) for k, (a, p) in harmonics)
        u, v = rx * r * math.cos(t), ry * r * math.sin(t)
        pts.append((cx + c * u - s * v, cy + s * u + c * v))
    return pts


def line_points(
    cx: float, cy: float, angle: float, offset: float, half_length: float,
    meander: float = 0.0, wavelength: float = 1.0, phase: float = 0.0, n: int = 2,
) -> list[Point]:
    """Polyline through the point ``offset`` px from ``(cx, cy)`` along the normal, in direction ``angle``.

    With ``meander`` > 0 it winds sideways with that amplitude (px) and ``wavelength`` (px), sampled at ``n``
    points; otherwise it is a straight segment of length ``2 * half_length``.
    """
    dx, dy = math.cos(angle), math.sin(angle)
    nx, ny = -dy, dx
    px, py = cx + nx * offset, cy + ny * offset
    if meander <= 0 or n < 3:
        return [(px - dx * half_length, py - dy * half_length), (px + dx * half_length, py + dy * half_length)]
    pts = []
    for i in range(n):
        t = -half_length + 2 * half_length * i / (n - 1)
        m = meander * (math.sin(2 * math.pi * t / wavelength + phase) + 0.35 * math.sin(
            4.3 * math.pi * t / wavelength + 1.7 * phase))
        pts.append((px + dx * t + nx * m, py + dy * t + ny * m))
    return pts


def region_word(x: float, y: float, width: int, height: int) -> str:
    """Which ninth of the image ``(x, y)`` falls in: ``"top left"``, ``"top"``, ..., ``"center"``."""
    col = "left" if x < width / 3 else ("right" if x > 2 * width / 3 else "")
    row = "top" if y < height / 3 else ("bottom" if y > 2 * height / 3 else "")
    if row and col:
        return f"{row} {col}"
    return row or col or "center"


def where_phrase(region: str) -> str:
    """Prepositional phrase for a :func:`region_word`: ``"on the left"``, ``"in the top left corner"``, ..."""
    if region == "center":
        return "in the center"
    if region in ("left", "right"):
        return f"on the {region}"
    if region in ("top", "bottom"):
        return f"at the {region}"
    return f"in the {region} corner"


def direction_phrase(angle: float) -> str:
    """How a straight feature at ``angle`` (radians, image coordinates) crosses the image."""
    c, s = math.cos(angle), math.sin(angle)
    if abs(c) >= 0.87:
        return "from left to right"
    if abs(s) >= 0.87:
        return "from top to bottom"
    return "from the top left to the bottom right" if c * s > 0 else "from the bottom left to the top right"


def side_word(nx: float, ny: float) -> str:
    """Region word for the image side that the unit vector ``(nx, ny)`` points to."""
    col = "left" if nx < -0.38 else ("right" if nx > 0.38 else "")
    row = "top" if ny < -0.38 else ("bottom" if ny > 0.38 else "")
    if row and col:
        return f"{row} {col}"
    return row or col or "center"
