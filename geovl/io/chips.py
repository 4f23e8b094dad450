"""Cut a large raster scene into fixed-size georeferenced chips, reading one window at a time.

:class:`ChipReader` never holds the whole scene: it reads each chip's window, plus (for the percentile
stretch) one decimated overview of the scene whose longer side is at most ``stats_size`` pixels. The stretch
limits come from that overview, so neighbouring chips get the same colours; ``stretch_scope="chip"`` stretches
each chip on its own instead.

Grid: chip ``(row, col)`` starts at pixel ``(row * stride, col * stride)`` with ``stride = size - overlap``.
At the right and bottom edges (``edge=``):

* ``"pad"`` (default): the last chips extend past the scene; the outside part is 0 and invalid.
* ``"shift"``: the last row/column of chips is moved back to end exactly at the scene edge (so it overlaps its
  neighbour more); a scene smaller than one chip is still padded.
* ``"drop"``: chips that would extend past the scene are left out.

:func:`write_chip_geotiff` writes a chip (or a per-chip model output) back as a georeferenced GeoTIFF.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geovl.io.geotiff import (
    Bands,
    LonLatBounds,
    Stretch,
    affine_tuple,
    apply_affine,
    check_stretch,
    georeference,
    open_raster,
    rasterio_module,
    read_window,
    scene_info,
    stretch_limits,
    to_image,
)
from geovl.io.geotiff_writer import write_geotiff

__all__ = ["Chip", "ChipReader", "chip_offsets", "write_chip_geotiff"]

logger = logging.getLogger(__name__)

EdgeMode = Literal["pad", "shift", "drop"]


@dataclass(frozen=True)
class Chip:
    """One chip of a scene.

    Attributes:
        image: ``size`` x ``size`` x C uint8 (C = 3 for RGB reads); padded pixels are 0.
        valid: ``size`` x ``size`` bool; False for nodata, masked and padded pixels.
        window: ``(col_off, row_off, width, height)`` in scene pixels; padded chips extend past the scene.
        row, col: position in the chip grid.
        transform: affine 6-tuple of the chip (its pixel (0, 0) corner is the window's corner).
        bounds: ``(left, bottom, right, top)`` in the scene CRS.
        lonlat_bounds: ``(west, south, east, north)`` in degrees; None without a CRS.
        footprint: closed ring of the chip corners TL, TR, BR, BL, TL in (lon, lat); exact under rotation and
            projection (the corners themselves are transformed). None without a CRS.
        crs: scene CRS as ``"EPSG:<code>"`` or WKT; None when not georeferenced.
        acquired, sensor: from the scene tags (see :class:`geovl.io.geotiff.Raster`).
        gsd: metres per pixel at the chip centre.
        scene: path of the scene.
        chip_id: ``"<scene stem>_r<row>_c<col>"``.
        valid_fraction: share of valid pixels in the chip, 0..1.
    """

    image: np.ndarray
    valid: np.ndarray
    window: tuple[int, int, int, int]
    row: int
    col: int
    transform: tuple[float, float, float, float, float, float]
    bounds: tuple[float, float, float, float]
    lonlat_bounds: LonLatBounds | None
    footprint: list[tuple[float, float]] | None
    crs: str | None
    acquired: datetime | None
    sensor: str | None
    gsd: float | None
    scene: str
    chip_id: str
    valid_fraction: float


def chip_offsets(length: int, size: int, stride: int, edge: EdgeMode = "pad") -> list[int]:
    """Pixel offsets of chips along one axis of ``length`` pixels (see the module docstring for ``edge``)."""
    if edge == "drop":
        return [] if length < size else [i * stride for i in range(1 + (length - size) // stride)]
    offsets = [i * stride for i in range(1 + math.ceil(max(length - size, 0) / stride))]
    if edge == "shift" and length > size:
        offsets = [min(o, length - size) for o in offsets]
    return offsets


class ChipReader:
    """Iterate over ``size`` x ``size`` chips of a raster scene without loading the whole scene.

    ``len(reader)`` is the number of grid cells; iteration skips chips whose valid fraction is below
    ``min_valid_fraction`` and counts them in :attr:`skipped`. The reader opens the file once per iteration,
    so it can be iterated again (or pickled to a worker).

    Args:
        path: a GeoTIFF or other raster GDAL reads.
        size: chip side in pixels (> 0).
        overlap: pixels shared by neighbouring chips (0 <= overlap < size).
        bands, nodata, allow_gray: as for :func:`geovl.io.geotiff.read_geotiff`.
        stretch, percentiles: as for :func:`~geovl.io.geotiff.read_geotiff`; percentiles are taken over the
            valid pixels of a decimated read of the whole scene (``stretch_scope="scene"``) or of each chip
            (``"chip"``). The scene limits are in :attr:`limits` (pass them as ``stretch=`` elsewhere to
            reproduce the colours).
        min_valid_fraction: skip chips with a smaller share of valid pixels (0..1; padding counts as invalid).
        edge: ``"pad"``, ``"shift"`` or ``"drop"`` (module docstring).
        stats_size: longer side, in pixels, of the decimated read used for scene statistics.

    Raises:
        ValueError: bad size, overlap, fraction, edge or stretch; and the errors of
        :func:`~geovl.io.geotiff.read_geotiff` for bad files.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        size: int = 256,
        overlap: int = 0,
        *,
        bands: Bands = None,
        stretch: Stretch = "auto",
        percentiles: tuple[float, float] = (2.0, 98.0),
        nodata: float | None = None,
        allow_gray: bool = False,
        stretch_scope: Literal["scene", "chip"] = "scene",
        min_valid_fraction: float = 0.0,
        edge: EdgeMode = "pad",
        stats_size: int = 1024,
    ) -> None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"size must be a positive number of pixels, got {size!r}")
        if not isinstance(overlap, int) or not 0 <= overlap < size:
            raise ValueError(f"overlap must satisfy 0 <= overlap < size ({size}), got {overlap!r}")
        if not 0.0 <= min_valid_fraction <= 1.0:
            raise ValueError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
        if edge not in ("pad", "shift", "drop"):
            raise ValueError(f"edge must be 'pad', 'shift' or 'drop', got {edge!r}")
        if stretch_scope not in ("scene", "chip"):
            raise ValueError(f"stretch_scope must be 'scene' or 'chip', got {stretch_scope!r}")
        if stats_size <= 0:
            raise ValueError(f"stats_size must be positive, got {stats_size}")
        self.path = Path(path)
        self.size = size
        self.overlap = overlap
        self.stride = size - overlap
        self.percentiles = percentiles
        self.stretch_scope = stretch_scope
        self.min_valid_fraction = min_valid_fraction
        self.edge = edge
        self.skipped = 0
        with open_raster(self.path) as ds:
            self.scene = scene_info(ds, bands, nodata, allow_gray)
            self._stretch = check_stretch(stretch, self.scene.dtype, len(self.scene.bands), self.scene.path)
            self.limits: np.ndarray | None = None
            if isinstance(self._stretch, np.ndarray):
                self.limits = self._stretch
            elif self._stretch == "percentile" and stretch_scope == "scene":
                self.limits = self._scene_limits(ds, stats_size)
        self._crs = self.scene.crs_string
        self._rows = chip_offsets(self.scene.height, size, self.stride, edge)
        self._cols = chip_offsets(self.scene.width, size, self.stride, edge)

    def _scene_limits(self, ds: Any, stats_size: int) -> np.ndarray | None:
        """Percentile limits over a decimated read of the whole scene (served from overviews if any)."""
        factor = max(1, math.ceil(max(self.scene.width, self.scene.height) / stats_size))
        out_shape = None
        if factor > 1:
            out_shape = (math.ceil(self.scene.height / factor), math.ceil(self.scene.width / factor))
        data, valid = read_window(ds, self.scene, out_shape=out_shape)
        return stretch_limits(self._stretch, data, valid, self.percentiles)

    def __len__(self) -> int:
        return len(self._rows) * len(self._cols)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the chip grid."""
        return len(self._rows), len(self._cols)

    def windows(self) -> Iterator[tuple[int, int, tuple[int, int, int, int]]]:
        """``(row, col, (col_off, row_off, width, height))`` of every grid cell, row by row."""
        for r, row_off in enumerate(self._rows):
            for c, col_off in enumerate(self._cols):
                yield r, c, (col_off, row_off, self.size, self.size)

    def __iter__(self) -> Iterator[Chip]:
        self.skipped = 0
        with open_raster(self.path) as ds:
            for r, c, window in self.windows():
                chip = self._read_chip(ds, r, c, window)
                if chip is None:
                    self.skipped += 1
                else:
                    yield chip
        if self.skipped:
            logger.info(
                "%s: skipped %d of %d chips with valid fraction below %.3f",
                self.path,
                self.skipped,
                len(self),
                self.min_valid_fraction,
            )

    def read(self, row: int, col: int, ds: Any = None) -> Chip | None:
        """Random access: the chip at grid cell (row, col), or ``None`` when it is below ``min_valid_fraction``.

        Pass an open dataset (from :func:`geovl.io.geotiff.open_raster`) to read many chips without reopening the
        file; worker processes of a DataLoader do that.
        """
        if not (0 <= row < len(self._rows) and 0 <= col < len(self._cols)):
            raise ValueError(f"chip ({row}, {col}) is outside the {len(self._rows)} x {len(self._cols)} grid")
        window = (self._cols[col], self._rows[row], self.size, self.size)
        if ds is not None:
            return self._read_chip(ds, row, col, window)
        with open_raster(self.path) as opened:
            return self._read_chip(opened, row, col, window)

    def _read_chip(self, ds: Any, r: int, c: int, window: tuple[int, int, int, int]) -> Chip | None:
        windows = rasterio_module("reading raster chips").windows
        col_off, row_off, width, height = window
        inside_w = min(width, self.scene.width - col_off)
        inside_h = min(height, self.scene.height - row_off)
        data_in, valid_in = read_window(ds, self.scene, windows.Window(col_off, row_off, inside_w, inside_h))
        data = np.zeros((data_in.shape[0], height, width), dtype=data_in.dtype)
        valid = np.zeros((height, width), dtype=bool)
        data[:, :inside_h, :inside_w] = data_in
        valid[:inside_h, :inside_w] = valid_in
        fraction = float(valid.mean())
        if fraction < self.min_valid_fraction:
            return None
        limits = self.limits
        if self.stretch_scope == "chip" and isinstance(self._stretch, str):
            limits = stretch_limits(self._stretch, data_in, valid_in, self.percentiles)
        x0, y0 = apply_affine(self.scene.transform, col_off, row_off)
        a, b, _, d, e, _ = affine_tuple(self.scene.transform)
        transform = (a, b, x0, d, e, y0)
        geo = georeference(self.scene.crs, transform, width, height)
        return Chip(
            image=to_image(data, valid, limits),
            valid=valid,
            window=window,
            row=r,
            col=c,
            transform=transform,
            bounds=geo.bounds,
            lonlat_bounds=geo.lonlat_bounds,
            footprint=geo.footprint,
            crs=self._crs,
            acquired=self.scene.acquired,
            sensor=self.scene.sensor,
            gsd=geo.gsd,
            scene=self.scene.path,
            chip_id=f"{self.path.stem}_r{r}_c{c}",
            valid_fraction=fraction,
        )


def write_chip_geotiff(
    chip: Chip,
    path: str | os.PathLike,
    data: np.ndarray | None = None,
    *,
    nodata: float | None = None,
    compress: str | None = "deflate",
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a chip, or a model output for it, as a georeferenced GeoTIFF, atomically.

    Args:
        chip: the chip whose georeference to use.
        path: output file; written under a temporary name in the same folder, then renamed over ``path``.
        data: HxW or HxWxC array of any dtype GDAL writes (e.g. a class map or a per-patch heatmap). Its pixel
            grid spans the chip's footprint, so an output smaller than the chip (e.g. 16x16 patches of a 256
            chip) gets proportionally larger pixels. None writes ``chip.image`` with ``chip.valid`` as an
            internal mask.
        nodata: nodata value recorded in the file.
        compress: GDAL compression (``"deflate"``, ``"lzw"``, None).
        tags: extra metadata tags; CHIP_ID, SCENE, WINDOW, ACQUISITION_DATE and SENSOR are always written.

    Returns:
        The path written.
    """
    out = chip.image if data is None else np.asarray(data)
    if out.ndim == 2:
        out = out[:, :, None]
    if out.ndim != 3 or out.shape[0] == 0 or out.shape[1] == 0:
        raise ValueError(f"data must be an HxW or HxWxC array, got shape {out.shape}")
    height, width, _ = out.shape
    chip_w, chip_h = chip.window[2], chip.window[3]
    a, b, c, d, e, f = chip.transform
    sx, sy = chip_w / width, chip_h / height
    transform = (a * sx, b * sy, c, d * sx, e * sy, f)
    meta = {"CHIP_ID": chip.chip_id, "SCENE": chip.scene, "WINDOW": ",".join(map(str, chip.window))}
    if chip.acquired is not None:
        meta["ACQUISITION_DATE"] = chip.acquired.isoformat()
    if chip.sensor:
        meta["SENSOR"] = chip.sensor
    meta.update(tags or {})
    mask = np.where(chip.valid, 255, 0).astype(np.uint8) if data is None else None
    return write_geotiff(path, out.transpose(2, 0, 1), crs=chip.crs, transform=transform, nodata=nodata, tags=meta,
                         mask=mask, compress=compress)
