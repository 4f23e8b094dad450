"""Zero-shot label maps of GeoTIFF scenes: one class per chip, written back as a georeferenced raster.

:func:`classify_scene` cuts a scene into ``chip_size`` x ``chip_size`` chips (:class:`geovl.io.chips.ChipReader`,
padded at the right and bottom edges), classifies every chip with a
:class:`~geovl.tasks.zeroshot.classifier.ZeroShotClassifier` and writes:

* ``out``: a single-band uint8 GeoTIFF with one pixel per chip holding the class index (:data:`NODATA` = 255 for
  chips skipped as mostly nodata), in the scene CRS, with the scene transform scaled by the chip size;
* ``<out stem>.classes.json`` and ``<out stem>.classes.csv``: the class table (index, name, prompt, chip count);
* ``<out stem>.chips.geojson``: a FeatureCollection with one lon/lat Polygon per classified chip (properties
  ``row``, ``col``, ``class_index``, ``class_name``, ``probability``; null geometry when the scene has no CRS);
* optionally a float32 GeoTIFF on the same grid with one band of probabilities per class (NaN where skipped).

Every file is written under a temporary name and renamed into place, so readers never see a partial map.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geovl.io.chip_export import chip_geometry, write_feature_collection
from geovl.io.chips import Chip, ChipReader
from geovl.io.fs import atomic_write_text
from geovl.io.geotiff import Bands, affine_tuple
from geovl.io.geotiff_writer import write_geotiff
from geovl.tasks.embedding import EmbeddingPipeline
from geovl.tasks.zeroshot.classifier import ZeroShotClassifier

__all__ = ["NODATA", "LabelMap", "classify_scene", "footprints_path", "sidecar_paths"]

logger = logging.getLogger(__name__)

#: Pixel value of chips that were not classified (too little valid data).
NODATA = 255


@dataclass
class LabelMap:
    """What :func:`classify_scene` wrote.

    Attributes:
        path: the class-index GeoTIFF.
        table_json, table_csv: the class table sidecars.
        footprints: the ``<stem>.chips.geojson`` chip footprints with their classes.
        probabilities_path: the per-class probability GeoTIFF, when asked for.
        classes: class names; pixel value i is ``classes[i]``.
        counts: chips per class name (classes with no chip included, as 0).
        grid_shape: ``(rows, cols)`` of the map (= the chip grid).
        classified, skipped: chips classified and chips left as nodata.
        crs: the scene CRS (``"EPSG:<code>"`` or WKT), None when not georeferenced.
        transform: affine 6-tuple of the map.
    """

    path: Path
    table_json: Path
    table_csv: Path
    footprints: Path
    probabilities_path: Path | None
    classes: list[str]
    counts: dict[str, int]
    grid_shape: tuple[int, int]
    classified: int
    skipped: int
    crs: str | None
    transform: tuple[float, float, float, float, float, float]


def sidecar_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>.classes.json, <stem>.classes.csv)`` next to the label map ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.classes.json"), out.with_name(f"{out.stem}.classes.csv")


def footprints_path(out: str | os.PathLike) -> Path:
    """``<stem>.chips.geojson`` next to the label map ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.chips.geojson")


def _batches(reader: ChipReader, batch_size: int) -> Iterator[list[Chip]]:
    batch: list[Chip] = []
    for chip in reader:
        batch.append(chip)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def classify_scene(
    classifier: ZeroShotClassifier,
    scene: str | os.PathLike,
    out: str | os.PathLike,
    *,
    chip_size: int = 64,
    bands: Bands = None,
    nodata: float | None = None,
    min_valid_fraction: float = 0.5,
    probabilities: str | os.PathLike | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> LabelMap:
    """Classify every chip of a raster scene and write a georeferenced label map.

    Args:
        classifier: the zero-shot classifier (at most 255 classes, as 255 marks nodata).
        scene: GeoTIFF (or any raster GDAL reads); multispectral and 16-bit scenes are stretched to RGB as in
            :class:`~geovl.io.chips.ChipReader`.
        out: the class-index GeoTIFF to write (uint8, one pixel per chip). Sidecars go next to it
            (:func:`sidecar_paths`).
        chip_size: chip side in scene pixels; the map's pixel size is ``chip_size`` scene pixels.
        bands: 1-based band indices or a sensor preset for the RGB read (see :mod:`geovl.io.sensors`).
        nodata: override the scene's nodata value.
        min_valid_fraction: chips with a smaller share of valid pixels (0..1; padding past the scene edge counts
            as invalid) are not classified and get :data:`NODATA`.
        probabilities: also write a float32 GeoTIFF with one probability band per class here.
        batch_size: chips per model call.
        progress: show a progress bar.

    Returns:
        A :class:`LabelMap` describing the files written.

    Raises:
        ValueError: more than 255 classes, bad chip size or fraction, ``out`` equal to the scene, unreadable scene.
    """
    n_classes = len(classifier.classes)
    if n_classes > NODATA:
        raise ValueError(f"a uint8 label map holds at most {NODATA} classes (255 is nodata); got {n_classes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out)
    scene_path = Path(scene)
    if out.resolve() == scene_path.resolve():
        raise ValueError(f"label map {out} would overwrite the scene it classifies")
    prob_path = Path(probabilities) if probabilities is not None else None
    if prob_path is not None and prob_path.resolve() in (out.resolve(), scene_path.resolve()):
        raise ValueError(f"probabilities path {probabilities} must differ from the scene and the label map")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: output folder does not exist")
    reader = ChipReader(scene_path, size=chip_size, bands=bands, nodata=nodata,
                        min_valid_fraction=min_valid_fraction, edge="pad")
    grid = _classify_chips(classifier, reader, batch_size=batch_size, keep_probabilities=prob_path is not None,
                           progress=progress)
    rows, cols = reader.grid_shape
    skipped = rows * cols - grid.classified
    a, b, c, d, e, f = affine_tuple(reader.scene.transform)
    s = float(chip_size)
    transform = (a * s, b * s, c, d * s, e * s, f)
    crs = reader.scene.crs_string
    counts_arr = np.bincount(grid.labels[grid.labels != NODATA].ravel(), minlength=n_classes)
    counts = {name: int(n) for name, n in zip(classifier.classes, counts_arr, strict=True)}
    tags = {
        "GEOVL_SCENE": str(scene_path), "GEOVL_CHIP_SIZE": str(chip_size), "GEOVL_MODEL": classifier.backbone.info.name,
        "GEOVL_CLASSES": json.dumps(classifier.classes),
    }
    write_geotiff(out, grid.labels[None], crs=crs, transform=transform, nodata=NODATA, tags=tags,
                  descriptions=["class index"])
    if grid.probabilities is not None and prob_path is not None:
        write_geotiff(prob_path, grid.probabilities, crs=crs, transform=transform, nodata=float("nan"), tags=tags,
                      descriptions=list(classifier.classes))
    geojson_path = write_feature_collection(footprints_path(out), grid.features)
    meta = {
        "label_map": out.name, "probabilities": prob_path.name if prob_path else None,
        "footprints": geojson_path.name, "scene": str(scene_path),
        "model": classifier.backbone.info.name, "label_set": classifier.label_set, "chip_size": chip_size,
        "grid": [rows, cols], "nodata": NODATA, "classified": grid.classified, "skipped": skipped, "crs": crs,
        "transform": list(transform),
    }
    json_path, csv_path = _write_class_tables(out, classifier, counts, skipped, meta)
    logger.info("%s: %d x %d label map, %d chips classified, %d skipped", out, rows, cols, grid.classified, skipped)
    return LabelMap(
        path=out, table_json=json_path, table_csv=csv_path, footprints=geojson_path, probabilities_path=prob_path,
        classes=list(classifier.classes), counts=counts, grid_shape=(rows, cols), classified=grid.classified,
        skipped=skipped, crs=crs, transform=transform,
    )


@dataclass
class _ChipGrid:
    labels: np.ndarray  # (rows, cols) uint8 class index, NODATA where skipped
    probabilities: np.ndarray | None  # (classes, rows, cols) float32, NaN where skipped
    features: list[dict[str, Any]]  # one GeoJSON feature per classified chip
    classified: int


def _classify_chips(classifier: ZeroShotClassifier, reader: ChipReader, *, batch_size: int,
                    keep_probabilities: bool, progress: bool) -> _ChipGrid:
    """Classify every chip of ``reader`` (embedded through the one embedding path)."""
    rows, cols = reader.grid_shape
    n_classes = len(classifier.classes)
    labels = np.full((rows, cols), NODATA, dtype=np.uint8)
    probs = np.full((n_classes, rows, cols), np.nan, dtype=np.float32) if keep_probabilities else None
    embed = EmbeddingPipeline(classifier.backbone, batch_size=batch_size, workers=0)
    bar = _progress(len(reader), progress)
    classified = 0
    features: list[dict[str, Any]] = []
    for batch in _batches(reader, batch_size):
        result = embed([chip.image for chip in batch])
        if result.failures:  # chips are decoded arrays; a failure here is a bug, not bad input
            raise RuntimeError(f"chip embedding failed: {result.failures[0][1]}")
        p = classifier.probabilities(result.embeddings)
        best = p.argmax(axis=1)
        for chip, k, row in zip(batch, best, p, strict=True):
            labels[chip.row, chip.col] = k
            features.append({"type": "Feature", "geometry": chip_geometry(chip), "properties": {
                "row": chip.row, "col": chip.col, "class_index": int(k), "class_name": classifier.classes[k],
                "probability": round(float(row[k]), 6)}})
            if probs is not None:
                probs[:, chip.row, chip.col] = row
        classified += len(batch)
        bar.update(len(batch))
    bar.close()
    return _ChipGrid(labels=labels, probabilities=probs, features=features, classified=classified)


def _write_class_tables(out: Path, classifier: ZeroShotClassifier, counts: dict[str, int], skipped: int,
                        meta: dict[str, Any]) -> tuple[Path, Path]:
    """The ``.classes.json`` (run metadata + class table) and ``.classes.csv`` sidecars of a label map."""
    json_path, csv_path = sidecar_paths(out)
    table = [
        {"index": i, "name": name, "prompt": prompt, "chips": counts[name]}
        for i, (name, prompt) in enumerate(zip(classifier.classes, classifier.prompts, strict=True))
    ]
    atomic_write_text(json_path, json.dumps({**meta, "classes": table}, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["index", "name", "prompt", "chips"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    writer.writerow({"index": NODATA, "name": "nodata", "prompt": "", "chips": skipped})
    atomic_write_text(csv_path, buf.getvalue())
    return json_path, csv_path


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="chip", dynamic_ncols=True)
