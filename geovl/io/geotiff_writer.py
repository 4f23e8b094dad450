"""The one GeoTIFF writer: chips, label maps, probability and heat maps are all written through :func:`write_geotiff`,
atomically (a temporary file next to the target, renamed over it when complete)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geovl.io.fs import atomic_path
from geovl.io.geotiff import rasterio_module

__all__ = ["write_geotiff"]


def write_geotiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    crs: Any,
    transform: tuple[float, float, float, float, float, float],
    nodata: float | None = None,
    tags: Mapping[str, str] | None = None,
    descriptions: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    compress: str | None = "deflate",
) -> Path:
    """Write a (bands, H, W) array as a GeoTIFF, atomically (the one GeoTIFF writer: chips, label maps, heat maps).

    Args:
        path: output file; written under a temporary name next to it and renamed over it when complete.
        data: (bands, H, W) array of any dtype GDAL writes (booleans are written as uint8).
        crs: CRS (WKT / EPSG string / rasterio CRS) or None.
        transform: the affine ``(a, b, c, d, e, f)`` from pixel to CRS coordinates.
        nodata: nodata value recorded in the file.
        tags: metadata tags.
        descriptions: one description per band.
        mask: (H, W) uint8 internal mask (255 valid, 0 invalid).
        compress: GDAL compression (``"deflate"``, ``"lzw"``, None).

    Raises:
        ValueError: ``data`` not 3-D or empty; descriptions not one per band.
    """
    rasterio = rasterio_module("writing GeoTIFF files")
    from affine import Affine  # a rasterio dependency

    arr = np.asarray(data)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)  # GDAL has no boolean type
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"data must be a (bands, H, W) array, got shape {arr.shape}")
    count, height, width = arr.shape
    if descriptions is not None and len(descriptions) != count:
        raise ValueError(f"{len(descriptions)} band descriptions for {count} bands")
    profile: dict[str, Any] = {"driver": "GTiff", "width": width, "height": height, "count": count,
                               "dtype": arr.dtype.name, "crs": crs, "transform": Affine(*transform),
                               "nodata": nodata}
    if compress:
        profile["compress"] = compress
    with atomic_path(path, suffix=".tmp.tif") as tmp, rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
            rasterio.open(tmp, "w", **profile) as dst:
        dst.write(np.ascontiguousarray(arr))
        if mask is not None:
            dst.write_mask(np.asarray(mask, np.uint8))
        dst.update_tags(**dict(tags or {}))
        for i, text in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, text)
    return Path(path)
