"""GeoTIFF pairs for change captioning: align the after scene onto the before scene, cut both into the same chips,
describe every chip pair, and write the change heat maps back as GeoTIFFs.

Rules:

* the *before* raster defines the grid (CRS, transform, shape); the *after* raster is reprojected onto it
  (:func:`rasterio.warp.reproject`, bilinear by default, its validity carried as an alpha band so that nodata never
  bleeds into valid pixels). Both are read through :func:`geovl.io.geotiff.read_geotiff` (bands 1-3 or a preset,
  16-bit and multispectral data percentile-stretched to RGB uint8, a single band replicated to gray RGB);
* a raster without a CRS or geotransform, rasters that do not overlap, and a pair with no pixel valid in both dates
  are refused with a ``ValueError`` naming the file(s);
* chips start at multiples of ``stride`` (default ``chip_size``); the last row / column is shifted back to end at the
  scene edge (:func:`geovl.io.chips.chip_offsets`, ``edge="shift"``), a scene smaller than a chip is padded. In a
  chip, pixels not valid in *both* dates are 0 in both (so that nodata never reads as change); chips with no pixel
  valid in both dates are skipped and listed in :attr:`PairChips.skipped`;
* a heat map (the model's (h, w) grid of P(changed) over a chip) is upsampled bilinearly to the chip's pixels; the
  scene mosaic averages overlapping chips and is NaN (the GeoTIFF's nodata) where no chip or no valid pair covers
  a pixel. Heat-map GeoTIFFs are float32, single band, written atomically (:func:`geovl.io.geotiff_writer.
  write_geotiff`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geovl.io.chips import EdgeMode, chip_offsets
from geovl.io.geotiff import Bands, Raster, affine_tuple, apply_affine, georeference, open_raster, read_geotiff
from geovl.io.geotiff_writer import write_geotiff
from geovl.io.images import DEFAULT_MAX_PIXELS, ImageSource
from geovl.models.change_captioner import ChangeResult
from geovl.tasks.change_captioning.pipeline import ChangeCaptioningPipeline

__all__ = ["AlignedPair", "GeoPairResult", "PairChip", "PairChips", "align_pair", "describe_geotiff_pair",
           "heatmap_mosaic", "heatmap_overlay", "is_georeferenced", "pair_chips", "upsample_heatmap",
           "write_heatmap"]

logger = logging.getLogger(__name__)

Transform = tuple[float, float, float, float, float, float]
_IDENTITY: Transform = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
#: The colour (RGB) changed pixels are tinted with in :func:`heatmap_overlay`.
OVERLAY_RED = (255, 32, 32)


def is_georeferenced(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a raster GDAL reads with a CRS and a geotransform (False for anything else, including
    unreadable files and a missing rasterio)."""
    try:
        with open_raster(path) as ds:
            return ds.crs is not None and affine_tuple(ds.transform) != _IDENTITY
    except (ImportError, ValueError, OSError):  # unreadable (the ImageReadError family), missing, no rasterio
        return False


# ---------------------------------------------------------------- alignment


@dataclass(frozen=True)
class AlignedPair:
    """Two dates on one pixel grid (the before raster's).

    Attributes:
        before, after: (H, W, 3) uint8 images; invalid pixels are 0.
        before_valid, after_valid: (H, W) bool validity of each date (the after one as reprojected).
        transform: affine ``(a, b, c, d, e, f)`` of the grid (the before raster's).
        crs: the grid's CRS (``"EPSG:<code>"`` or WKT).
        before_path, after_path: the files read.
        reprojected: whether the after raster had to be warped (False when both share the grid).
    """

    before: np.ndarray
    after: np.ndarray
    before_valid: np.ndarray
    after_valid: np.ndarray
    transform: Transform
    crs: str
    before_path: str = ""
    after_path: str = ""
    reprojected: bool = True

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the grid."""
        return int(self.before.shape[0]), int(self.before.shape[1])

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: valid in both dates."""
        return np.asarray(self.before_valid & self.after_valid)

    @property
    def overlap_fraction(self) -> float:
        """Share of the grid valid in both dates."""
        return float(self.valid.mean())


def _read(path: str | os.PathLike[str], what: str, bands: Bands, nodata: float | None,
          max_pixels: int | None) -> Raster:
    raster = read_geotiff(path, bands=bands, nodata=nodata, allow_gray=True, max_pixels=max_pixels)
    if raster.crs is None:
        raise ValueError(f"{what} {path}: no CRS; a GeoTIFF pair needs two georeferenced rasters (or compare them as "
                         "plain images)")
    if raster.transform == _IDENTITY:
        raise ValueError(f"{what} {path}: no geotransform (pixel coordinates only); it cannot be aligned")
    return raster


def _resampling(name: str) -> Any:
    from rasterio.enums import Resampling

    try:
        return Resampling[name]
    except KeyError:
        known = ", ".join(r.name for r in Resampling if r.value < 8)
        raise ValueError(f"unknown resampling {name!r}; use one of {known}") from None


def _check_overlap(before: Raster, after: Raster) -> None:
    from rasterio.warp import transform_bounds

    try:
        left, bottom, right, top = transform_bounds(after.crs, before.crs, *after.bounds, densify_pts=21)
    except Exception as exc:  # PROJ cannot map one CRS onto the other
        raise ValueError(f"{after.path} ({after.crs}) cannot be mapped onto {before.path}'s CRS {before.crs}: "
                         f"{exc}") from exc
    b_left, b_bottom, b_right, b_top = before.bounds
    if min(right, b_right) <= max(left, b_left) or min(top, b_top) <= max(bottom, b_bottom):
        raise ValueError(f"{before.path} and {after.path} do not overlap: the after raster covers "
                         f"({left:.6g}, {bottom:.6g}, {right:.6g}, {top:.6g}) and the before raster "
                         f"{tuple(round(v, 6) for v in before.bounds)} in {before.crs}")


def _warp_after(before: Raster, after: Raster, resampling: str) -> tuple[np.ndarray, np.ndarray]:
    from affine import Affine  # a rasterio dependency
    from rasterio.warp import reproject

    height, width = before.image.shape[:2]
    alpha = np.where(after.valid, 255, 0).astype(np.uint8)
    source = np.concatenate([after.image.transpose(2, 0, 1), alpha[None]]).astype(np.uint8)
    dest = np.zeros((4, height, width), np.uint8)
    reproject(source, dest, src_transform=Affine(*after.transform), src_crs=after.crs,
              dst_transform=Affine(*before.transform), dst_crs=before.crs, resampling=_resampling(resampling),
              src_alpha=4, dst_alpha=4)
    valid = dest[3] > 127
    image = np.ascontiguousarray(dest[:3].transpose(1, 2, 0))
    image[~valid] = 0
    return image, valid


def align_pair(before: str | os.PathLike[str], after: str | os.PathLike[str], *, resampling: str = "bilinear",
               bands: Bands = None, nodata: float | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> AlignedPair:
    """Read two georeferenced rasters of the same area and reproject ``after`` onto ``before``'s grid.

    Args:
        before, after: GeoTIFFs (or other rasters GDAL reads) with a CRS and a geotransform.
        resampling: a :class:`rasterio.enums.Resampling` name for the after raster (``bilinear``, ``nearest``,
            ``cubic``, ...).
        bands, nodata, max_pixels: as for :func:`geovl.io.geotiff.read_geotiff` (applied to both dates).

    Raises:
        ValueError: a raster without CRS or geotransform, rasters that do not overlap, no pixel valid in both dates,
        an unknown resampling; and :func:`~geovl.io.geotiff.read_geotiff`'s errors for unreadable files.
    """
    _resampling(resampling)
    first = _read(before, "before raster", bands, nodata, max_pixels)
    second = _read(after, "after raster", bands, nodata, max_pixels)
    _check_overlap(first, second)
    same_grid = (first.crs == second.crs and first.transform == second.transform
                 and first.image.shape == second.image.shape)
    if same_grid:
        image, valid = second.image, second.valid
    else:
        image, valid = _warp_after(first, second, resampling)
    pair = AlignedPair(first.image, image, first.valid, valid, first.transform, first.crs or "", str(before),
                       str(after), reprojected=not same_grid)
    if not pair.valid.any():
        raise ValueError(f"{before} and {after} overlap, but no pixel is valid (not nodata) in both dates")
    return pair


# ---------------------------------------------------------------- chips


@dataclass(frozen=True)
class PairChip:
    """One chip of an aligned pair.

    Attributes:
        row, col: position in the chip grid.
        window: ``(col_off, row_off, width, height)`` in grid pixels (a padded chip extends past the grid).
        before, after: (S, S, 3) uint8; pixels not valid in both dates (and padding) are 0 in both.
        valid: (S, S) bool, valid in both dates.
        transform: affine 6-tuple of the chip (its pixel (0, 0) corner is the window's corner).
        valid_fraction: share of the chip valid in both dates.
    """

    row: int
    col: int
    window: tuple[int, int, int, int]
    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray
    transform: Transform
    valid_fraction: float

    @property
    def chip_id(self) -> str:
        return f"r{self.row}_c{self.col}"


class PairChips(list[PairChip]):
    """The chips :func:`pair_chips` kept, with ``skipped``: the ``(row, col)`` grid cells left out because no pixel
    in them is valid in both dates (or fewer than ``min_valid_fraction``), and ``grid``: (rows, cols)."""

    def __init__(self, chips: Sequence[PairChip] = (), skipped: Sequence[tuple[int, int]] = (),
                 grid: tuple[int, int] = (0, 0)) -> None:
        super().__init__(chips)
        self.skipped = list(skipped)
        self.grid = grid


def pair_chips(aligned: AlignedPair, chip_size: int, stride: int | None = None, *, edge: EdgeMode = "shift",
               min_valid_fraction: float = 0.0) -> PairChips:
    """Cut both dates of ``aligned`` into the same ``chip_size`` chips (see the module rules).

    Raises:
        ValueError: a chip size or stride that is not a positive number of pixels, a stride above the chip size,
        a fraction outside [0, 1].
    """
    stride = chip_size if stride is None else stride
    if isinstance(chip_size, bool) or not isinstance(chip_size, int) or chip_size <= 0:
        raise ValueError(f"chip_size must be a positive number of pixels, got {chip_size!r}")
    if isinstance(stride, bool) or not isinstance(stride, int) or not 0 < stride <= chip_size:
        raise ValueError(f"stride must be a number of pixels in [1, chip_size={chip_size}], got {stride!r}")
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ValueError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
    height, width = aligned.shape
    rows, cols = chip_offsets(height, chip_size, stride, edge), chip_offsets(width, chip_size, stride, edge)
    both = aligned.valid
    a, b, _, d, e, _ = aligned.transform
    out = PairChips(grid=(len(rows), len(cols)))
    for r, row_off in enumerate(rows):
        for c, col_off in enumerate(cols):
            h, w = min(chip_size, height - row_off), min(chip_size, width - col_off)
            valid = np.zeros((chip_size, chip_size), bool)
            valid[:h, :w] = both[row_off:row_off + h, col_off:col_off + w]
            fraction = float(valid.mean())
            if fraction == 0.0 or fraction < min_valid_fraction:
                out.skipped.append((r, c))
                continue
            images = []
            for source in (aligned.before, aligned.after):
                chip = np.zeros((chip_size, chip_size, 3), np.uint8)
                chip[:h, :w] = source[row_off:row_off + h, col_off:col_off + w]
                chip[~valid] = 0
                images.append(chip)
            x0, y0 = apply_affine(aligned.transform, col_off, row_off)
            out.append(PairChip(r, c, (col_off, row_off, chip_size, chip_size), images[0], images[1], valid,
                                (a, b, x0, d, e, y0), fraction))
    if out.skipped:
        logger.info("%s / %s: skipped %d of %d chips with no pixel valid in both dates", aligned.before_path,
                    aligned.after_path, len(out.skipped), len(rows) * len(cols))
    return out


# ---------------------------------------------------------------- heat maps


def upsample_heatmap(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (h, w) heat map resized bilinearly (pixel centres aligned) to ``shape`` = (H, W), float32."""
    from PIL import Image

    values = np.asarray(heatmap, dtype=np.float32)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"a heat map is a non-empty (h, w) array, got shape {values.shape}")
    height, width = shape
    if values.shape == (height, width):
        return values.copy()
    resized = Image.fromarray(np.ascontiguousarray(values), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def heatmap_mosaic(shape: tuple[int, int], chips: Sequence[PairChip], heatmaps: Sequence[np.ndarray]) -> np.ndarray:
    """One (H, W) float32 heat map of a scene from its chips' heat maps (each upsampled to its chip and placed at its
    window; overlaps averaged); NaN where no chip reaches or the pair is not valid."""
    if len(chips) != len(heatmaps):
        raise ValueError(f"{len(chips)} chips but {len(heatmaps)} heat maps")
    height, width = shape
    total = np.zeros((height, width), np.float64)
    count = np.zeros((height, width), np.int32)
    for chip, heat in zip(chips, heatmaps, strict=True):
        col_off, row_off, w, h = chip.window
        up = upsample_heatmap(heat, (h, w))
        inside_h, inside_w = min(h, height - row_off), min(w, width - col_off)
        keep = chip.valid[:inside_h, :inside_w]
        total[row_off:row_off + inside_h, col_off:col_off + inside_w] += np.where(keep, up[:inside_h, :inside_w], 0)
        count[row_off:row_off + inside_h, col_off:col_off + inside_w] += keep
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def write_heatmap(path: str | os.PathLike[str], heatmap: np.ndarray, transform: Sequence[float], crs: Any,
                  shape: tuple[int, int], *, tags: dict[str, str] | None = None) -> Path:
    """Write a heat map as a float32 single-band GeoTIFF on the pixel grid ``shape`` = (H, W) that ``transform``
    locates (a chip's or a scene's), upsampled bilinearly when it is coarser; NaN is the nodata value."""
    values = upsample_heatmap(heatmap, shape)
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    meta = {"CONTENT": "P(changed) per pixel, geovl change captioner heat map", **(tags or {})}
    return write_geotiff(path, values[None], crs=crs, transform=(a, b, c, d, e, f), nodata=float("nan"), tags=meta,
                         descriptions=["change probability"])


def heatmap_overlay(image: ImageSource, heatmap: np.ndarray, *, alpha: float = 0.6,
                    box: Sequence[float] | None = None, cmap: str | None = None) -> Any:
    """The image with the heat map drawn over it: each pixel tinted red (or the ``cmap`` matplotlib colour of its
    value) in proportion to its P(changed) (an absolute scale: an unchanged pair's low probabilities leave the image
    nearly as it is). ``box`` = (left, top, right, bottom) is the part of the image the heat map covers (default: all
    of it); NaN cells are not drawn. Returns an RGB PIL image of the input's size."""
    from PIL import Image

    from geovl.io.loading import load_image

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if cmap is not None:
        from matplotlib import colormaps

        if cmap not in colormaps:
            raise ValueError(f"unknown matplotlib colormap {cmap!r}")
    picture = load_image(image)
    width, height = picture.size
    left, top, right, bottom = box or (0.0, 0.0, float(width), float(height))
    x0, y0 = max(0, round(left)), max(0, round(top))
    x1, y1 = min(width, max(x0 + 1, round(right))), min(height, max(y0 + 1, round(bottom)))
    heat = np.zeros((height, width), np.float32)
    heat[y0:y1, x0:x1] = upsample_heatmap(heatmap, (y1 - y0, x1 - x0))
    heat = np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0)
    weight = alpha * heat[..., None]
    colours = np.asarray(OVERLAY_RED, np.float32) if cmap is None else colormaps[cmap](heat)[..., :3] * 255.0
    rgb = np.asarray(picture, dtype=np.float32)
    blended = (1.0 - weight) * rgb + weight * colours
    return Image.fromarray(np.round(blended).astype(np.uint8))


# ---------------------------------------------------------------- describing a GeoTIFF pair


@dataclass
class GeoPairResult:
    """What :func:`describe_geotiff_pair` made of two GeoTIFFs: the aligned pair, the chips described (in grid
    order) with their results, the skipped grid cells and the chips the model could not read."""

    aligned: AlignedPair
    chips: list[PairChip]
    results: list[ChangeResult]
    skipped: list[tuple[int, int]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    grid: tuple[int, int] = (0, 0)

    @property
    def changed(self) -> int:
        """Chips judged changed."""
        return sum(r.changed for r in self.results)

    def mosaic(self) -> np.ndarray:
        """The scene's (H, W) heat map (:func:`heatmap_mosaic`)."""
        return heatmap_mosaic(self.aligned.shape, self.chips, [r.heatmap for r in self.results])

    def write_mosaic(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`mosaic` as a GeoTIFF covering the before scene."""
        pair = self.aligned
        return write_heatmap(path, self.mosaic(), pair.transform, pair.crs, pair.shape,
                             tags={"BEFORE": pair.before_path, "AFTER": pair.after_path})

    def rows(self) -> list[dict[str, Any]]:
        """One row per described chip: id, grid cell, window, transform, CRS, lon/lat footprint, valid fraction,
        caption, verdict, probability, heat map (row-major) and its grid."""
        from rasterio.crs import CRS

        crs = CRS.from_user_input(self.aligned.crs)
        rows = []
        for chip, result in zip(self.chips, self.results, strict=True):
            geo = georeference(crs, chip.transform, chip.window[2], chip.window[3])
            rows.append({"chip_id": chip.chip_id, "row": chip.row, "col": chip.col, "window": list(chip.window),
                         "transform": list(chip.transform), "crs": self.aligned.crs, "footprint": geo.footprint,
                         "valid_fraction": round(chip.valid_fraction, 6), **result_columns(result)})
        return rows


def result_columns(result: ChangeResult) -> dict[str, Any]:
    """A result as flat row columns: caption, changed, probability, heatmap (row-major list) and grid [h, w]."""
    data = result.to_dict()
    return {"caption": data["caption"], "changed": data["changed"], "probability": data["probability"],
            "heatmap": [round(float(v), 4) for row in data["heatmap"] for v in row],
            "grid": list(result.heatmap.shape)}


def describe_geotiff_pair(pipeline: ChangeCaptioningPipeline, before: str | os.PathLike[str],
                          after: str | os.PathLike[str], *, chip_size: int | None = None, stride: int | None = None,
                          resampling: str = "bilinear", bands: Bands = None, nodata: float | None = None,
                          min_valid_fraction: float = 0.0) -> GeoPairResult:
    """Align two GeoTIFFs (:func:`align_pair`), cut them into chips of ``chip_size`` pixels (default: the model's
    input size) and describe every chip pair with ``pipeline``."""
    size = pipeline.model.image_size if chip_size is None else chip_size
    aligned = align_pair(before, after, resampling=resampling, bands=bands, nodata=nodata)
    chips = pair_chips(aligned, size, stride, min_valid_fraction=min_valid_fraction)
    out = GeoPairResult(aligned, [], [], chips.skipped, grid=chips.grid)
    if not chips:
        return out
    described = pipeline([c.before for c in chips], [c.after for c in chips])
    out.chips = [chips[i] for i in described.kept]
    out.results = described.results
    out.failures = [(chips[i].chip_id, err) for i, err in described.failures]
    return out
