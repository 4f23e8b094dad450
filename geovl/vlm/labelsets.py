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

LABEL_SETS: dict[str, dict[str, str]] = {"eurosat": EUROSAT, "ucmerced": UC_MERCED}


def _key(label: str) -> str:
    return label.lower().replace(" ", "").replace("_", "").replace("-", "")


def resolve_label_set(name: str) -> dict[str, str]:
    """The ``class name -> prompt phrase`` table of a label set (name matching ignores case, ``-`` and ``_``).

    Raises:
        ValueError: unknown name; the message lists the known sets.
    """
    key = _key(name)
    for known, table in LABEL_SETS.items():
        if _key(known) == key:
            return table
    raise ValueError(f"unknown label set '{name}'; known: {', '.join(LABEL_SETS)}")


def missing_labels(labels: Iterable[str], table: Mapping[str, str]) -> list[str]:
    """The labels that ``table`` has no entry for (matching as :func:`prompt_names` does)."""
    known = {_key(k) for k in table}
    return [lab for lab in labels if _key(lab) not in known]


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
        table = next((t for t in LABEL_SETS.values() if {_key(k) for k in t} >= {_key(lab) for lab in labels}), None)
    else:
        table = label_set
    if table is None:
        return [prettify_class_name(lab) for lab in labels]
    lookup = {_key(k): v for k, v in table.items()}
    missing = [lab for lab in labels if _key(lab) not in lookup]
    if missing:
        raise ValueError(f"label set has no entry for {missing[:5]}")
    return [lookup[_key(lab)] for lab in labels]
