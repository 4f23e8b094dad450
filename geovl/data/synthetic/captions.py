"""Captions written from what a layout actually contains (UCM / RSICD style: short, lower case, one sentence).

Each class has templates for its primary land cover; every secondary feature (a river, boats, a road, ...) adds
sentences that also name the class, so all captions of a tile mention it. Counts are exact number words up to
ten and "many" above; spatial words come from the rendered geometry (see :mod:`~geovl.data.synthetic.geometry`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from geovl.data.synthetic.classes import CLASS_KEYWORDS
from geovl.data.synthetic.geometry import where_phrase
from geovl.data.synthetic.layout import Feature, Layout
from geovl.data.synthetic.palette import vegetation_word

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def number_word(n: int) -> str:
    """``"two"`` for 2, ..., ``"ten"``; ``"many"`` above ten."""
    return NUMBER_WORDS[n] if 0 <= n <= 10 else "many"


def article(noun: str) -> str:
    """ "an" before a vowel sound, else "a"."""
    return "an" if noun[:1] in "aeiou" else "a"


def count_np(n: int, singular: str, plural: str | None = None) -> str:
    """Noun phrase with an exact count: "a boat", "three boats", "many boats"."""
    plural = plural or singular + "s"
    if n == 1:
        return f"{article(singular)} {singular}"
    return f"{number_word(n)} {plural}"


def vague_np(n: int, singular: str, plural: str | None = None) -> str:
    """Noun phrase with a vague but correct count: "a boat", "two boats", "several boats", "many boats"."""
    plural = plural or singular + "s"
    if n == 1:
        return f"{article(singular)} {singular}"
    if n == 2:
        return f"two {plural}"
    return f"{'several' if n <= 7 else 'many'} {plural}"


def _where(f: Feature, default: str = "") -> str:
    if f.where in ("", "through", "around", "along"):
        return default
    return where_phrase(f.where)


def _be(n: int) -> str:
    return "is" if n == 1 else "are"


class _Facts:
    """Convenient read-only view of a layout for the templates."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.label = layout.label
        self.veg = vegetation_word(layout.season)
        self.facts = layout.facts
        self.size = min(layout.width, layout.height)

    def get(self, kind: str) -> Feature | None:
        return self.layout.feature(kind)

    def count(self, kind: str) -> int:
        f = self.get(kind)
        return f.count if f is not None else 0

    @property
    def surroundings(self) -> str:
        s = str(self.facts.get("surroundings", "meadow"))
        return {"meadow": f"{self.veg} meadow", "forest": "forest", "farmland": "farmland",
                "bare land": "bare land"}.get(s, s)

    @property
    def forest_colour(self) -> str:
        kind = self.facts.get("forest_type", "deciduous")
        if kind == "coniferous":
            return "dark green"
        if kind == "mixed" and self.layout.season == "autumn":
            return "green and yellow"
        if kind == "deciduous":
            return "leafless" if self.layout.season == "winter" else self.veg
        return "green"


# ---------------------------------------------------------------------------------------------- primary


def _sea(f: _Facts) -> list[str]:
    out = ["a large area of dark blue sea", "this is a piece of open sea", "the ocean is deep blue",
           "the sea water is dark blue"]
    if f.facts.get("calm"):
        out += ["the sea is calm and smooth", "a calm sea without waves"]
    else:
        out += ["waves ripple across the sea", "there are many ripples on the sea"]
    if not f.layout.features:
        out += ["nothing but the sea can be seen", "a piece of sea with nothing on it"]
    return out


def _lake(f: _Facts) -> list[str]:
    lake = f.get("lake")
    where = _where(lake, "in the center") if lake else "in the center"
    return [f"a lake surrounded by {f.surroundings}", f"a lake is {where} of the image",
            f"there is a blue lake in the middle of the {f.surroundings}",
            f"a lake with an irregular shape is {where}", f"the {f.surroundings} surrounds a quiet lake",
            "a lake with sandy shores"]


def _river(f: _Facts) -> list[str]:
    river = f.get("river")
    out = [f"a river runs through the {f.surroundings}", "a winding river with sandy banks"]
    if river:
        out.append(f"a winding river flows {river.direction}")
        if river.where == "through":
            out.append(f"a river passes through the middle of the {f.surroundings}")
        else:
            out.append(f"a river flows {where_phrase(river.where)} of the image")
        width = float(river.extra.get("width_px", 0.0))
        if width > 0.15 * f.size:
            out.append(f"a wide river goes through the {f.surroundings}")
        elif width < 0.05 * f.size:
            out.append(f"a narrow river winds through the {f.surroundings}")
    out.append(f"the {f.surroundings} is divided by a river")
    return out


def _forest(f: _Facts) -> list[str]:
    colour = f.forest_colour
    kind = f.facts.get("forest_type", "deciduous")
    out = [f"a large area of dense {colour} forest", f"many {colour} trees form a dense forest",
           "the forest is full of trees", f"a piece of {kind} forest",
           "trees are densely packed in the forest"]
    if not f.layout.features:
        out.append(f"nothing but {colour} trees in the forest")
    return out


def _farmland(f: _Facts) -> list[str]:
    n = int(f.facts.get("n_fields", 0))
    colours = list(f.facts.get("crop_colours", []))
    out = ["many pieces of farmland are neatly arranged" if n > 3 else "a piece of farmland with crops",
           "the farmland is divided into rectangular fields", "some fields of crops in the farmland"]
    if n >= 2:
        out.append(f"the farmland is divided into {number_word(n)} fields")
    if len(colours) >= 2:
        out += [f"{colours[0]} and {colours[1]} fields in the farmland",
                f"farmland with fields of different colors such as {colours[0]} and {colours[1]}"]
    elif colours:
        out.append(f"a large {colours[0]} field in the farmland")
    if f.facts.get("stripes_visible"):
        out.append("the fields of the farmland have stripes of crop rows")
    return out


def _beach(f: _Facts) -> list[str]:
    sea = f.get("sea")
    land = {"meadow": "green land", "forest": "forest", "bare land": "bare land"}.get(
        str(f.facts.get("surroundings", "meadow")), "land")
    out = [f"a yellow beach lies between the blue sea and the {land}", "white waves wash onto the sandy beach",
           "a long sandy beach along the coast", "the beach is covered with yellow sand"]
    if sea and sea.where != "center":
        out += [f"the sea is {where_phrase(sea.where)} of the beach",
                f"a beach with the blue sea {where_phrase(sea.where)}"]
    return out


def _desert(f: _Facts) -> list[str]:
    out = ["a large piece of yellow desert", "the desert is vast and dry", "sand dunes stretch across the desert"]
    if float(f.facts.get("dune_px", 0.0)) >= 8:
        out += ["many ripple-like dunes are in the desert", "the desert is covered with rows of dunes"]
    else:
        out.append("the desert has a fine sandy texture")
    if not f.layout.features:
        out.append("there is nothing but sand in the desert")
    return out


def _meadow(f: _Facts) -> list[str]:
    out = [f"a large piece of {f.veg} meadow", f"the meadow is {f.veg} and flat", f"a vast {f.veg} grassland",
           f"it is a piece of {f.veg} meadow"]
    if not f.layout.features:
        out += ["nothing but grass in the meadow", "a meadow with nothing on it"]
    return out


def _bare_land(f: _Facts) -> list[str]:
    out = ["a piece of bare land", "there is a large area of bare land", "the bare land is brown and dry",
           "the bare soil looks rough and empty"]
    if not f.layout.features:
        out += ["a piece of empty bare land with nothing on it", "nothing is on the bare land"]
    return out


def _roofs(f: _Facts) -> str:
    colours = list(f.facts.get("roof_colours", []))
    if len(colours) >= 2:
        return f"{colours[0]} and {colours[1]} roofs"
    return f"{colours[0]} roofs" if colours else "roofs"


def _dense(f: _Facts) -> list[str]:
    n = f.count("buildings")
    many = "many buildings" if n > 10 or f.facts.get("buildings_drawn_as_texture") else count_np(n, "building")
    return [f"{many} are densely arranged in a dense residential area",
            f"a dense residential area with {many} along the streets",
            f"lots of houses with {_roofs(f)} in a dense residential area",
            "buildings are packed closely together in the dense residential area",
            "the dense residential area is divided into blocks by streets",
            f"{many} are densely distributed on both sides of the streets"]


def _sparse(f: _Facts) -> list[str]:
    n = f.count("houses")
    exact = not f.facts.get("buildings_drawn_as_texture")
    out = [f"a sparse residential area with {count_np(n, 'house') if exact else vague_np(n, 'house')}" if n else
           "a sparse residential area with lawns and streets",
           f"detached houses with {f.veg} lawns in a sparse residential area",
           f"houses with {_roofs(f)} are sparsely distributed",
           "a sparse residential area with houses along the streets",
           f"some houses are scattered among {f.veg} trees and lawns" if f.count("trees") else
           "some houses are scattered along the streets"]
    return out


def _industrial(f: _Facts) -> list[str]:
    n = f.count("factories")
    return [f"an industrial area with {count_np(n, 'large factory building')}" if n <= 10 else
            "an industrial area with many large factory buildings",
            "several large factories are in an industrial area" if n > 2 else
            f"{count_np(n, 'factory', 'factories')} in an industrial area",
            "the factories are surrounded by paved ground", "this is an industrial area",
            "large buildings with flat roofs in the industrial area"]


def _highway(f: _Facts) -> list[str]:
    hw = f.get("highway")
    out = [f"a highway passes through the {f.surroundings}", "a highway with several lanes"]
    if f.layout.gsd <= 4.0:
        out.append("a wide highway with a green belt in the middle")
    if hw:
        out.append(f"a highway runs {hw.direction}")
        if hw.where != "through":
            out.append(f"a freeway goes {hw.direction} {where_phrase(hw.where)}")
        else:
            out.append("a freeway goes through the middle of the image")
        cars = int(hw.extra.get("cars", 0))
        if f.layout.gsd <= 3.0:
            if cars == 0:
                out.append("there are no cars on the highway")
            elif cars <= 10:
                out.append(f"{count_np(cars, 'car')} {_be(cars)} running on the highway")
            else:
                out.append("many cars are running on the highway")
    return out


def _airport(f: _Facts) -> list[str]:
    n = f.count("airplanes")
    rw = f.get("runway")
    if rw:
        out = ["there is a long runway in the airport", "an airport with a long straight runway"]
        if f.facts.get("markings_visible"):
            out.append("a runway with white markings in an airport")
    else:
        out = ["part of an airport with paved concrete ground", "the apron of an airport"]
    if n:
        out.append(f"{count_np(n, 'white airplane')} {_be(n)} parked in the airport")
        if rw:
            out.append(f"an airport with {count_np(n, 'airplane')} next to the runway")
        if f.get("terminal"):
            out.append(f"{count_np(n, 'airplane')} {_be(n)} parked near the terminal of the airport")
    elif rw:
        out.append("an airport with a long runway and no airplanes")
    else:
        out.append("an empty apron of the airport without airplanes")
    if rw:
        out.append(f"the runway of the airport goes {rw.direction}")
    return out


def _parking(f: _Facts) -> list[str]:
    n = f.count("cars")
    occ = float(f.facts.get("occupancy", 0.5))
    if not f.facts.get("cars_visible", True):
        return ["a parking lot seen from high above", "a gray parking lot paved with asphalt",
                "a parking lot among the surrounding land", "there is a parking lot in the image",
                "a small parking lot is in the image"]
    if n == 0:
        return ["an empty parking lot", "there are no cars in the parking lot",
                "the parking lot is divided into rows of empty parking spaces", "a parking lot without cars",
                "nobody has parked in the parking lot"]
    out = ["many cars are parked in a parking lot" if n > 10 else
           f"{count_np(n, 'car')} {_be(n)} parked in the parking lot",
           "the parking lot is divided into rows of parking spaces",
           "a large parking lot with many cars" if n > 10 else "a parking lot with a few cars"]
    if n > 3:
        out.append("cars of different colors are parked neatly in the parking lot")
    if occ > 0.85 and n > 10:
        out.append("a parking lot full of cars")
    elif occ < 0.6:
        out.append("a parking lot with some empty parking spaces")
    return out


_PRIMARY: dict[str, Callable[[_Facts], list[str]]] = {
    "sea": _sea, "lake": _lake, "river": _river, "forest": _forest, "farmland": _farmland, "beach": _beach,
    "desert": _desert, "meadow": _meadow, "bare_land": _bare_land, "dense_residential": _dense,
    "sparse_residential": _sparse, "industrial": _industrial, "highway": _highway, "airport": _airport,
    "parking_lot": _parking,
}

_NOUN = {"sea": "sea", "lake": "lake", "river": "river", "forest": "forest", "farmland": "farmland",
         "beach": "beach", "desert": "desert", "meadow": "meadow", "bare_land": "bare land",
         "dense_residential": "dense residential area", "sparse_residential": "sparse residential area",
         "industrial": "industrial area", "highway": "highway", "airport": "airport", "parking_lot": "parking lot"}


# ---------------------------------------------------------------------------------------------- secondary


def _secondary(f: _Facts) -> list[str]:
    """One or two sentences per secondary feature, each naming the class noun."""
    noun = _NOUN[f.label]
    out: list[str] = []
    for feat in f.layout.features:
        template = _FEATURE_SENTENCES.get(feat.kind)
        if template is not None:
            out += template(f, feat, noun)
    return out


def _river_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    return [f"a river runs through the {noun} {feat.direction}"] if f.label != "river" else []


def _road_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    if f.label == "highway":
        return ["a road crosses the highway"] if feat.kind == "road" else []
    thing = "a dirt track" if feat.kind == "track" else "a road"
    if f.label in ("lake", "river", "beach", "sea"):
        loc = "" if feat.where == "through" else f" {where_phrase(feat.where)}"
        return [f"{thing} runs {feat.direction}{loc} near the {noun}"]
    if feat.where == "through":
        return [f"{thing} goes through the {noun} {feat.direction}"]
    return [f"{thing} runs {feat.direction} {where_phrase(feat.where)} of the {noun}"]


def _pond_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    if f.label == "lake":
        return []
    return [f"a small {feat.kind} is {_where(feat) or 'in the center'} of the {noun}"]


def _boat_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    n = feat.count
    place = {"sea": "sea", "lake": "lake", "beach": "sea near the beach"}.get(f.label, noun)
    return [f"{count_np(n, 'boat')} {_be(n)} on the {place}", f"{vague_np(n, 'white boat')} can be seen on the {place}"]


def _tree_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    if f.label == "forest":
        return []
    if feat.where == "around":
        return [f"many {f.veg} trees are around the {noun}"]
    if feat.where == "along":
        return [f"{f.veg} trees grow along the banks of the {noun}"]
    if f.label == "dense_residential":
        return [f"some {f.veg} trees among the buildings of the {noun}"]
    n = feat.count
    return [f"{vague_np(n, 'tree')} {_be(n)} scattered in the {noun}"]


def _coast_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    cover = {"rock": "a rocky coast", "grass": "green land", "forest": "a forest"}.get(
        str(feat.extra.get("cover")), "land")
    return [f"the {noun} meets {cover} {where_phrase(feat.where)}",
            f"there is {cover} next to the {noun} {where_phrase(feat.where)}"]


def _building_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    if f.label == "dense_residential":
        return []
    n, where = feat.count, _where(feat)
    if f.label == "bare_land":
        return [f"{count_np(n, 'small building')} {_be(n)} on the {noun}"]
    loc = f" {where}" if where else ""
    return [f"{count_np(n, 'building')} {_be(n)}{loc} near the {noun}"]


def _car_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    if f.label not in ("dense_residential", "sparse_residential"):
        return []
    return [f"{vague_np(feat.count, 'car')} {_be(feat.count)} parked along the streets of the {noun}"]


def _tank_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    n = feat.count
    return [f"{count_np(n, 'white storage tank')} {_be(n)} in the {noun}",
            f"the {noun} has {vague_np(n, 'round storage tank')}"]


def _terminal_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    where = _where(feat)
    return [f"the terminal building of the {noun} is {where}"] if where else []


def _airplane_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    n, where = feat.count, _where(feat)
    return [f"{count_np(n, 'airplane')} {_be(n)} {where} of the {noun}"] if where and n else []


def _runway_sentences(f: _Facts, feat: Feature, noun: str) -> list[str]:
    return [f"the runway of the {noun} is {where_phrase(feat.where)}"] if feat.where not in ("", "through") else []


def _one(template: Callable[[Feature, str], str]) -> Callable[[_Facts, Feature, str], list[str]]:
    """A feature template of one sentence from the feature and the class noun, whatever the class."""
    return lambda f, feat, noun: [template(feat, noun)]


#: Sentences for a secondary feature of each kind: ``(facts, feature, class noun) -> sentences``.
_FEATURE_SENTENCES: dict[str, Callable[[_Facts, Feature, str], list[str]]] = {
    "river": _river_sentences,
    "road": _road_sentences,
    "track": _road_sentences,
    "street": _road_sentences,
    "lake": _pond_sentences,
    "pond": _pond_sentences,
    "bridge": _one(lambda feat, noun: f"a bridge crosses the {noun}"),
    "boats": _boat_sentences,
    "trees": _tree_sentences,
    "coast": _coast_sentences,
    "clearing": _one(lambda feat, noun: f"there is a clearing {_where(feat)} of the {noun}"),
    "farmhouses": _one(lambda feat, noun: f"{count_np(feat.count, 'farm house')} {_be(feat.count)} "
                                          f"{_where(feat)} of the {noun}"),
    "umbrellas": _one(lambda feat, noun: f"{vague_np(feat.count, 'colorful umbrella')} {_be(feat.count)} "
                                         f"on the {noun}"),
    "shrubs": _one(lambda feat, noun: f"{vague_np(feat.count, 'shrub')} {_be(feat.count)} scattered in the {noun}"),
    "rocks": _one(lambda feat, noun: f"some rocks are {_where(feat)} of the {noun}"),
    "path": _one(lambda feat, noun: f"a narrow path goes through the {noun}"),
    "tracks": _one(lambda feat, noun: f"some vehicle tracks are on the {noun}"),
    "grass patches": _one(lambda feat, noun: f"a few patches of grass are on the {noun}"),
    "buildings": _building_sentences,
    "cars": _car_sentences,
    "pools": _one(lambda feat, noun: f"{count_np(feat.count, 'swimming pool')} {_be(feat.count)} "
                                     f"in the gardens of the {noun}"),
    "storage tanks": _tank_sentences,
    "trucks": _one(lambda feat, noun: f"{count_np(feat.count, 'truck')} {_be(feat.count)} parked in the {noun}"),
    "terminal": _terminal_sentences,
    "airplanes": _airplane_sentences,
    "runway": _runway_sentences,
}


def _mentions(sentence: str, label: str) -> bool:
    padded = f" {sentence} "
    return any(f" {k} " in padded or f" {k}." in padded for k in CLASS_KEYWORDS[label])


def scene_captions(layout: Layout, rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct captions for ``layout``; the first describes the primary class.

    Every caption names the class (one of :data:`~geovl.data.synthetic.classes.CLASS_KEYWORDS`). About half are
    about secondary features when the scene has any.
    """
    f = _Facts(layout)
    primary = [s for s in dict.fromkeys(_PRIMARY[layout.label](f)) if _mentions(s, layout.label)]
    secondary = [s for s in dict.fromkeys(_secondary(f)) if _mentions(s, layout.label) and s not in primary]
    order_p = [primary[i] for i in rng.permutation(len(primary))]
    order_s = [secondary[i] for i in rng.permutation(len(secondary))]
    k_sec = min(len(order_s), n // 2)
    chosen = order_p[: n - k_sec] + order_s[:k_sec]
    rest = order_p[n - k_sec:] + order_s[k_sec:]
    chosen += rest[: n - len(chosen)]
    noun = _NOUN[layout.label]
    a = article(noun)
    fillers = [f"this is an aerial image of {a} {noun}", f"an overhead view of {a} {noun}",
               f"a remote sensing image of {a} {noun}", f"{a} {noun} seen from above",
               f"a satellite image showing {a} {noun}", f"the image shows {a} {noun}"]
    for s in fillers:
        if len(chosen) >= n:
            break
        if s not in chosen:
            chosen.append(s)
    k = 2
    while len(chosen) < n:  # only reachable for very large n
        chosen.append(f"{fillers[0]} ({k})")
        k += 1
    return [_tidy(s) for s in chosen[:n]]


def _tidy(sentence: str) -> str:
    return re.sub(r"\s+", " ", sentence).strip() + "."


def tokenize(sentence: str) -> list[str]:
    """Karpathy-style tokens: lower-case words and numbers, punctuation dropped."""
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", sentence.lower())
