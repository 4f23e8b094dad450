"""The land-cover classes the generator draws, their recipes, display names and caption keywords."""

from __future__ import annotations

from collections.abc import Callable

from geovl.data.synthetic import landscapes, settlements
from geovl.data.synthetic.builder import SceneBuilder

Recipe = Callable[[SceneBuilder], None]

RECIPES: dict[str, Recipe] = {
    "sea": landscapes.build_sea,
    "lake": landscapes.build_lake,
    "river": landscapes.build_river,
    "forest": landscapes.build_forest,
    "farmland": landscapes.build_farmland,
    "beach": landscapes.build_beach,
    "desert": landscapes.build_desert,
    "meadow": landscapes.build_meadow,
    "bare_land": landscapes.build_bare_land,
    "dense_residential": settlements.build_dense_residential,
    "sparse_residential": settlements.build_sparse_residential,
    "industrial": settlements.build_industrial,
    "highway": settlements.build_highway,
    "airport": settlements.build_airport,
    "parking_lot": settlements.build_parking_lot,
}

#: Class names, in a fixed order (labels of :func:`~geovl.data.synthetic.generate_scene`).
CLASSES: list[str] = list(RECIPES)

#: Human-readable class names, as used in captions and prompts ("a satellite image of {display}").
DISPLAY_NAMES: dict[str, str] = {name: name.replace("_", " ") for name in CLASSES}

#: Words of which every caption of a class contains at least one.
CLASS_KEYWORDS: dict[str, tuple[str, ...]] = {
    "sea": ("sea", "ocean"),
    "lake": ("lake",),
    "river": ("river",),
    "forest": ("forest", "woods"),
    "farmland": ("farmland", "fields", "field", "crops"),
    "beach": ("beach",),
    "desert": ("desert", "dunes", "dune"),
    "meadow": ("meadow", "grassland"),
    "bare_land": ("bare land", "bare soil", "bare"),
    "dense_residential": ("dense residential", "densely", "dense"),
    "sparse_residential": ("sparse residential", "sparse", "sparsely", "scattered", "detached"),
    "industrial": ("industrial", "factory", "factories"),
    "highway": ("highway", "freeway", "motorway"),
    "airport": ("airport", "runway", "airplane", "airplanes", "planes"),
    "parking_lot": ("parking lot", "parking", "parked"),
}
