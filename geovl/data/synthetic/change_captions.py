"""LEVIR-CC-style change captions ("there is no difference", "three houses are built on the left", ...).

Sentences are written from a :class:`ChangeInfo` that the change edit filled in from what it actually did
(how many buildings, where, which variant), so counts and spatial words are correct. Unchanged pairs get
sentences of :data:`geovl.data.change_sentences.NO_CHANGE_SENTENCES`, the list the readers and metrics test
captions against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geovl.data.change_sentences import NO_CHANGE_SENTENCES
from geovl.data.synthetic.captions import count_np, number_word, vague_np
from geovl.data.synthetic.geometry import where_phrase


@dataclass
class ChangeInfo:
    """What a change edit did, for captions and attributes.

    ``where`` is a region word (or ``"through"`` for a road crossing the middle), ``count`` the number of
    objects added or removed, ``variant`` a sub-type (e.g. "shrink" for a water change), ``ground`` what was
    there before (e.g. "bare land").
    """

    count: int = 0
    where: str = ""
    variant: str = ""
    ground: str = "land"
    direction: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _loc(info: ChangeInfo, default: str = "") -> str:
    if info.where in ("", "through"):
        return default
    return where_phrase(info.where)


def _be(n: int) -> str:
    return "is" if n == 1 else "are"


def _built(info: ChangeInfo) -> list[str]:
    n, loc = info.count, _loc(info, "in the middle")
    houses = count_np(n, "house")
    out = [f"{houses} {_be(n)} built {loc}", f"{vague_np(n, 'new building')} {'appears' if n == 1 else 'appear'} {loc}",
           f"the {info.ground} {loc} is replaced by {count_np(n, 'building')}",
           f"{count_np(n, 'building')} {'has' if n == 1 else 'have'} been constructed {loc}",
           f"new buildings are built on the {info.ground} {loc}"]
    if info.extra.get("along_road"):
        out.append(f"{'many buildings' if n > 10 else count_np(n, 'building')} {_be(n)} built along the road")
    if info.extra.get("with_road"):
        out += [f"a road and {houses} are built {loc}", f"a new road with {vague_np(n, 'house')} appears {loc}"]
    if n > 10:
        out.append(f"many buildings are built {loc}")
    return out


def _removed(info: ChangeInfo) -> list[str]:
    n, loc = info.count, _loc(info, "in the middle")
    noun = str(info.extra.get("noun", "house"))
    return [f"{count_np(n, noun)} {_be(n)} removed {loc}",
            f"the {'building' if n == 1 else 'buildings'} {loc} {'is' if n == 1 else 'are'} demolished",
            f"{count_np(n, 'building')} {'disappears' if n == 1 else 'disappear'} {loc}",
            f"{vague_np(n, 'building')} {_be(n)} torn down and bare land appears {loc}",
            f"{count_np(n, 'building')} {_be(n)} replaced by bare land {loc}"]


def _road(info: ChangeInfo) -> list[str]:
    loc = _loc(info, "in the middle")
    out = [f"a road is built {loc}", f"a new road is constructed {info.direction}", f"a road appears {loc}",
           f"a road is built across the {info.ground}", f"a new road goes {info.direction} {loc}"]
    if info.variant == "extended":
        start = info.extra.get("from", "")
        out += [f"a road is extended from the {start} to the center" if start else "a road is extended",
                f"a road is built from the {start} edge" if start else "a road is built halfway"]
    return out


def _trees(info: ChangeInfo) -> list[str]:
    loc = _loc(info, "in the middle")
    if info.variant == "forest":
        return [f"part of the forest {loc} is cut down", f"the trees {loc} are removed",
                f"some vegetation {loc} is removed and becomes bare land", f"a piece of forest {loc} disappears",
                f"the woods {loc} are cleared"]
    n = info.count
    return [f"{count_np(n, 'tree')} {_be(n)} cut down {loc}",
            f"the {'tree' if n == 1 else 'trees'} {loc} {'is' if n == 1 else 'are'} removed",
            f"{vague_np(n, 'tree')} {'disappears' if n == 1 else 'disappear'} {loc}",
            f"some vegetation {loc} is removed", f"{number_word(n)} {'tree is' if n == 1 else 'trees are'} gone"]


def _water(info: ChangeInfo) -> list[str]:
    loc = _loc(info, "in the middle")
    v = info.variant
    water = str(info.extra.get("water", "lake"))
    if v == "shrink":
        return [f"the {water} becomes smaller", f"the water area of the {water} shrinks",
                f"part of the {water} {loc} dries up", f"the {water} shrinks and its shore becomes bare",
                "the water surface decreases"]
    if v == "expand":
        return [f"the {water} becomes larger", "the water area expands",
                f"the {water} spreads over the surrounding land", f"the {water} grows bigger",
                "the water surface increases"]
    if v == "appear":
        return [f"a new pond appears {loc}", f"a pond is dug {loc}", f"a small water body appears {loc}",
                f"a new pond is built in the {info.ground}", f"water appears {loc}"]
    return [f"the {water} {loc} disappears", f"the {water} is filled and becomes bare land",
            f"the water {loc} is gone", f"the {water} {loc} is filled up", f"the {water} dries up"]


_TEMPLATES = {"buildings_built": _built, "buildings_removed": _removed, "road_built": _road,
              "trees_removed": _trees, "water_changed": _water}


def change_captions(change: str, info: ChangeInfo, rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct captions for a change of type ``change`` (the first a canonical one)."""
    if change == "none":
        pool = list(NO_CHANGE_SENTENCES)
    elif change in _TEMPLATES:
        pool = list(dict.fromkeys(" ".join(s.split()) for s in _TEMPLATES[change](info)))
    else:
        raise ValueError(f"unknown change type {change!r}")
    order = [pool[0]] + [pool[i] for i in 1 + rng.permutation(len(pool) - 1)]
    k = 2
    while len(order) < n:  # only for n larger than the template pool
        order.append(f"{pool[0]} ({k})")
        k += 1
    return [s + "." for s in order[:n]]
