"""Sensor band presets: which bands of a multispectral stack make an RGB or false-colour image.

A preset names the bands it wants (``("B4", "B3", "B2")``) and the band orders ("layouts") it assumes for
stacks whose bands carry no names. :func:`resolve_bands` turns a preset or an explicit selection into 1-based
band indexes (the rasterio / GDAL convention: band 1 is the first band):

1. When the file's band descriptions name every wanted band (``"B4"``, ``"B04"``, ``"SR_B4"`` and
   ``"band_4"`` all normalise to ``"B4"``, ``"Red"`` to ``"RED"``), bands are picked by name, in any order.
2. Otherwise the first layout that fits the file's band count gives the positions.
3. Otherwise :class:`~geovl.io.images.BandCountError` (too few bands) or ``ValueError`` (a band count whose
   order the preset does not know) says to pass explicit indexes.

The presets are plain data in :data:`SENSOR_PRESETS`; add a row to support another sensor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from geovl.io.images import BandCountError

# Sentinel-2 band orders of the common stacked products (ESA SAFE band numbering, B8A after B8).
S2_L1C_13 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S2_L2A_12 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
S2_10M_4 = ("B2", "B3", "B4", "B8")
# Landsat 8/9 stacks in band-number order from B1 (7-band surface reflectance, 9-band OLI, 11-band OLI+TIRS).
LANDSAT8_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11")
RGBN = ("RED", "GREEN", "BLUE", "NIR")
PLANET_4 = ("BLUE", "GREEN", "RED", "NIR")
PLANET_8 = ("COASTALBLUE", "BLUE", "GREENI", "GREEN", "YELLOW", "RED", "REDEDGE", "NIR")


@dataclass(frozen=True)
class BandLayout:
    """The band order of a stack whose bands carry no names.

    Attributes:
        names: band names in file order (normalised, see :func:`normalise_band_name`).
        exact: the layout applies only to files with exactly ``len(names)`` bands. When False it applies to
            any file with at least as many bands as the highest position a preset needs (extras are ignored).
    """

    names: tuple[str, ...]
    exact: bool = True

    def fits(self, count: int, wanted: Sequence[str]) -> bool:
        if self.exact:
            return count == len(self.names)
        return count >= max(self.names.index(w) + 1 for w in wanted)

    def describe(self) -> str:
        kind = "" if self.exact else " (or more bands)"
        return f"{len(self.names)} bands {','.join(self.names)}{kind}"


@dataclass(frozen=True)
class SensorPreset:
    """A named band combination. ``sensor`` is reported as the scene's sensor when its tags name none."""

    name: str
    sensor: str | None
    bands: tuple[str, ...]
    layouts: tuple[BandLayout, ...]
    description: str

    def __post_init__(self) -> None:
        for layout in self.layouts:
            missing = [b for b in self.bands if b not in layout.names]
            if missing:
                raise ValueError(f"preset {self.name!r}: layout {layout.names} lacks bands {missing}")

    def min_bands(self) -> int:
        """The fewest bands a file may have for some layout of this preset to fit."""
        needed = [
            len(lay.names) if lay.exact else max(lay.names.index(b) + 1 for b in self.bands) for lay in self.layouts
        ]
        return min(needed)


_S2_LAYOUTS = (BandLayout(S2_L2A_12), BandLayout(S2_L1C_13), BandLayout(S2_10M_4))
_L8_LAYOUTS = (BandLayout(LANDSAT8_BANDS[:7], exact=False),)
_NAIP_LAYOUTS = (BandLayout(RGBN, exact=False),)
_PLANET_LAYOUTS = (BandLayout(PLANET_4), BandLayout(PLANET_8))

SENSOR_PRESETS: dict[str, SensorPreset] = {
    p.name: p
    for p in (
        SensorPreset(
            name="sentinel2-rgb",
            sensor="Sentinel-2",
            bands=("B4", "B3", "B2"),
            layouts=_S2_LAYOUTS,
            description=(
                "Sentinel-2 true colour B4,B3,B2. Unnamed stacks: "
                "12-band L2A (B1-B8,B8A,B9,B11,B12) -> 4,3,2; "
                "13-band L1C (B1-B8,B8A,B9,B10,B11,B12) -> 4,3,2; "
                "4-band 10 m (B2,B3,B4,B8) -> 3,2,1."
            ),
        ),
        SensorPreset(
            name="sentinel2-false-color",
            sensor="Sentinel-2",
            bands=("B8", "B4", "B3"),
            layouts=_S2_LAYOUTS,
            description=(
                "Sentinel-2 colour infrared B8,B4,B3. Unnamed stacks: 12- or 13-band -> 8,4,3; "
                "4-band 10 m (B2,B3,B4,B8) -> 4,3,2."
            ),
        ),
        SensorPreset(
            name="landsat8-rgb",
            sensor="Landsat 8",
            bands=("B4", "B3", "B2"),
            layouts=_L8_LAYOUTS,
            description="Landsat 8/9 true colour B4,B3,B2 -> 4,3,2 in band-number-ordered stacks.",
        ),
        SensorPreset(
            name="landsat8-false-color",
            sensor="Landsat 8",
            bands=("B5", "B4", "B3"),
            layouts=_L8_LAYOUTS,
            description="Landsat 8/9 colour infrared B5,B4,B3 -> 5,4,3 in band-number-ordered stacks.",
        ),
        SensorPreset(
            name="naip-rgb",
            sensor="NAIP",
            bands=("RED", "GREEN", "BLUE"),
            layouts=_NAIP_LAYOUTS,
            description="NAIP true colour from RGB or RGBN files -> 1,2,3.",
        ),
        SensorPreset(
            name="naip-false-color",
            sensor="NAIP",
            bands=("NIR", "RED", "GREEN"),
            layouts=_NAIP_LAYOUTS,
            description="NAIP colour infrared from 4-band RGBN files -> 4,1,2.",
        ),
        SensorPreset(
            name="planetscope-rgb",
            sensor="PlanetScope",
            bands=("RED", "GREEN", "BLUE"),
            layouts=_PLANET_LAYOUTS,
            description="PlanetScope analytic true colour: 4-band BGRN -> 3,2,1; 8-band SuperDove -> 6,4,2.",
        ),
        SensorPreset(
            name="planetscope-false-color",
            sensor="PlanetScope",
            bands=("NIR", "RED", "GREEN"),
            layouts=_PLANET_LAYOUTS,
            description="PlanetScope colour infrared: 4-band BGRN -> 4,3,2; 8-band SuperDove -> 8,6,4.",
        ),
        SensorPreset(
            name="rgb",
            sensor=None,
            bands=("RED", "GREEN", "BLUE"),
            layouts=(BandLayout(("RED", "GREEN", "BLUE"), exact=False),),
            description="The first three bands as red, green, blue -> 1,2,3.",
        ),
    )
}

_NUMBERED = re.compile(r"^(?:SR_?|BAND_?|B)0*(\d+A?)$")
_COLOUR_ALIASES = {"R": "RED", "G": "GREEN", "B": "BLUE", "N": "NIR", "NEARINFRARED": "NIR", "NIR1": "NIR"}


def normalise_band_name(name: str) -> str:
    """Canonical band name: ``"B04"``, ``"SR_B4"``, ``"band_4"`` -> ``"B4"``; ``"Red"`` -> ``"RED"``."""
    upper = name.strip().upper().replace(" ", "_").replace("-", "_")
    if upper.startswith("SR_B"):
        upper = upper[3:]
    match = _NUMBERED.match(upper)
    if match:
        return "B" + match.group(1)
    compact = re.sub(r"[^A-Z0-9]", "", upper)
    return _COLOUR_ALIASES.get(compact, compact)


def _by_name(wanted: Sequence[str], descriptions: Sequence[str | None]) -> tuple[int, ...] | None:
    """1-based indexes of ``wanted`` among the band descriptions; None unless each is named exactly once."""
    names = [normalise_band_name(d) if d else None for d in descriptions]
    picked = []
    for w in wanted:
        hits = [i + 1 for i, n in enumerate(names) if n == normalise_band_name(w)]
        if len(hits) != 1:
            return None
        picked.append(hits[0])
    return tuple(picked)


def resolve_bands(
    bands: str | Sequence[int | str],
    count: int,
    descriptions: Sequence[str | None] = (),
    source: str = "<raster>",
) -> tuple[int, ...]:
    """Turn a preset name or an explicit band selection into 1-based band indexes.

    Args:
        bands: a preset name from :data:`SENSOR_PRESETS`, or a sequence of 1-based indexes and/or band names
            (names are matched against ``descriptions`` only).
        count: number of bands in the file.
        descriptions: the file's band descriptions (rasterio ``dataset.descriptions``), ``None`` where unset.
        source: file name for error messages.

    Raises:
        BandCountError: the file has too few bands for the preset or an index exceeds ``count``.
        ValueError: unknown preset, an index below 1, a name that no description matches, or a band count for
            which the preset knows no order.
    """
    if isinstance(bands, str):
        preset = SENSOR_PRESETS.get(bands)
        if preset is None:
            raise ValueError(f"unknown band preset {bands!r}; choose one of {sorted(SENSOR_PRESETS)}")
        return _resolve_preset(preset, count, descriptions, source)
    selection = tuple(bands)
    if not selection:
        raise ValueError("bands must name at least one band")
    out = []
    for b in selection:
        if isinstance(b, str):
            found = _by_name([b], descriptions)
            if found is None:
                raise ValueError(
                    f"{source}: no band description matches {b!r} exactly once (descriptions: {list(descriptions)})"
                )
            out.append(found[0])
        elif isinstance(b, int) and not isinstance(b, bool):
            if b < 1:
                raise ValueError(f"band indexes are 1-based (rasterio convention); got {b}")
            if b > count:
                raise BandCountError(source, f"band {b} requested but the file has {count} band(s)")
            out.append(b)
        else:
            raise TypeError(f"band selections are 1-based ints or band names, got {b!r}")
    return tuple(out)


def _resolve_preset(
    preset: SensorPreset, count: int, descriptions: Sequence[str | None], source: str
) -> tuple[int, ...]:
    named = _by_name(preset.bands, descriptions)
    if named is not None:
        return named
    for layout in preset.layouts:
        if layout.fits(count, preset.bands):
            return tuple(layout.names.index(b) + 1 for b in preset.bands)
    known = "; ".join(lay.describe() for lay in preset.layouts)
    if count < preset.min_bands():
        raise BandCountError(
            source,
            f"preset {preset.name!r} needs at least {preset.min_bands()} bands ({known}) but the file has {count}",
        )
    raise ValueError(
        f"{source}: preset {preset.name!r} knows band orders for {known}, but the file has {count} "
        "unnamed bands; pass bands as 1-based indexes, e.g. bands=(4, 3, 2)"
    )
