"""Plausible colour ranges (8-bit RGB, before illumination) for every surface and object the scenes draw.

Vegetation ranges depend on the season. :func:`pick` samples one colour: a shared lightness position inside the
range plus a small independent jitter per channel, so hues stay plausible while brightness varies.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable

RGB = tuple[float, float, float]

SEASONS: tuple[str, ...] = ("spring", "summer", "autumn", "winter")

_RANGES: dict[str, tuple[RGB, RGB]] = {
    # vegetation, by season
    "grass/spring": ((92, 138, 62), (138, 172, 92)),
    "grass/summer": ((78, 112, 52), (122, 148, 80)),
    "grass/autumn": ((118, 118, 66), (158, 148, 96)),
    "grass/winter": ((112, 108, 86), (148, 142, 118)),
    "forest/spring": ((44, 82, 40), (78, 118, 58)),
    "forest/summer": ((26, 54, 28), (58, 88, 46)),
    "forest/autumn": ((98, 68, 30), (150, 108, 48)),
    "forest/winter": ((58, 56, 50), (84, 80, 70)),
    "conifer": ((22, 44, 30), (44, 68, 46)),
    "tree/spring": ((56, 100, 46), (96, 140, 70)),
    "tree/summer": ((36, 72, 34), (74, 108, 56)),
    "tree/autumn": ((120, 84, 36), (178, 128, 56)),
    "tree/winter": ((82, 76, 64), (112, 104, 88)),
    "shrub": ((70, 78, 50), (104, 108, 72)),
    # crops, by state
    "crop/green": ((70, 118, 48), (118, 160, 78)),
    "crop/light_green": ((128, 160, 86), (168, 190, 116)),
    "crop/yellow": ((178, 160, 92), (218, 196, 124)),
    "crop/brown": ((110, 86, 60), (152, 122, 90)),
    "crop/dark_green": ((40, 80, 40), (70, 108, 56)),
    # water
    "water/sea": ((14, 38, 60), (38, 72, 98)),
    "water/lake": ((24, 54, 62), (54, 86, 88)),
    "water/river": ((40, 68, 72), (84, 102, 96)),
    "water/shallow": ((62, 126, 132), (112, 172, 170)),
    # ground
    "sand": ((192, 174, 134), (232, 216, 176)),
    "sand/wet": ((150, 136, 106), (186, 170, 134)),
    "desert": ((194, 148, 98), (228, 192, 142)),
    "soil": ((118, 94, 70), (170, 140, 106)),
    "soil/dry": ((160, 140, 112), (200, 180, 150)),
    "rock": ((96, 92, 86), (140, 134, 124)),
    "asphalt": ((58, 58, 60), (98, 98, 100)),
    "concrete": ((160, 160, 156), (208, 208, 202)),
    "gravel": ((132, 126, 116), (170, 164, 152)),
    # roofs
    "roof/red": ((138, 58, 44), (186, 96, 70)),
    "roof/grey": ((92, 92, 96), (142, 142, 146)),
    "roof/dark": ((48, 48, 54), (80, 80, 86)),
    "roof/white": ((200, 200, 198), (242, 242, 240)),
    "roof/blue": ((58, 96, 146), (92, 132, 182)),
    "roof/brown": ((108, 80, 60), (150, 112, 82)),
    "roof/orange": ((170, 96, 50), (210, 130, 80)),
    # objects
    "tank": ((196, 196, 194), (238, 238, 236)),
    "airplane": ((214, 216, 220), (246, 246, 248)),
    "boat": ((210, 210, 210), (248, 248, 248)),
    "pool": ((56, 156, 196), (104, 200, 228)),
    "marking/white": ((210, 210, 206), (238, 238, 234)),
    "marking/yellow": ((196, 170, 60), (226, 198, 96)),
    "umbrella/red": ((180, 40, 40), (220, 80, 70)),
    "umbrella/blue": ((40, 80, 170), (80, 120, 210)),
    "umbrella/yellow": ((210, 180, 50), (240, 214, 90)),
}

#: Car paint colours with their relative frequency.
CAR_COLOURS: tuple[tuple[RGB, float], ...] = (
    ((228, 228, 228), 0.26),
    ((34, 34, 36), 0.2),
    ((120, 122, 126), 0.16),
    ((182, 184, 188), 0.16),
    ((162, 34, 32), 0.09),
    ((38, 60, 128), 0.08),
    ((40, 90, 60), 0.025),
    ((200, 170, 60), 0.025),
)


Random = Callable[[], float]
"""A source of uniform floats in [0, 1) (e.g. ``Generator.random`` or a buffered stream)."""


def pick(random: Random, key: str, season: str | None = None, jitter: float = 6.0) -> RGB:
    """Sample one RGB colour (0-255 floats) from the range named ``key`` (``"<key>/<season>"`` if it exists)."""
    name = f"{key}/{season}" if season is not None and f"{key}/{season}" in _RANGES else key
    if name not in _RANGES:
        raise ValueError(f"unknown colour range {key!r}; known: {sorted(_RANGES)}")
    lo, hi = _RANGES[name]
    t = random()
    return (
        min(255.0, max(0.0, lo[0] + (hi[0] - lo[0]) * t + jitter * (2 * random() - 1))),
        min(255.0, max(0.0, lo[1] + (hi[1] - lo[1]) * t + jitter * (2 * random() - 1))),
        min(255.0, max(0.0, lo[2] + (hi[2] - lo[2]) * t + jitter * (2 * random() - 1))),
    )


_CAR_CUMULATIVE = tuple(itertools.accumulate(w for _, w in CAR_COLOURS))


def pick_car(random: Random) -> RGB:
    """Sample a car paint colour with realistic frequencies."""
    r = random() * _CAR_CUMULATIVE[-1]
    i = min(bisect.bisect_right(_CAR_CUMULATIVE, r), len(CAR_COLOURS) - 1)
    base = CAR_COLOURS[i][0]
    return (
        min(255.0, max(0.0, base[0] + 16 * random() - 8)),
        min(255.0, max(0.0, base[1] + 16 * random() - 8)),
        min(255.0, max(0.0, base[2] + 16 * random() - 8)),
    )


def scale(colour: RGB, factor: float) -> RGB:
    """``colour`` brightened (``factor`` > 1) or darkened, clipped to 0-255."""
    return (min(255.0, colour[0] * factor), min(255.0, colour[1] * factor), min(255.0, colour[2] * factor))


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """Linear blend ``a + (b - a) * t``."""
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def vegetation_word(season: str) -> str:
    """Colour adjective for leafy vegetation in ``season`` (used by captions)."""
    return {"spring": "green", "summer": "green", "autumn": "yellow", "winter": "withered"}.get(season, "green")
