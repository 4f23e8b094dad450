"""The one image loader: any image (plain formats through Pillow, GeoTIFFs and 16-bit or multispectral TIFFs through
rasterio) to an RGB PIL image, and a batch form that records bad files instead of failing."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from geovl.io.geotiff import Bands, Stretch, check_file, open_raster, rasterio_module, read_geotiff
from geovl.io.images import (
    DEFAULT_MAX_PIXELS,
    BandCountError,
    ImageReadError,
    ImageSource,
    describe_source,
    load_pillow_image,
)

__all__ = ["Failure", "load_image", "load_images"]

_TIFF_SUFFIXES = (".tif", ".tiff")


def _needs_rasterio(path: Path) -> bool:
    """True when a TIFF is georeferenced or not plain 8-bit RGB(A), so Pillow would lose or mangle it."""
    with open_raster(path) as ds:
        georeferenced = bool(ds.crs) or bool(ds.gcps[0]) or not ds.transform.is_identity
        eight_bit = all(dt == "uint8" for dt in ds.dtypes)
        return georeferenced or not eight_bit or ds.count not in (3, 4)


def load_image(
    source: ImageSource,
    *,
    allow_gray: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    bands: Bands = None,
    stretch: Stretch = "auto",
    percentiles: tuple[float, float] = (2.0, 98.0),
    nodata: float | None = None,
) -> Image.Image:
    """Decode any image into an RGB PIL image, reading TIFFs through rasterio when Pillow would not do.

    ``.tif`` / ``.tiff`` paths that are georeferenced, not 8 bit, or not 3/4-band (e.g. 16-bit multispectral
    stacks), or that come with ``bands`` / ``nodata``, go through :func:`read_geotiff` when rasterio is
    installed (nodata pixels become black); everything else goes through :func:`geovl.io.images.load_pillow_image`.

    Args:
        source: what :func:`~geovl.io.images.load_pillow_image` accepts.
        allow_gray, max_pixels: as for :func:`~geovl.io.images.load_pillow_image`.
        bands, stretch, percentiles, nodata: as for :func:`read_geotiff`. ``bands`` and ``nodata`` apply to
            TIFFs only (``ValueError`` otherwise); ``bands`` must select 1 or 3 bands.

    Raises:
        The :class:`~geovl.io.images.ImageReadError` family, FileNotFoundError, ValueError.
    """
    tiff_path = None
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in _TIFF_SUFFIXES:
        tiff_path = Path(source)
    raster_opts = bands is not None or nodata is not None
    if raster_opts and tiff_path is None:
        raise ValueError("bands and nodata apply to TIFF files only")
    if tiff_path is not None:
        path = check_file(tiff_path)
        try:
            rasterio_module()
            have_rasterio = True
        except ImportError:
            if raster_opts:
                raise
            have_rasterio = False
        if have_rasterio and (raster_opts or _needs_rasterio(path)):
            raster = read_geotiff(
                path,
                bands=bands,
                stretch=stretch,
                percentiles=percentiles,
                nodata=nodata,
                allow_gray=allow_gray,
                max_pixels=max_pixels,
            )
            image = raster.image
            if image.shape[2] == 1:
                if not allow_gray:
                    raise BandCountError(str(path), "1 band selected but 3 (RGB) are required")
                image = np.repeat(image, 3, axis=2)
            if image.shape[2] != 3:
                raise ValueError(f"{path}: bands must select 1 or 3 bands for RGB, got {image.shape[2]}")
            return Image.fromarray(image, mode="RGB")
        if not have_rasterio:
            try:
                return load_pillow_image(source, allow_gray=allow_gray, max_pixels=max_pixels)
            except ImageReadError as exc:
                raise type(exc)(
                    exc.source,
                    f"{exc.reason} (rasterio, which reads 16-bit and multispectral TIFFs, is missing: reinstall geovl)",
                ) from exc
    return load_pillow_image(source, allow_gray=allow_gray, max_pixels=max_pixels)


@dataclass(frozen=True)
class Failure:
    """A source that could not be decoded, and why."""

    source: str
    error: str


def load_images(
    sources: Iterable[ImageSource],
    *,
    on_error: Literal["raise", "skip"] = "skip",
    allow_gray: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[list[Image.Image], list[int], list[Failure]]:
    """Decode many sources, skipping (and recording) bad ones unless ``on_error="raise"``.

    Returns:
        ``(images, kept, failures)``: decoded images, the input positions they came from, and one
        :class:`Failure` per skipped source.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    images: list[Image.Image] = []
    kept: list[int] = []
    failures: list[Failure] = []
    for i, src in enumerate(sources):
        try:
            images.append(load_image(src, allow_gray=allow_gray, max_pixels=max_pixels))
            kept.append(i)
        except (ImageReadError, FileNotFoundError) as exc:
            if on_error == "raise":
                raise
            failures.append(Failure(source=describe_source(src), error=str(exc)))
    return images, kept, failures
