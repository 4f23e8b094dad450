"""Cut a scene into chip files plus a GeoJSON index of their footprints (``geovl chips``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from geovl.io.chips import Chip, ChipReader, write_chip_geotiff
from geovl.io.fs import atomic_path, atomic_write_text

ChipFormat = Literal["png", "jpg", "tif"]


@dataclass
class ChipExport:
    """Result of :func:`export_chips`: how many chips were written, kept from an earlier run, or skipped."""

    out_dir: Path
    written: int
    existing: int
    skipped: int
    index: Path


def chip_geometry(chip: Chip) -> dict[str, Any] | None:
    """The chip's lon/lat footprint as a GeoJSON Polygon, or None when the scene is not georeferenced."""
    return {"type": "Polygon", "coordinates": [[list(p) for p in chip.footprint]]} if chip.footprint else None


def write_feature_collection(path: str | os.PathLike[str], features: list[dict[str, Any]]) -> Path:
    """Write a GeoJSON FeatureCollection atomically (temporary file in the same folder, then renamed)."""
    return atomic_write_text(path, json.dumps({"type": "FeatureCollection", "features": features}))


def _feature(chip: Chip, filename: str) -> dict[str, Any]:
    props = {
        "chip_id": chip.chip_id,
        "file": filename,
        "scene": chip.scene,
        "window": list(chip.window),
        "bounds": list(chip.bounds),
        "crs": chip.crs,
        "gsd": chip.gsd,
        "acquired": chip.acquired.isoformat() if chip.acquired else None,
        "sensor": chip.sensor,
        "valid_fraction": round(chip.valid_fraction, 4),
    }
    return {"type": "Feature", "geometry": chip_geometry(chip), "properties": props}


def _save_image(chip: Chip, path: Path, fmt: ChipFormat) -> None:
    if fmt == "tif":
        write_chip_geotiff(chip, path)
        return
    with atomic_path(path, suffix=f".tmp.{fmt}") as tmp:
        Image.fromarray(chip.image[:, :, :3]).save(tmp, format="PNG" if fmt == "png" else "JPEG", quality=95)


def export_chips(reader: ChipReader, out_dir: str | os.PathLike[str], fmt: ChipFormat = "png",
                 progress: bool = True) -> ChipExport:
    """Write every chip of ``reader`` to ``out_dir/<chip_id>.<fmt>`` and ``out_dir/chips.geojson``.

    Chip files are written atomically; chips already present from an interrupted run are kept, not rewritten.
    The GeoJSON (lon/lat footprints, window, CRS bounds, acquisition time) is written last, so its presence
    means the export finished. ``fmt="tif"`` writes georeferenced GeoTIFF chips.
    """
    if fmt not in ("png", "jpg", "tif"):
        raise ValueError(f"chip format must be png, jpg or tif, got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    features = []
    written = existing = 0
    for chip in tqdm(reader, total=len(reader), unit="chip", disable=not progress, dynamic_ncols=True):
        name = f"{chip.chip_id}.{fmt}"
        target = out / name
        if target.exists():
            existing += 1
        else:
            _save_image(chip, target, fmt)
            written += 1
        features.append(_feature(chip, name))
    index = write_feature_collection(out / "chips.geojson", features)
    return ChipExport(out_dir=out, written=written, existing=existing, skipped=reader.skipped, index=index)
