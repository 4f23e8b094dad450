"""Read GeoTIFF (and any other GDAL raster) scenes into 8-bit RGB through rasterio, keeping the georeference.

:func:`read_geotiff` reads a whole scene; :class:`geovl.io.chips.ChipReader` reads large scenes window by
window and shares the helpers here (band selection, nodata masks, stretch, georeference), so both produce
identical pixels for the same limits.

Conventions:
    * Band indexes are 1-based, as in rasterio and GDAL (band 1 is the first band).
    * Arrays read from a file are CxHxW; images handed back are HxWxC uint8.
    * A pixel is invalid when every selected band that has a nodata value holds it, when the file's dataset
      mask or alpha band marks it transparent, or when any selected band is NaN/inf. Invalid pixels are
      excluded from percentile statistics and are 0 in the output image.
    * ``transform`` is the affine 6-tuple ``(a, b, c, d, e, f)``: ``x = a*col + b*row + c``,
      ``y = d*col + e*row + f``, in CRS units for pixel corners.

rasterio is imported inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from geovl._optional import require
from geovl.io.images import (
    DEFAULT_MAX_PIXELS,
    BandCountError,
    DecompressionBombError,
    EmptyImageError,
    NotAnImageError,
    TruncatedImageError,
)
from geovl.io.sensors import SENSOR_PRESETS, resolve_bands
from geovl.io.stretch import apply_limits, percentile_limits

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "Bands",
    "LonLatBounds",
    "Raster",
    "Stretch",
    "read_geotiff",
]

logger = logging.getLogger(__name__)

Stretch = Literal["auto", "percentile"] | tuple[float, float] | np.ndarray | None
"""How bands become 8 bit:

* ``"auto"``: uint8 data is kept as is, anything else gets the percentile stretch.
* ``"percentile"``: each band maps its ``percentiles`` (default 2 and 98 %) of valid pixels to 0 and 255.
* ``(min, max)``: one fixed value range for every band, e.g. ``(0, 3000)`` for Sentinel-2 L2A reflectance
  (digital numbers are reflectance x 10000, so this shows 0-30 % reflectance).
* a ``(C, 2)`` array: per-band ``(min, max)`` limits, e.g. ``ChipReader.limits`` to reproduce a scene stretch.
* ``None``: no stretch; the data must already be uint8.
"""

Bands = str | Sequence[int | str] | None
"""A preset name from :data:`geovl.io.sensors.SENSOR_PRESETS`, 1-based indexes / band names, or None."""

LonLatBounds = tuple[float, float, float, float]
"""``(west, south, east, north)`` in degrees (EPSG:4326)."""

_EARTH_RADIUS_M = 6_371_008.8
_TIFF_SUFFIXES = (".tif", ".tiff")
_KNOWN_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"\x89PNG", b"\xff\xd8\xff")

# Tags holding the acquisition time, most specific first. TIFFTAG_DATETIME is the TIFF "image creation" time,
# which is often the processing date, so it comes last.
_DATE_TAGS = (
    "ACQUISITION_DATE",
    "ACQUISITIONDATE",
    "ACQUISITION_TIME",
    "DATE_ACQUIRED",
    "SENSING_TIME",
    "SENSING_DATE",
    "DATATAKE_SENSING_START",
    "PRODUCT_START_TIME",
    "START_TIME",
    "DATETIME",
    "DATE_TIME",
    "TIFFTAG_DATETIME",
)
_SENSOR_TAGS = (
    "SENSOR",
    "SENSOR_ID",
    "SPACECRAFT_NAME",
    "SPACECRAFT",
    "SPACECRAFT_ID",
    "SATELLITE",
    "PLATFORM",
    "MISSION",
)


def rasterio_module(feature: str = "reading GeoTIFF files") -> ModuleType:
    """Import rasterio (with the submodules used here) or raise MissingDependencyError naming the extra."""
    rasterio = require("rasterio", None, feature)
    for sub in ("enums", "errors", "warp", "windows"):
        require(f"rasterio.{sub}", None, feature)
    return rasterio


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Raster:
    """A scene read into memory by :func:`read_geotiff`.

    Attributes:
        image: HxWxC uint8, C = 3 for presets and the default RGB read, else one channel per requested band.
        valid: HxW bool, False for nodata / masked / non-finite pixels (which are 0 in ``image``).
        crs: ``"EPSG:<code>"`` when the CRS has one, else its WKT; None when the file is not georeferenced.
        transform: affine 6-tuple ``(a, b, c, d, e, f)`` mapping pixel (col, row) corners to CRS x, y.
        bounds: ``(left, bottom, right, top)`` in CRS units (pixel units when not georeferenced).
        lonlat_bounds: ``(west, south, east, north)`` in degrees, None without a CRS.
        footprint: closed ring of the 4 image corners TL, TR, BR, BL, TL in (lon, lat); None without a CRS.
        gsd: ground sample distance in metres per pixel (geometric mean of pixel width and height). Exact for
            projected CRSs; for geographic CRSs estimated on a sphere at the centre latitude. None without a
            CRS.
        acquired: acquisition time parsed from the tags (timezone-aware when the tag carries an offset).
        sensor: sensor / platform from the tags, else the preset's sensor, else None.
        tags: the file's default-domain metadata tags.
        bands: the 1-based band indexes that were read, in channel order.
        limits: the ``(C, 2)`` stretch limits used, None when the data was kept as uint8.
        path: the file read.
    """

    image: np.ndarray
    valid: np.ndarray
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    bounds: tuple[float, float, float, float]
    lonlat_bounds: LonLatBounds | None
    footprint: list[tuple[float, float]] | None
    gsd: float | None
    acquired: datetime | None
    sensor: str | None
    tags: dict[str, str] = field(default_factory=dict)
    bands: tuple[int, ...] = ()
    limits: np.ndarray | None = None
    path: str = ""


# --------------------------------------------------------------------------------------------- opening


def check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise EmptyImageError(str(p), "file is empty (0 bytes)")
    return p


def _read_errors() -> tuple[type[BaseException], ...]:
    rasterio = rasterio_module()
    errors: list[type[BaseException]] = [rasterio.errors.RasterioError]
    try:
        from rasterio._err import CPLE_BaseError

        errors.append(CPLE_BaseError)
    except ImportError:  # pragma: no cover - private module layout may change
        pass
    return tuple(errors)


def _error_text(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{exc}: {cause}" if cause is not None else str(exc)


@contextmanager
def open_raster(path: str | os.PathLike) -> Iterator[Any]:
    """Open a raster with rasterio, mapping failures onto the :class:`ImageReadError` family.

    Yields the open ``rasterio.io.DatasetReader``; it is closed on exit.

    Raises:
        FileNotFoundError, EmptyImageError, NotAnImageError, TruncatedImageError, MissingDependencyError.
    """
    rasterio = rasterio_module()
    p = check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(p)
    except _read_errors() as exc:
        with p.open("rb") as fh:
            head = fh.read(4)
        if any(head.startswith(m[: len(head)]) for m in _KNOWN_MAGIC) and len(head) >= 3:
            reason = f"raster header is truncated or corrupt ({_error_text(exc)})"
            raise TruncatedImageError(str(p), reason) from exc
        raise NotAnImageError(str(p), f"not a raster format GDAL can read ({exc})") from exc
    with ds:
        yield ds


# ----------------------------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class SceneInfo:
    """What :func:`scene_info` learned from an open dataset: size, selected bands, masks and georeference."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    bands: tuple[int, ...]
    nodata: tuple[float | None, ...]
    mask_band: int | None
    crs: Any
    transform: Any
    tags: dict[str, str]
    acquired: datetime | None
    sensor: str | None

    @property
    def crs_string(self) -> str | None:
        if self.crs is None:
            return None
        epsg = self.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else str(self.crs.to_wkt())


def _default_bands(ds: Any, source: str, allow_gray: bool) -> tuple[int, ...]:
    if ds.count >= 3:
        return (1, 2, 3)
    rasterio = rasterio_module()
    alpha = rasterio.enums.ColorInterp.alpha
    data_bands = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci != alpha]
    if len(data_bands) == 1 and allow_gray:
        return (data_bands[0],) * 3
    hint = "pass allow_gray=True to replicate it, or " if len(data_bands) == 1 else ""
    raise BandCountError(
        source, f"file has {ds.count} band(s) but 3 (RGB) are required; {hint}pass bands=(...) explicitly"
    )


def scene_info(
    ds: Any,
    bands: Bands = None,
    nodata: float | None = None,
    allow_gray: bool = False,
) -> SceneInfo:
    """Resolve band selection, nodata and mask sources and read the metadata of an open dataset.

    Args:
        ds: an open rasterio dataset.
        bands: see :data:`Bands`.
        nodata: a nodata value that overrides the file's (applied to every selected band).
        allow_gray: with ``bands=None``, replicate a single data band to RGB instead of raising.
    """
    rasterio = rasterio_module()
    source = str(ds.name)
    if bands is None:
        picked = _default_bands(ds, source, allow_gray)
    else:
        picked = resolve_bands(bands, ds.count, ds.descriptions, source)
    flags = rasterio.enums.MaskFlags
    file_nodata = ds.nodatavals
    nd_values: list[float | None] = []
    mask_band = None
    for b in picked:
        band_flags = ds.mask_flag_enums[b - 1]
        nd_values.append(nodata if nodata is not None else file_nodata[b - 1])
        if (
            mask_band is None
            and (flags.per_dataset in band_flags or flags.alpha in band_flags)
            and (flags.nodata not in band_flags)
        ):
            mask_band = b
    tags = {str(k): str(v) for k, v in ds.tags().items()}
    sensor = _sensor_from_tags(tags)
    if sensor is None and isinstance(bands, str):
        sensor = SENSOR_PRESETS[bands].sensor
    crs = ds.crs if ds.crs else None
    return SceneInfo(
        path=source,
        width=int(ds.width),
        height=int(ds.height),
        count=int(ds.count),
        dtype=str(ds.dtypes[picked[0] - 1]),
        bands=picked,
        nodata=tuple(nd_values),
        mask_band=mask_band,
        crs=crs,
        transform=ds.transform,
        tags=tags,
        acquired=_acquired_from_tags(tags),
        sensor=sensor,
    )


def read_window(
    ds: Any,
    scene: SceneInfo,
    window: Any = None,
    out_shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read the selected bands of ``window`` (a rasterio ``Window`` inside the scene, or None for all of it).

    With ``out_shape=(h, w)`` the read is decimated (nearest neighbour; GDAL uses overviews when present).

    Returns:
        ``(data, valid)``: CxHxW array in the file's dtype and HxW bool validity mask.

    Raises:
        TruncatedImageError: the pixel data cannot be decoded.
    """
    unique = sorted(set(scene.bands))
    kwargs: dict[str, Any] = {}
    if window is not None:
        kwargs["window"] = window
    try:
        if out_shape is not None:
            data = ds.read(unique, out_shape=(len(unique), *out_shape), **kwargs)
        else:
            data = ds.read(unique, **kwargs)
        mask = None
        if scene.mask_band is not None:
            if out_shape is not None:
                kwargs["out_shape"] = out_shape
            mask = ds.read_masks(scene.mask_band, **kwargs)
    except _read_errors() as exc:
        reason = f"pixel data is truncated or corrupt ({_error_text(exc)})"
        raise TruncatedImageError(scene.path, reason) from exc
    if tuple(unique) != scene.bands:
        data = data[[unique.index(b) for b in scene.bands]]
    return data, _valid_mask(data, scene.nodata, mask)


def _valid_mask(data: np.ndarray, nodata: Sequence[float | None], mask: np.ndarray | None) -> np.ndarray:
    valid = np.ones(data.shape[1:], dtype=bool)
    is_nodata = None
    for band, value in zip(data, nodata, strict=True):
        if value is None:
            continue
        hit = np.isnan(band) if (isinstance(value, float) and math.isnan(value)) else band == value
        is_nodata = hit if is_nodata is None else is_nodata & hit
    if is_nodata is not None:
        valid &= ~is_nodata
    if mask is not None:
        valid &= mask > 0
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    return valid


# --------------------------------------------------------------------------------------------- stretch


def check_stretch(stretch: Stretch, dtype: str, count: int, source: str) -> Stretch:
    """Validate ``stretch`` for data of ``dtype`` with ``count`` bands; resolve ``"auto"``.

    Returns ``None`` (keep uint8), ``"percentile"``, or a ``(count, 2)`` float64 limits array.
    """
    if isinstance(stretch, str):
        if stretch == "auto":
            return None if dtype == "uint8" else "percentile"
        if stretch == "percentile":
            return stretch
        raise ValueError(f"stretch must be 'auto', 'percentile', (min, max), a (C, 2) array or None; got {stretch!r}")
    if stretch is None:
        if dtype != "uint8":
            raise ValueError(
                f"{source}: stretch=None keeps values as they are and needs uint8 data, but the bands are "
                f"{dtype}; use stretch='percentile' or a fixed (min, max) range"
            )
        return None
    limits = np.asarray(stretch, dtype=np.float64)
    if limits.shape == (2,):
        limits = np.tile(limits, (count, 1))
    if limits.shape != (count, 2):
        raise ValueError(f"stretch limits must be (min, max) or shape ({count}, 2), got shape {limits.shape}")
    if not np.all(limits[:, 1] > limits[:, 0]):
        raise ValueError(f"stretch limits need max > min for every band, got {limits.tolist()}")
    return limits


def stretch_limits(
    stretch: Stretch, data: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float]
) -> np.ndarray | None:
    """The ``(C, 2)`` limits for a checked ``stretch`` (:func:`check_stretch`); None keeps uint8 as is."""
    if stretch is None:
        return None
    if isinstance(stretch, str):
        return percentile_limits(data, percentiles[0], percentiles[1], valid)
    return np.asarray(stretch, dtype=np.float64)


def to_image(data: np.ndarray, valid: np.ndarray, limits: np.ndarray | None) -> np.ndarray:
    """CxHxW bands -> HxWxC uint8 with ``limits`` (None: data is uint8 already); invalid pixels become 0."""
    if limits is None:
        out = data.copy()
        out[:, ~valid] = 0
    else:
        out = apply_limits(data, limits, valid)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


# ---------------------------------------------------------------------------------------- georeference


def affine_tuple(transform: Any) -> tuple[float, float, float, float, float, float]:
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    return (a, b, c, d, e, f)


def pixel_corners(transform: Any, width: float, height: float) -> list[tuple[float, float]]:
    """CRS coordinates of the corners of a ``width`` x ``height`` pixel block: TL, TR, BR, BL."""
    return [apply_affine(transform, col, row) for col, row in ((0, 0), (width, 0), (width, height), (0, height))]


def apply_affine(transform: Any, col: float, row: float) -> tuple[float, float]:
    """CRS ``(x, y)`` of pixel position ``(col, row)`` (affine 3 deprecates ``transform * xy``)."""
    a, b, c, d, e, f = affine_tuple(transform)
    return a * col + b * row + c, d * col + e * row + f


@dataclass(frozen=True)
class Georef:
    """Bounds, lon/lat bounds, footprint and GSD of a pixel block; see :class:`Raster` for the fields."""

    bounds: tuple[float, float, float, float]
    lonlat_bounds: LonLatBounds | None
    footprint: list[tuple[float, float]] | None
    gsd: float | None


def georeference(crs: Any, transform: Any, width: float, height: float) -> Georef:
    """Georeference of a ``width`` x ``height`` pixel block whose top-left corner ``transform`` locates."""
    corners = pixel_corners(transform, width, height)
    xs = [c[0] for c in corners]
    ys = [c[1] for c in corners]
    bounds = (min(xs), min(ys), max(xs), max(ys))
    if crs is None:
        return Georef(bounds, None, None, None)
    warp = rasterio_module().warp
    lons, lats = warp.transform(crs, "EPSG:4326", xs, ys)
    ring = [(float(lo), float(la)) for lo, la in zip(lons, lats, strict=True)]
    ring.append(ring[0])
    w, s, e, n = warp.transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    return Georef(bounds, (float(w), float(s), float(e), float(n)), ring, _gsd(crs, transform, width, height))


def _gsd(crs: Any, transform: Any, width: float, height: float) -> float | None:
    a, b, _, d, e, _ = affine_tuple(transform)
    px_w, px_h = math.hypot(a, d), math.hypot(b, e)
    if crs.is_projected:
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:  # CRSError when units are undefined
            return None
        return math.sqrt(px_w * px_h) * factor
    if crs.is_geographic:
        _, lat = apply_affine(transform, width / 2, height / 2)
        metres_per_degree = math.pi * _EARTH_RADIUS_M / 180.0
        return math.sqrt(px_w * math.cos(math.radians(lat)) * px_h) * metres_per_degree
    return None


# ------------------------------------------------------------------------------------------------ tags


def parse_datetime(text: str) -> datetime | None:
    """Parse a tag's time: TIFF ``"YYYY:MM:DD HH:MM:SS"``, ISO 8601 (``Z`` = UTC), ``YYYYMMDD[THHMMSS]``."""
    text = text.strip()
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y%m%dT%H%M%S", "%Y%m%d"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    iso = re.sub(r"[zZ]$", "+00:00", text)
    iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)  # fromisoformat takes at most microseconds
    iso = re.sub(r"\.(\d{1,5})(?=\D|$)", lambda m: "." + m.group(1).ljust(6, "0"), iso)
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        return None


def _tag(tags: Mapping[str, str], keys: Sequence[str]) -> str | None:
    upper = {k.upper(): v for k, v in tags.items()}
    for key in keys:
        value = upper.get(key)
        if value and value.strip():
            return value.strip()
    return None


def _acquired_from_tags(tags: Mapping[str, str]) -> datetime | None:
    upper = {k.upper(): v for k, v in tags.items()}
    for key in _DATE_TAGS:
        if key in upper:
            parsed = parse_datetime(upper[key])
            if parsed is not None:
                return parsed
            logger.debug("tag %s=%r is not a date/time I can parse", key, upper[key])
    return None


def _sensor_from_tags(tags: Mapping[str, str]) -> str | None:
    return _tag(tags, _SENSOR_TAGS)


# ------------------------------------------------------------------------------------------ public API


def read_geotiff(
    path: str | os.PathLike,
    *,
    bands: Bands = None,
    stretch: Stretch = "auto",
    percentiles: tuple[float, float] = (2.0, 98.0),
    nodata: float | None = None,
    allow_gray: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Raster:
    """Read a whole raster scene into an 8-bit image with its validity mask and georeference.

    Args:
        path: a GeoTIFF (or any raster GDAL reads).
        bands: a preset name (``"sentinel2-rgb"``, ``"landsat8-false-color"``, ... see
            :data:`geovl.io.sensors.SENSOR_PRESETS`), a sequence of 1-based band indexes (rasterio convention)
            and/or band names matched against the band descriptions, or None for bands 1, 2, 3.
        stretch: see :data:`Stretch`; the default keeps uint8 data and percentile-stretches anything else.
        percentiles: ``(low, high)`` percentiles for the percentile stretch, in percent.
        nodata: a nodata value overriding the file's; pixels where all selected bands equal it are invalid.
        allow_gray: with ``bands=None``, replicate a single-band file to RGB instead of raising.
        max_pixels: refuse scenes with more pixels (width x height); read those with
            :class:`geovl.io.chips.ChipReader`. None disables the check.

    Raises:
        FileNotFoundError, EmptyImageError, NotAnImageError, TruncatedImageError,
        BandCountError (fewer bands than requested or than the preset needs), DecompressionBombError,
        ValueError (bad arguments), MissingDependencyError (rasterio missing).
    """
    with open_raster(path) as ds:
        scene = scene_info(ds, bands, nodata, allow_gray)
        pixels = scene.width * scene.height
        if max_pixels is not None and pixels > max_pixels:
            raise DecompressionBombError(
                scene.path,
                f"{scene.width}x{scene.height} = {pixels} pixels exceeds the limit of {max_pixels}; read "
                "large scenes window by window with geovl.io.chips.ChipReader, or raise max_pixels",
            )
        checked = check_stretch(stretch, scene.dtype, len(scene.bands), scene.path)
        data, valid = read_window(ds, scene)
    limits = stretch_limits(checked, data, valid, percentiles)
    image = to_image(data, valid, limits)
    geo = georeference(scene.crs, scene.transform, scene.width, scene.height)
    return Raster(
        image=image,
        valid=valid,
        crs=scene.crs_string,
        transform=affine_tuple(scene.transform),
        bounds=geo.bounds,
        lonlat_bounds=geo.lonlat_bounds,
        footprint=geo.footprint,
        gsd=geo.gsd,
        acquired=scene.acquired,
        sensor=scene.sensor,
        tags=scene.tags,
        bands=scene.bands,
        limits=limits,
        path=scene.path,
    )
