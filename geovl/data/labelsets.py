"""Class names for prompts, per benchmark dataset: folder / file label -> the words put into the templates.

Folder names such as ``AnnualCrop`` or ``denseresidential`` make poor prompts; these tables give the phrases to
use instead. A dataset whose label set is not listed falls back to
:func:`geovl.data.prettify_class_name` (``AnnualCrop`` -> ``annual crop``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: EuroSAT-RGB, with the class phrases OpenAI's CLIP evaluation used.
EUROSAT: dict[str, str] = {
    "AnnualCrop": "annual crop land",
    "Forest": "forest",
    "HerbaceousVegetation": "brushland or shrubland",
    "Highway": "highway or road",
    "Industrial": "industrial buildings or commercial buildings",
    "Pasture": "pasture land",
    "PermanentCrop": "permanent crop land",
    "Residential": "residential buildings or homes or apartments",
    "River": "river",
    "SeaLake": "lake or sea",
}

#: UC Merced Land Use (21 classes, as in UCM-Captions' classes.csv).
UC_MERCED: dict[str, str] = {
    "agricultural": "agricultural land",
    "airplane": "airplanes",
    "baseballdiamond": "a baseball diamond",
    "beach": "a beach",
    "buildings": "buildings",
    "chaparral": "chaparral",
    "denseresidential": "a dense residential area",
    "forest": "a forest",
    "freeway": "a freeway",
    "golfcourse": "a golf course",
    "harbor": "a harbor",
    "intersection": "an intersection",
    "mediumresidential": "a medium residential area",
    "mobilehomepark": "a mobile home park",
    "overpass": "an overpass",
    "parkinglot": "a parking lot",
    "river": "a river",
    "runway": "a runway",
    "sparseresidential": "a sparse residential area",
    "storagetanks": "storage tanks",
    "tenniscourt": "a tennis court",
}

#: AID (Xia et al. 2017), 30 classes, folder names as distributed.
AID: dict[str, str] = {
    "Airport": "an airport",
    "BareLand": "bare land",
    "BaseballField": "a baseball field",
    "Beach": "a beach",
    "Bridge": "a bridge",
    "Center": "a city center",
    "Church": "a church",
    "Commercial": "a commercial area",
    "DenseResidential": "a dense residential area",
    "Desert": "a desert",
    "Farmland": "farmland",
    "Forest": "a forest",
    "Industrial": "an industrial area",
    "Meadow": "a meadow",
    "MediumResidential": "a medium residential area",
    "Mountain": "a mountain",
    "Park": "a park",
    "Parking": "a parking lot",
    "Playground": "a playground",
    "Pond": "a pond",
    "Port": "a port",
    "RailwayStation": "a railway station",
    "Resort": "a resort",
    "River": "a river",
    "School": "a school",
    "SparseResidential": "a sparse residential area",
    "Square": "a square",
    "Stadium": "a stadium",
    "StorageTanks": "storage tanks",
    "Viaduct": "a viaduct",
}

#: NWPU-RESISC45 (Cheng et al. 2017), 45 classes.
NWPU_RESISC45: dict[str, str] = {
    "airplane": "airplanes",
    "airport": "an airport",
    "baseball_diamond": "a baseball diamond",
    "basketball_court": "a basketball court",
    "beach": "a beach",
    "bridge": "a bridge",
    "chaparral": "chaparral",
    "church": "a church",
    "circular_farmland": "circular farmland",
    "cloud": "clouds",
    "commercial_area": "a commercial area",
    "dense_residential": "a dense residential area",
    "desert": "a desert",
    "forest": "a forest",
    "freeway": "a freeway",
    "golf_course": "a golf course",
    "ground_track_field": "a ground track field",
    "harbor": "a harbor",
    "industrial_area": "an industrial area",
    "intersection": "an intersection",
    "island": "an island",
    "lake": "a lake",
    "meadow": "a meadow",
    "medium_residential": "a medium residential area",
    "mobile_home_park": "a mobile home park",
    "mountain": "a mountain",
    "overpass": "an overpass",
    "palace": "a palace",
    "parking_lot": "a parking lot",
    "railway": "a railway",
    "railway_station": "a railway station",
    "rectangular_farmland": "rectangular farmland",
    "river": "a river",
    "roundabout": "a roundabout",
    "runway": "a runway",
    "sea_ice": "sea ice",
    "ship": "a ship",
    "snowberg": "a snowberg",
    "sparse_residential": "a sparse residential area",
    "stadium": "a stadium",
    "storage_tank": "storage tanks",
    "tennis_court": "a tennis court",
    "terrace": "terraced fields",
    "thermal_power_station": "a thermal power station",
    "wetland": "a wetland",
}

#: PatternNet (Zhou et al. 2018), 38 classes.
PATTERNNET: dict[str, str] = {
    "airplane": "airplanes",
    "baseball_field": "a baseball field",
    "basketball_court": "a basketball court",
    "beach": "a beach",
    "bridge": "a bridge",
    "cemetery": "a cemetery",
    "chaparral": "chaparral",
    "christmas_tree_farm": "a christmas tree farm",
    "closed_road": "a closed road",
    "coastal_mansion": "a coastal mansion",
    "crosswalk": "a crosswalk",
    "dense_residential": "a dense residential area",
    "ferry_terminal": "a ferry terminal",
    "football_field": "a football field",
    "forest": "a forest",
    "freeway": "a freeway",
    "golf_course": "a golf course",
    "harbor": "a harbor",
    "intersection": "an intersection",
    "mobile_home_park": "a mobile home park",
    "nursing_home": "a nursing home",
    "oil_gas_field": "an oil and gas field",
    "oil_well": "an oil well",
    "overpass": "an overpass",
    "parking_lot": "a parking lot",
    "parking_space": "parking spaces",
    "railway": "a railway",
    "river": "a river",
    "runway": "a runway",
    "runway_marking": "runway markings",
    "shipping_yard": "a shipping yard",
    "solar_panel": "solar panels",
    "sparse_residential": "a sparse residential area",
    "storage_tank": "storage tanks",
    "swimming_pool": "a swimming pool",
    "tennis_court": "a tennis court",
    "transformer_station": "a transformer station",
    "wastewater_treatment_plant": "a wastewater treatment plant",
}

#: MLRSNet (Qi et al. 2020), the 46 scene categories of its image folders. ``swimmimg_pool`` is spelled as in
#: the distributed dataset.
MLRSNET: dict[str, str] = {
    "airplane": "airplanes",
    "airport": "an airport",
    "bareland": "bare land",
    "baseball_diamond": "a baseball diamond",
    "basketball_court": "a basketball court",
    "beach": "a beach",
    "bridge": "a bridge",
    "chaparral": "chaparral",
    "cloud": "clouds",
    "commercial_area": "a commercial area",
    "dense_residential_area": "a dense residential area",
    "desert": "a desert",
    "eroded_farmland": "eroded farmland",
    "farmland": "farmland",
    "forest": "a forest",
    "freeway": "a freeway",
    "golf_course": "a golf course",
    "ground_track_field": "a ground track field",
    "harbor&port": "a harbor or port",
    "industrial_area": "an industrial area",
    "intersection": "an intersection",
    "island": "an island",
    "lake": "a lake",
    "meadow": "a meadow",
    "mobile_home_park": "a mobile home park",
    "mountain": "a mountain",
    "overpass": "an overpass",
    "park": "a park",
    "parking_lot": "a parking lot",
    "parkway": "a parkway",
    "railway": "a railway",
    "railway_station": "a railway station",
    "river": "a river",
    "roundabout": "a roundabout",
    "shipping_yard": "a shipping yard",
    "snowberg": "a snowberg",
    "sparse_residential_area": "a sparse residential area",
    "stadium": "a stadium",
    "storage_tank": "storage tanks",
    "swimmimg_pool": "a swimming pool",
    "tennis_court": "a tennis court",
    "terrace": "terraced fields",
    "transmission_tower": "a transmission tower",
    "vegetable_greenhouse": "vegetable greenhouses",
    "wetland": "a wetland",
    "wind_turbine": "wind turbines",
}

#: OPTIMAL-31 (Wang et al. 2019), 31 classes, folder names of ``OPTIMAL-31/Images`` (as in aitlas
#: ``aitlas/datasets/optimal_31.py`` and a public OPTIMAL-31 folder loader).
OPTIMAL_31: dict[str, str] = {
    "airplane": "airplanes",
    "airport": "an airport",
    "baseball_diamond": "a baseball diamond",
    "basketball_court": "a basketball court",
    "beach": "a beach",
    "bridge": "a bridge",
    "chaparral": "chaparral",
    "church": "a church",
    "circular_farmland": "circular farmland",
    "commercial_area": "a commercial area",
    "dense_residential": "a dense residential area",
    "desert": "a desert",
    "forest": "a forest",
    "freeway": "a freeway",
    "golf_course": "a golf course",
    "ground_track_field": "a ground track field",
    "harbor": "a harbor",
    "industrial_area": "an industrial area",
    "intersection": "an intersection",
    "island": "an island",
    "lake": "a lake",
    "meadow": "a meadow",
    "medium_residential": "a medium residential area",
    "mobile_home_park": "a mobile home park",
    "mountain": "a mountain",
    "overpass": "an overpass",
    "parking_lot": "a parking lot",
    "railway": "a railway",
    "rectangular_farmland": "rectangular farmland",
    "roundabout": "a roundabout",
    "runway": "a runway",
}

#: RSC11 (Zhao et al. 2016), 11 classes, folder names of ``RS_C11_Database`` as distributed, ``stroagetanks``
#: misspelled as in the data (folder names as read by public loaders: the RSC11 class file beside an
#: ``RS_C11_Database`` loader, and an RSC11 ResNet-50 class index; aitlas ``aitlas/datasets/rsc11.py`` has the same
#: 11 classes under its own names).
RSC11: dict[str, str] = {
    "denseforest": "a dense forest",
    "grassland": "grassland",
    "harbor": "a harbor",
    "highbuildings": "high buildings",
    "lowbuildings": "low buildings",
    "overpass": "an overpass",
    "railway": "a railway",
    "residentialarea": "a residential area",
    "roads": "roads",
    "sparseforest": "a sparse forest",
    "stroagetanks": "storage tanks",
}

#: RSI-CB128 (Li et al. 2017), the 45 leaf classes (the dataset nests them under 6 parent folders).
RSI_CB128: dict[str, str] = {
    "airport_runway": "an airport runway",
    "artificial_grassland": "artificial grassland",
    "avenue": "an avenue",
    "bare_land": "bare land",
    "bridge": "a bridge",
    "city_avenue": "a tree-lined city avenue",
    "city_building": "city buildings",
    "city_green_tree": "green trees in a city",
    "city_road": "a city road",
    "coastline": "a coastline",
    "container": "shipping containers",
    "crossroads": "crossroads",
    "dam": "a dam",
    "desert": "a desert",
    "dry_farm": "dry farmland",
    "forest": "a forest",
    "fork_road": "a fork in a road",
    "grave": "graves",
    "green_farmland": "green farmland",
    "highway": "a highway",
    "hirst": "a sandbank",
    "lakeshore": "a lakeshore",
    "mangrove": "mangroves",
    "marina": "a marina",
    "mountain": "a mountain",
    "mountain_road": "a mountain road",
    "natural_grassland": "natural grassland",
    "overpass": "an overpass",
    "parkinglot": "a parking lot",
    "pipeline": "a pipeline",
    "rail": "a railway",
    "residents": "residential buildings",
    "river": "a river",
    "river_protection_forest": "a river protection forest",
    "sandbeach": "a sand beach",
    "sapling": "saplings",
    "sea": "the sea",
    "shrubwood": "shrubland",
    "snow_mountain": "a snowy mountain",
    "sparse_forest": "a sparse forest",
    "storage_room": "storage buildings",
    "stream": "a stream",
    "tower": "a tower",
    "town": "a town",
    "turning_circle": "a turning circle",
}

#: RSI-CB256 (Li et al. 2017), the 35 leaf classes (the dataset nests them under 6 parent folders); as in aitlas
#: ``aitlas/datasets/rsi_cb256.py`` and the folder tree in hpc-unex/FLmeetsRS ``README.md``.
RSI_CB256: dict[str, str] = {
    "airplane": "airplanes",
    "airport_runway": "an airport runway",
    "artificial_grassland": "artificial grassland",
    "avenue": "an avenue",
    "bare_land": "bare land",
    "bridge": "a bridge",
    "city_building": "city buildings",
    "coastline": "a coastline",
    "container": "shipping containers",
    "crossroads": "crossroads",
    "dam": "a dam",
    "desert": "a desert",
    "dry_farm": "dry farmland",
    "forest": "a forest",
    "green_farmland": "green farmland",
    "highway": "a highway",
    "hirst": "a sandbank",
    "lakeshore": "a lakeshore",
    "mangrove": "mangroves",
    "marina": "a marina",
    "mountain": "a mountain",
    "parkinglot": "a parking lot",
    "pipeline": "a pipeline",
    "residents": "residential buildings",
    "river": "a river",
    "river_protection_forest": "a river protection forest",
    "sandbeach": "a sand beach",
    "sapling": "saplings",
    "sea": "the sea",
    "shrubwood": "shrubland",
    "snow_mountain": "a snowy mountain",
    "sparse_forest": "a sparse forest",
    "storage_room": "storage buildings",
    "stream": "a stream",
    "town": "a town",
}

#: WHU-RS19 (Dai and Yang 2010; Xia et al.), 19 classes, folder names as distributed.
WHU_RS19: dict[str, str] = {
    "Airport": "an airport",
    "Beach": "a beach",
    "Bridge": "a bridge",
    "Commercial": "a commercial area",
    "Desert": "a desert",
    "Farmland": "farmland",
    "footballField": "a football field",
    "Forest": "a forest",
    "Industrial": "an industrial area",
    "Meadow": "a meadow",
    "Mountain": "a mountain",
    "Park": "a park",
    "Parking": "a parking lot",
    "Pond": "a pond",
    "Port": "a port",
    "railwayStation": "a railway station",
    "Residential": "a residential area",
    "River": "a river",
    "Viaduct": "a viaduct",
}

#: SIRI-WHU (Zhao et al. 2016), 12 classes, folder names of ``12class_tif`` (checked against a copy of the data in
#: psiang/TensorFlow-Deep_Learning_and_Transfer_Learning ``data/Google dataset of SIRI-WHU_earth_im_tiff/``).
SIRI_WHU: dict[str, str] = {
    "agriculture": "agricultural land",
    "commercial": "a commercial area",
    "harbor": "a harbor",
    "idle_land": "idle land",
    "industrial": "an industrial area",
    "meadow": "a meadow",
    "overpass": "an overpass",
    "park": "a park",
    "pond": "a pond",
    "residential": "a residential area",
    "river": "a river",
    "water": "water",
}

#: RSSCN7 (Zou et al. 2015), 7 classes, 400 images each. The distributed folders carry a letter prefix
#: (``aGrass`` ... ``gParking``), checked against the dataset's own repository palewithout/RSSCN7.
RSSCN7: dict[str, str] = {
    "aGrass": "grassland",
    "bField": "farmland",
    "cIndustry": "an industrial or commercial area",
    "dRiverLake": "a river or lake",
    "eForest": "a forest",
    "fResident": "a residential area",
    "gParking": "a parking lot",
}

#: Every label set by name. Order matters for :func:`prompt_names` without a set: the first set covering all
#: labels wins, so the original two sets stay first.
LABEL_SETS: dict[str, dict[str, str]] = {
    "eurosat": EUROSAT,
    "ucmerced": UC_MERCED,
    "aid": AID,
    "nwpu-resisc45": NWPU_RESISC45,
    "patternnet": PATTERNNET,
    "mlrsnet": MLRSNET,
    "optimal-31": OPTIMAL_31,
    "rsc11": RSC11,
    "rsi-cb128": RSI_CB128,
    "rsi-cb256": RSI_CB256,
    "whu-rs19": WHU_RS19,
    "siri-whu": SIRI_WHU,
    "rsscn7": RSSCN7,
}

#: Other common spellings of label set names (keys as :func:`label_key` normalises them).
_LABEL_SET_ALIASES = {"resisc45": "nwpuresisc45", "nwpu": "nwpuresisc45", "ucm": "ucmerced", "rs19": "whurs19",
                      "siri": "siriwhu", "optimal": "optimal31"}


#: Misspelt folder names of distributed datasets and their correct spelling (both normalised by label_key), so that
#: a copy with either spelling (e.g. RSC11 as distributed vs a re-packaged copy) matches the same class.
_SPELLING_ALIASES: dict[str, str] = {"stroagetanks": "storagetanks", "swimmimgpool": "swimmingpool"}


def label_key(label: str) -> str:
    key = label.lower().replace(" ", "").replace("_", "").replace("-", "")
    return _SPELLING_ALIASES.get(key, key)


def resolve_label_set(name: str) -> dict[str, str]:
    """The ``class name -> prompt phrase`` table of a label set (name matching ignores case, ``-`` and ``_``).

    Raises:
        ValueError: unknown name; the message lists the known sets.
    """
    key = _LABEL_SET_ALIASES.get(label_key(name), label_key(name))
    for known, table in LABEL_SETS.items():
        if label_key(known) == key:
            return table
    raise ValueError(f"unknown label set '{name}'; known: {', '.join(LABEL_SETS)}")


def missing_labels(labels: Iterable[str], table: Mapping[str, str]) -> list[str]:
    """The labels that ``table`` has no entry for (matching as :func:`prompt_names` does)."""
    known = {label_key(k) for k in table}
    return [lab for lab in labels if label_key(lab) not in known]


def prompt_names(labels: Iterable[str], label_set: str | Mapping[str, str] | None = None) -> list[str]:
    """The prompt phrase for each label.

    Args:
        labels: class labels as the dataset names them.
        label_set: a name from :data:`LABEL_SETS`, an explicit mapping, or ``None`` to use the first known set
            that covers every label (matching ignores case, spaces, ``_`` and ``-``), else prettified labels.
    """
    from geovl.data import prettify_class_name

    labels = list(labels)
    if isinstance(label_set, str):
        table: Mapping[str, str] | None = resolve_label_set(label_set)
    elif label_set is None:
        wanted = {label_key(lab) for lab in labels}
        table = next((t for t in LABEL_SETS.values() if {label_key(k) for k in t} >= wanted), None)
    else:
        table = label_set
    if table is None:
        return [prettify_class_name(lab) for lab in labels]
    lookup = {label_key(k): v for k, v in table.items()}
    missing = [lab for lab in labels if label_key(lab) not in lookup]
    if missing:
        raise ValueError(f"label set has no entry for {missing[:5]}")
    return [lookup[label_key(lab)] for lab in labels]
