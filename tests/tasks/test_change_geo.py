"""GeoTIFF pairs for change captioning: alignment (shifted grid, another CRS, 16-bit multispectral), validity, chips
and their transforms, heat-map GeoTIFFs and the scene mosaic, overlays, and describing a pair with a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.models.change_captioner import load_change_captioner
from geovl.tasks.change_captioning import ChangeCaptioningPipeline
from geovl.tasks.change_captioning.geo import (
    OVERLAY_RED,
    align_pair,
    describe_geotiff_pair,
    heatmap_mosaic,
    heatmap_overlay,
    is_georeferenced,
    pair_chips,
    upsample_heatmap,
    write_heatmap,
)
from tests.change_fixtures import TinyChangeCaptioner, make_tiny_change_captioner

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import Resampling, calculate_default_transform, reproject  # noqa: E402

UTM = "EPSG:32633"
X0, Y0, PIXEL = 500000.0, 4000000.0, 10.0
SIZE = 96
SQUARE = (40, 30, 16)  # row, col, side of the bright square in the before scene
DR, DC = 19, 23  # the after grid starts this many before-pixels south and east


def world(size: int = 120) -> np.ndarray:
    """(3, size, size) uint8 ground: dark texture with a bright square at SQUARE (before-scene pixels)."""
    data = np.random.default_rng(0).integers(20, 60, (3, size, size), dtype=np.uint8)
    r, c, s = SQUARE
    data[:, r:r + s, c:c + s] = 250
    return data


def write(path: Path, data: np.ndarray, transform: object, crs: str | None = UTM,
          nodata: float | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
    return path


def before_scene(tmp_path: Path, nodata_block: bool = False) -> Path:
    data = world()[:, :SIZE, :SIZE].copy()
    if nodata_block:
        data[:, :32, :32] = 0
    return write(tmp_path / "before.tif", data, from_origin(X0, Y0, PIXEL, PIXEL), nodata=0 if nodata_block else None)


def shifted_after(tmp_path: Path) -> Path:
    """The same ground on a grid DC pixels east and DR south: after pixel (i, j) is before pixel (i + DR, j + DC)."""
    data = world()[:, DR:DR + SIZE, DC:DC + SIZE].copy()
    return write(tmp_path / "after_shifted.tif", data, from_origin(X0 + DC * PIXEL, Y0 - DR * PIXEL, PIXEL, PIXEL))


def lonlat_after_16bit(tmp_path: Path) -> Path:
    """The before ground warped to EPSG:4326, as 4 uint16 bands (a 16-bit multispectral file)."""
    src = world()[:, :SIZE, :SIZE].astype(np.uint16) * 12
    src_transform = from_origin(X0, Y0, PIXEL, PIXEL)
    bounds = (X0, Y0 - SIZE * PIXEL, X0 + SIZE * PIXEL, Y0)
    transform, width, height = calculate_default_transform(UTM, "EPSG:4326", SIZE, SIZE, *bounds)
    dest = np.zeros((4, height, width), np.uint16)
    for band in range(4):
        reproject(src[min(band, 2)], dest[band], src_transform=src_transform, src_crs=UTM, dst_transform=transform,
                  dst_crs="EPSG:4326", resampling=Resampling.nearest)
    return write(tmp_path / "after_lonlat.tif", dest, transform, crs="EPSG:4326", nodata=0)


def bright(image: np.ndarray) -> np.ndarray:
    return np.asarray(image.min(axis=2) > 200)


def square_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    r, c, s = SQUARE
    mask[r:r + s, c:c + s] = True
    return mask


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyChangeCaptioner:
    return make_tiny_change_captioner(tmp_path_factory.mktemp("change"), threshold=0.0)


# ---------------------------------------------------------------- alignment


def test_a_shifted_grid_is_aligned_pixel_for_pixel(tmp_path: Path) -> None:
    before, after = before_scene(tmp_path), shifted_after(tmp_path)
    with rasterio.open(after) as ds:
        raw = ds.read().transpose(1, 2, 0)
    assert not bright(raw)[square_mask()].any()  # in the after file the square sits elsewhere
    pair = align_pair(before, after)
    assert pair.reprojected and pair.crs == UTM and pair.shape == (SIZE, SIZE)
    assert pair.transform == (PIXEL, 0.0, X0, 0.0, -PIXEL, Y0)
    np.testing.assert_array_equal(bright(pair.before), square_mask())
    np.testing.assert_array_equal(bright(pair.after), square_mask())
    # the after raster covers before rows DR.. and columns DC.. only
    assert not pair.after_valid[:DR].any() and not pair.after_valid[:, :DC].any()
    assert pair.after_valid[DR:, DC:].all() and pair.before_valid.all()
    assert (pair.after[~pair.after_valid] == 0).all()
    valid = pair.valid
    assert np.abs(pair.after[valid].astype(int) - pair.before[valid].astype(int)).max() <= 1
    assert pair.overlap_fraction == pytest.approx((SIZE - DR) * (SIZE - DC) / SIZE**2)


def test_another_crs_and_16_bit_bands_are_reprojected_and_stretched(tmp_path: Path) -> None:
    before, after = before_scene(tmp_path), lonlat_after_16bit(tmp_path)
    assert is_georeferenced(after)
    pair = align_pair(before, after)
    assert pair.after.dtype == np.uint8 and pair.after.shape == (SIZE, SIZE, 3)
    hit, truth = bright(pair.after), square_mask()
    iou = (hit & truth).sum() / (hit | truth).sum()
    assert iou > 0.8, iou
    assert pair.valid.mean() > 0.95
    nearest = align_pair(before, after, resampling="nearest")
    assert ((bright(nearest.after) & truth).sum() / (bright(nearest.after) | truth).sum()) > 0.8


def test_bad_inputs_are_refused_with_the_file_named(tmp_path: Path) -> None:
    before = before_scene(tmp_path)
    plain = write(tmp_path / "plain.tif", world()[:, :SIZE, :SIZE].copy(), from_origin(0, 0, 1, -1), crs=None)
    with pytest.raises(ValueError, match=r"plain\.tif: no CRS"):
        align_pair(before, plain)
    far = write(tmp_path / "far.tif", world()[:, :SIZE, :SIZE].copy(), from_origin(X0 + 50_000, Y0, PIXEL, PIXEL))
    with pytest.raises(ValueError, match="do not overlap"):
        align_pair(before, far)
    with pytest.raises(ValueError, match="unknown resampling"):
        align_pair(before, shifted_after(tmp_path), resampling="smooth")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        align_pair(before, empty)
    assert is_georeferenced(before) and not is_georeferenced(plain) and not is_georeferenced(empty)
    png = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(png)
    assert not is_georeferenced(png) and not is_georeferenced(tmp_path / "missing.tif")


# ---------------------------------------------------------------- chips


def test_chips_share_windows_and_carry_their_own_transform(tmp_path: Path) -> None:
    pair = align_pair(before_scene(tmp_path), shifted_after(tmp_path))
    chips = pair_chips(pair, 32)
    assert chips.grid == (3, 3) and len(chips) == 9 and chips.skipped == []
    chip = next(c for c in chips if (c.row, c.col) == (1, 2))
    assert chip.window == (64, 32, 32, 32) and chip.chip_id == "r1_c2"
    assert chip.transform == (PIXEL, 0.0, X0 + 64 * PIXEL, 0.0, -PIXEL, Y0 - 32 * PIXEL)
    np.testing.assert_array_equal(chip.before, pair.before[32:64, 64:96])
    np.testing.assert_array_equal(chip.after, pair.after[32:64, 64:96])
    corner = chips[0]
    # pixels the after raster does not cover are blanked in both dates
    assert not corner.valid[:DR].any() and (corner.before[:DR] == 0).all() and pair.before[:DR, :32].any()
    assert corner.valid_fraction == pytest.approx((32 - DR) * (32 - DC) / 32**2)
    strided = pair_chips(pair, 32, stride=16)
    assert strided.grid == (5, 5) and strided[-1].window == (64, 64, 32, 32)
    with pytest.raises(ValueError, match="stride"):
        pair_chips(pair, 32, stride=40)
    with pytest.raises(ValueError, match="chip_size"):
        pair_chips(pair, 0)


def test_chips_without_valid_pixels_in_both_dates_are_skipped_and_small_scenes_padded(tmp_path: Path) -> None:
    pair = align_pair(before_scene(tmp_path, nodata_block=True), shifted_after(tmp_path))
    chips = pair_chips(pair, 32)
    assert chips.skipped == [(0, 0)] and len(chips) == 8
    assert pair_chips(pair, 32, min_valid_fraction=0.95).skipped == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0)]
    small = write(tmp_path / "small.tif", world()[:, :20, :20].copy(), from_origin(X0, Y0, PIXEL, PIXEL))
    padded = pair_chips(align_pair(small, small), 32)
    assert len(padded) == 1 and padded[0].window == (0, 0, 32, 32)
    assert padded[0].valid[:20, :20].all() and not padded[0].valid[20:].any()


# ---------------------------------------------------------------- heat maps


def test_a_heatmap_geotiff_is_upsampled_onto_the_chip_grid(tmp_path: Path) -> None:
    pair = align_pair(before_scene(tmp_path), shifted_after(tmp_path))
    chip = pair_chips(pair, 32)[4]
    heat = (np.arange(16, dtype=np.float32).reshape(4, 4) / 15.0)
    path = write_heatmap(tmp_path / "out" / "chip.tif", heat, chip.transform, pair.crs, (32, 32))
    with rasterio.open(path) as ds:
        values = ds.read(1)
        assert ds.dtypes[0] == "float32" and ds.shape == (32, 32) and ds.crs.to_string() == UTM
        assert tuple(ds.transform)[:6] == chip.transform
    assert values[0, 0] == pytest.approx(heat[0, 0]) and values[31, 31] == pytest.approx(heat[3, 3])
    assert values[0, 31] == pytest.approx(heat[0, 3]) and values[31, 0] == pytest.approx(heat[3, 0])
    # heat is linear in (row, col), so bilinear upsampling (cell centres aligned) reproduces it inside the grid
    centres = (np.arange(4, 28) + 0.5) / 8 - 0.5
    np.testing.assert_allclose(values[4:28, 4:28], (4 * centres[:, None] + centres[None, :]) / 15, atol=1e-5)
    assert not list(path.parent.glob(".*"))  # atomic: no temporary left behind
    np.testing.assert_array_equal(upsample_heatmap(heat, (4, 4)), heat)
    with pytest.raises(ValueError, match="heat map"):
        upsample_heatmap(np.zeros(4), (8, 8))


def test_the_scene_mosaic_places_each_chip_at_its_window(tmp_path: Path) -> None:
    pair = align_pair(before_scene(tmp_path), shifted_after(tmp_path))
    chips = pair_chips(pair, 32)
    mosaic = heatmap_mosaic(pair.shape, chips, [np.full((4, 4), i / 10, np.float32) for i in range(len(chips))])
    for i, chip in enumerate(chips):
        col, row = chip.window[:2]
        block = mosaic[row:row + 32, col:col + 32]
        np.testing.assert_allclose(block[chip.valid], i / 10, atol=1e-6)
    assert np.isnan(mosaic[:DR]).all() and not np.isnan(mosaic[DR:, DC:]).any()
    path = write_heatmap(tmp_path / "mosaic.tif", mosaic, pair.transform, pair.crs, pair.shape)
    with rasterio.open(path) as ds:
        assert ds.shape == pair.shape and tuple(ds.transform)[:6] == pair.transform and np.isnan(ds.nodata)
        np.testing.assert_array_equal(np.isnan(ds.read(1)), np.isnan(mosaic))
    overlapping = pair_chips(pair, 32, stride=16)
    averaged = heatmap_mosaic(pair.shape, overlapping, [np.full((4, 4), float(c.col), np.float32)
                                                        for c in overlapping])
    assert averaged[50, 40] == pytest.approx(1.5)  # columns 32..47 are covered by chip columns 1 and 2


def test_the_overlay_tints_in_proportion_to_the_probability() -> None:
    image = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(heatmap_overlay(image, np.zeros((4, 4)))), image)
    full = np.asarray(heatmap_overlay(image, np.ones((4, 4)), alpha=1.0))
    assert (full == np.array(OVERLAY_RED, np.uint8)).all()
    boxed = np.asarray(heatmap_overlay(image, np.ones((2, 2)), alpha=1.0, box=(10, 0, 50, 40)))
    np.testing.assert_array_equal(boxed[:, :10], image[:, :10])
    assert (boxed[:, 10:50] == np.array(OVERLAY_RED, np.uint8)).all()


# ---------------------------------------------------------------- describing a pair


def test_describe_a_geotiff_pair_chip_by_chip(tiny: TinyChangeCaptioner, tmp_path: Path) -> None:
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    pipeline = ChangeCaptioningPipeline(model, workers=0)
    out = describe_geotiff_pair(pipeline, before_scene(tmp_path, nodata_block=True), shifted_after(tmp_path))
    assert model.image_size == 32 and out.grid == (3, 3) and out.skipped == [(0, 0)]
    assert len(out.chips) == len(out.results) == 8 and out.changed == 8  # threshold 0: every chip is changed
    direct = pipeline([c.before for c in out.chips], [c.after for c in out.chips])
    assert [r.caption for r in out.results] == direct.captions
    rows = out.rows()
    assert [r["chip_id"] for r in rows] == [f"r{r}_c{c}" for r in range(3) for c in range(3) if (r, c) != (0, 0)]
    assert rows[0]["grid"] == [4, 4] and len(rows[0]["heatmap"]) == 16 and rows[0]["crs"] == UTM
    assert rows[0]["transform"] == [PIXEL, 0.0, X0 + 32 * PIXEL, 0.0, -PIXEL, Y0]
    lons = [p[0] for p in rows[0]["footprint"]]
    assert 14.9 < min(lons) < max(lons) < 15.1  # UTM zone 33 is centred on 15 E
    path = out.write_mosaic(tmp_path / "mosaic.tif")
    with rasterio.open(path) as ds:
        values = ds.read(1)
        assert ds.shape == (SIZE, SIZE) and tuple(ds.transform)[:6] == out.aligned.transform
    assert np.isnan(values[:32, :32]).all() and np.nanmin(values) >= 0.0 and np.nanmax(values) <= 1.0
