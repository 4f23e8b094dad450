"""Configuration of the synthetic scene generator and its per-tile random generators."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from geovl.data.synthetic.classes import CLASSES
from geovl.data.synthetic.palette import SEASONS

#: Change types of :func:`~geovl.data.synthetic.generate_change_pair`, "none" first.
CHANGE_TYPES: tuple[str, ...] = (
    "none", "buildings_built", "buildings_removed", "road_built", "trees_removed", "water_changed",
)

MIN_SIZE, MAX_SIZE = 32, 1024
MIN_GSD, MAX_GSD = 0.05, 30.0


@dataclass(frozen=True)
class SceneConfig:
    """What to generate. All fields are validated on construction (``ValueError`` with the reason).

    Attributes:
        size: tile side in pixels, or ``(height, width)``; each between 32 and 1024.
        gsd: ground sample distance in metres per pixel, or a ``(low, high)`` range sampled log-uniformly per tile.
        classes: class names to draw from (default: all of :data:`CLASSES`).
        class_weights: relative frequency of each entry of ``classes`` (default: uniform).
        captions_per_image: distinct captions per tile (and per change pair).
        seasons: seasons to draw from (vegetation colours and crop states depend on it).
        mixture: multiplier on the probability of secondary elements (a road through a forest, ...);
            0 draws only the primary land cover.
        rotate: rotate layouts (street grids, field patterns, runways) by a random angle.
        noise: multiplier on sensor noise.
        change_types: change types for change pairs (default: all of :data:`CHANGE_TYPES`).
        no_change_fraction: probability that a change pair with unspecified type is "none" (LEVIR-CC has
            about half unchanged pairs); ``None`` weighs all ``change_types`` equally.
    """

    size: int | tuple[int, int] = 256
    gsd: float | tuple[float, float] = (0.3, 2.0)
    classes: tuple[str, ...] | None = None
    class_weights: tuple[float, ...] | None = None
    captions_per_image: int = 5
    seasons: tuple[str, ...] = SEASONS
    mixture: float = 1.0
    rotate: bool = True
    noise: float = 1.0
    change_types: tuple[str, ...] | None = None
    no_change_fraction: float | None = 0.5

    def __post_init__(self) -> None:
        h, w = self.shape
        if not (MIN_SIZE <= h <= MAX_SIZE and MIN_SIZE <= w <= MAX_SIZE):
            raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE} px per side, got {self.size!r}")
        lo, hi = self.gsd_range
        if not (MIN_GSD <= lo <= hi <= MAX_GSD):
            raise ValueError(
                f"gsd must be in [{MIN_GSD}, {MAX_GSD}] m/px (a range as (low, high) with low <= high), "
                f"got {self.gsd!r}"
            )
        unknown = [c for c in self.class_names if c not in CLASSES]
        if unknown or not self.class_names:
            raise ValueError(f"unknown or empty classes {unknown or self.classes!r}; choose from {CLASSES}")
        if self.class_weights is not None and (
            len(self.class_weights) != len(self.class_names)
            or any(w < 0 for w in self.class_weights) or sum(self.class_weights) <= 0
        ):
            raise ValueError(
                f"class_weights must be {len(self.class_names)} non-negative numbers with a positive sum "
                f"(one per class), got {self.class_weights!r}"
            )
        if self.captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1, got {self.captions_per_image}")
        if not self.seasons or any(s not in SEASONS for s in self.seasons):
            raise ValueError(f"seasons must be a non-empty subset of {SEASONS}, got {self.seasons!r}")
        if self.mixture < 0 or self.noise < 0:
            raise ValueError(f"mixture and noise must be >= 0, got {self.mixture} and {self.noise}")
        bad = [c for c in self.change_type_names if c not in CHANGE_TYPES]
        if bad or not self.change_type_names:
            raise ValueError(f"unknown or empty change_types {bad or self.change_types!r}; choose from {CHANGE_TYPES}")
        if self.no_change_fraction is not None and not 0.0 <= self.no_change_fraction <= 1.0:
            raise ValueError(f"no_change_fraction must be in [0, 1] or None, got {self.no_change_fraction}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        if isinstance(self.size, int):
            return (self.size, self.size)
        if len(self.size) != 2:
            raise ValueError(f"size must be an int or (height, width), got {self.size!r}")
        return (int(self.size[0]), int(self.size[1]))

    @property
    def gsd_range(self) -> tuple[float, float]:
        """``(low, high)`` ground sample distance in m/px (equal for a fixed gsd)."""
        if isinstance(self.gsd, (int, float)):
            return (float(self.gsd), float(self.gsd))
        if len(self.gsd) != 2:
            raise ValueError(f"gsd must be a number or (low, high), got {self.gsd!r}")
        return (float(self.gsd[0]), float(self.gsd[1]))

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(CLASSES) if self.classes is None else tuple(self.classes)

    @property
    def change_type_names(self) -> tuple[str, ...]:
        return CHANGE_TYPES if self.change_types is None else tuple(self.change_types)

    def sample_gsd(self, rng: np.random.Generator) -> float:
        """Draw a gsd (m/px), log-uniform in the range, rounded to 4 significant digits."""
        lo, hi = self.gsd_range
        if lo == hi:
            return lo
        value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return float(f"{value:.4g}")

    def sample_class(self, rng: np.random.Generator) -> str:
        """Draw a class name according to ``class_weights``."""
        names = self.class_names
        if self.class_weights is None:
            return names[int(rng.integers(len(names)))]
        p = np.asarray(self.class_weights, float)
        return names[int(rng.choice(len(names), p=p / p.sum()))]

    def sample_change(self, rng: np.random.Generator) -> str:
        """Draw a change type (``"none"`` with probability ``no_change_fraction`` when it is allowed)."""
        names = self.change_type_names
        others = [c for c in names if c != "none"]
        if "none" in names and self.no_change_fraction is not None and others:
            if rng.random() < self.no_change_fraction:
                return "none"
            return others[int(rng.integers(len(others)))]
        return names[int(rng.integers(len(names)))]


def tile_rng(seed: int, index: int, *stream: int | str) -> np.random.Generator:
    """Independent PCG64 generator for tile ``index`` of dataset ``seed`` (and an optional sub-stream).

    Tile ``i`` never depends on how many tiles were generated before it. String stream keys (class names,
    purposes) are hashed with CRC-32, which is stable across Python runs and machines.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative integers, got seed={seed}, index={index}")
    keys = [int(seed), int(index)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in stream]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(keys)))
