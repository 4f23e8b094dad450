"""Real-texture change pairs: a real aerial image, and the same image with a region of another real image pasted in.

Rendered scenes (:mod:`geovl.data.synthetic.change`) know every change exactly but look rendered; these pairs look
like real imagery because every pixel comes from a real photograph. A pair is made from a *target* image (open
land: bare land, meadow, farmland, forest, desert, scrub) and a *donor* image (built-up: residential, industrial,
commercial):

* ``buildings_built``: A is the target; B is the target with an irregular region of the donor pasted in (feathered
  edge, the donor's brightness pulled towards the target's so the seam is not the only cue);
* ``buildings_removed``: the same two images the other way round, the pasted region being the "before";
* ``none``: A is the target, B the target again.

Either way B then goes through :func:`geovl.data.synthetic.nuisance.nuisance` (illumination, season,
misregistration, blur, resolution, haze, noise), so an unchanged pair differs as two real acquisitions do, and
a changed one differs by that *and* by its pasted region. The change mask is the pasted region (alpha >= 0.5);
captions are LEVIR-CC-style sentences naming where the region is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from geovl.data.synthetic.geometry import blob, region_word, where_phrase
from geovl.data.synthetic.nuisance import NuisanceConfig, nuisance

__all__ = ["DONOR_CLASSES", "GROUND_WORDS", "PASTE_CHANGES", "PastedPair", "paste_change_pair"]

#: Scene classes (UC Merced and AID names, lower case) that pasted regions come from.
DONOR_CLASSES = frozenset({"buildings", "denseresidential", "mediumresidential", "mobilehomepark", "industrial",
                           "commercial", "sparseresidential"})
#: Scene classes that receive a pasted region, and the word captions use for their ground.
GROUND_WORDS = {"bareland": "bare land", "meadow": "grassland", "farmland": "farmland", "agricultural": "farmland",
                "forest": "forest", "desert": "desert", "chaparral": "bare land", "golfcourse": "grassland",
                "mountain": "land", "park": "green land"}
PASTE_CHANGES = ("none", "buildings_built", "buildings_removed")


@dataclass
class PastedPair:
    """A real-texture pair; fields as :class:`geovl.data.synthetic.change.SyntheticChangePair`."""

    image_a: np.ndarray
    image_b: np.ndarray
    mask: np.ndarray
    change_type: str
    captions: list[str]
    attributes: dict[str, Any] = field(default_factory=dict)


def _region_alpha(rng: np.random.Generator, size: int, fraction: float) -> tuple[np.ndarray, float, float]:
    """A feathered irregular region covering about ``fraction`` of a ``size`` square; (alpha, centre x, centre y)."""
    area = fraction * size * size
    aspect = rng.uniform(0.6, 1.6)
    rx = math.sqrt(area / math.pi * aspect)
    ry = area / (math.pi * rx)
    margin = 0.6 * min(rx, ry)
    cx, cy = (float(v) for v in rng.uniform(margin, size - margin, 2))
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon(blob(rng, cx, cy, rx, ry, float(rng.uniform(0, math.pi)), roughness=0.35),
                                fill=255)
    alpha = np.asarray(img.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 4.0)))), np.float32) / 255.0
    return alpha, cx, cy


def _captions(change: str, where: str, ground: str, rng: np.random.Generator, n: int) -> list[str]:
    from geovl.data.change_sentences import NO_CHANGE_SENTENCES

    loc = where_phrase(where)
    if change == "none":
        pool = list(NO_CHANGE_SENTENCES[:5])
    elif change == "buildings_built":
        pool = [f"some buildings are built {loc}", f"many buildings appear on the {ground} {loc}",
                f"the {ground} {loc} is replaced by buildings", f"a residential area is built {loc}",
                f"new buildings are constructed {loc}", f"buildings are built on the {ground} {loc}"]
    else:
        pool = [f"the buildings {loc} are removed", f"some buildings {loc} are demolished",
                f"the buildings {loc} disappear and become {ground}", f"buildings {loc} are torn down",
                f"the houses {loc} are removed"]
    order = [pool[0]] + [pool[i] for i in 1 + rng.permutation(len(pool) - 1)]
    return [s + "." for s in (order * (n // len(order) + 1))[:n]]


def paste_change_pair(target: np.ndarray, donor: np.ndarray | None, rng: np.random.Generator, change: str, *,
                      ground: str = "land", nuisance_config: NuisanceConfig | None = None,
                      nuisance_strength: float = 1.0, captions: int = 5,
                      fraction: tuple[float, float] = (0.03, 0.35)) -> PastedPair:
    """One real-texture pair (see the module docstring).

    Args:
        target: uint8 (S, S, 3) open-land image.
        donor: uint8 (S, S, 3) built-up image (ignored for ``"none"``).
        rng: the pair's generator (same generator state, same pair).
        change: one of :data:`PASTE_CHANGES`.
        ground: the caption word for the target's ground (:data:`GROUND_WORDS`).
        nuisance_config, nuisance_strength: the acquisition difference applied to B.
        captions: captions per pair.
        fraction: range of the pasted region's share of the image.
    """
    if change not in PASTE_CHANGES:
        raise ValueError(f"unknown pasted change {change!r}; choose from {PASTE_CHANGES}")
    if target.ndim != 3 or target.shape[0] != target.shape[1] or target.dtype != np.uint8:
        raise ValueError(f"target must be a square uint8 (S, S, 3) image, got {target.dtype} {target.shape}")
    size = target.shape[0]
    mask = np.zeros((size, size), np.uint8)
    attributes: dict[str, Any] = {"change": change, "changeflag": int(change != "none"), "source": "pasted"}
    if change == "none":
        a, b, where = target, target, "center"
    else:
        if donor is None or donor.shape != target.shape:
            raise ValueError("a changed pasted pair needs a donor image of the target's shape")
        alpha, cx, cy = _region_alpha(rng, size, float(rng.uniform(*fraction)))
        t, d = target.astype(np.float32), donor.astype(np.float32)
        d = d - d.mean(axis=(0, 1)) + (0.5 * d.mean(axis=(0, 1)) + 0.5 * t.mean(axis=(0, 1)))
        pasted = np.clip(t + alpha[..., None] * (d - t), 0, 255).astype(np.uint8)
        mask = (alpha >= 0.5).astype(np.uint8)
        where = region_word(cx, cy, size, size)
        a, b = (target, pasted) if change == "buildings_built" else (pasted, target)
        attributes.update({"where": where, "changed_pixels": int(mask.sum())})
    b = nuisance(b, rng, nuisance_config, nuisance_strength)
    return PastedPair(a, b, mask, change, _captions(change, where, ground, rng, captions), attributes)
