"""geovl.io: Pillow image decoding, GeoTIFF reading through rasterio, and windowed chip reading.

Every raster is written here, in tmp_path, with small seeded arrays. Bands are made distinguishable by giving
band ``k`` the constant value ``100 * k``; with the fixed stretch ``(0, 25500)`` it comes out as ``k`` in the
8-bit image, so a test can read off which band landed in which channel.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tracemalloc
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from geovl.io import (
    BandCountError,
    DecompressionBombError,
    EmptyImageError,
    NotAnImageError,
    TruncatedImageError,
    load_image,
    load_images,
)
from geovl.io.sensors import SENSOR_PRESETS, normalise_band_name, resolve_bands

try:
    import rasterio
    import rasterio.io
    import rasterio.shutil
    import rasterio.warp
    from affine import Affine
except ImportError:  # the Pillow tests still run without the geo extra
    rasterio = None

needs_rasterio = pytest.mark.skipif(rasterio is None, reason="rasterio (geovl[geo]) is not installed")

CODE_STRETCH = (0.0, 25500.0)  # value 100*k -> k
UTM = "EPSG:32633"
UTM_ORIGIN = (500_000.0, 5_000_000.0)  # x on the zone's central meridian (15 E)


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Any:
    """North-up transform (as rasterio.transform.from_origin, without affine 3's ``*`` deprecation warning)."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = UTM,
    transform: Any = None,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
    tags: dict[str, str] | None = None,
    **profile: Any,
) -> Path:
    """Write a CxHxW array as a GeoTIFF (UTM, 10 m pixels, unless told otherwise)."""
    count, height, width = data.shape
    if transform is None and crs is not None:
        transform = from_origin(*UTM_ORIGIN, 10, 10)
    opts: dict[str, Any] = {"driver": "GTiff", "width": width, "height": height, "count": count}
    opts.update(dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata, **profile)
    with rasterio.open(path, "w", **opts) as dst:
        dst.write(data)
        if descriptions:
            for i, name in enumerate(descriptions, start=1):
                dst.set_band_description(i, name)
        if tags:
            dst.update_tags(**tags)
    return path


def coded_bands(count: int, size: int = 8, dtype: type = np.uint16) -> np.ndarray:
    """``count`` constant bands, band k (1-based) = 100 * k."""
    return (np.arange(1, count + 1, dtype=np.float64)[:, None, None] * 100 * np.ones((1, size, size))).astype(dtype)


def channel_codes(image: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in image[0, 0])


def ramp(height: int, width: int, count: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1000, 9000, size=(count, height, width), dtype=np.uint16)


# ------------------------------------------------------------------------------------------ Pillow load_image


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (the pixel data is a stub)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, size=(size[1], size[0], len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr[:, :, 0] if len(mode) == 1 else arr, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def test_load_image_bad_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(EmptyImageError):
        load_image(empty)
    noise = tmp_path / "noise.png"
    noise.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(NotAnImageError):
        load_image(noise)
    for fmt in ("JPEG", "PNG"):
        data = _encoded(fmt)
        path = tmp_path / f"cut.{fmt.lower()}"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(TruncatedImageError):
            load_image(path)
    with pytest.raises(DecompressionBombError):
        load_image(_png_with_size(100_000, 100_000))
    with pytest.raises(DecompressionBombError, match="ChipReader"):
        load_image(_encoded("PNG"), max_pixels=1000)
    with pytest.raises(BandCountError, match="2 bands"):
        load_image(_encoded("PNG", mode="LA"))
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_load_images_skips_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(_encoded("PNG"))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(b"definitely not an image" * 10)
    images, kept, failures = load_images([empty, good, noise, good], on_error="skip")
    assert kept == [1, 3]
    assert [im.size for im in images] == [(64, 48), (64, 48)]
    assert [f.source for f in failures] == [str(empty), str(noise)]
    assert "0 bytes" in failures[0].error
    with pytest.raises(EmptyImageError):
        load_images([good, empty], on_error="raise")


# ------------------------------------------------------------------------------------------ band presets


def test_normalise_band_name() -> None:
    assert {normalise_band_name(n) for n in ("B4", "B04", "b4", "SR_B4", "band_4", "Band 4")} == {"B4"}
    assert normalise_band_name("B08A") == "B8A"
    assert normalise_band_name("Red") == "RED"
    assert normalise_band_name("near-infrared") == "NIR"


@pytest.mark.parametrize(
    ("preset", "count", "expected"),
    [
        ("sentinel2-rgb", 12, (4, 3, 2)),
        ("sentinel2-rgb", 13, (4, 3, 2)),
        ("sentinel2-rgb", 4, (3, 2, 1)),
        ("sentinel2-false-color", 12, (8, 4, 3)),
        ("sentinel2-false-color", 13, (8, 4, 3)),
        ("sentinel2-false-color", 4, (4, 3, 2)),
        ("landsat8-rgb", 7, (4, 3, 2)),
        ("landsat8-false-color", 11, (5, 4, 3)),
        ("naip-rgb", 3, (1, 2, 3)),
        ("naip-rgb", 4, (1, 2, 3)),
        ("naip-false-color", 4, (4, 1, 2)),
        ("planetscope-rgb", 4, (3, 2, 1)),
        ("planetscope-rgb", 8, (6, 4, 2)),
        ("planetscope-false-color", 4, (4, 3, 2)),
        ("rgb", 3, (1, 2, 3)),
        ("rgb", 6, (1, 2, 3)),
    ],
)
def test_presets_by_position(preset: str, count: int, expected: tuple[int, ...]) -> None:
    assert resolve_bands(preset, count) == expected


def test_preset_errors() -> None:
    with pytest.raises(BandCountError, match=r"sentinel2-rgb.*has 3"):
        resolve_bands("sentinel2-rgb", 3)
    with pytest.raises(BandCountError, match=r"naip-false-color.*has 3"):
        resolve_bands("naip-false-color", 3)
    with pytest.raises(ValueError, match="knows band orders"):
        resolve_bands("sentinel2-rgb", 5)
    with pytest.raises(ValueError, match="unknown band preset"):
        resolve_bands("sentinel3-rgb", 13)
    with pytest.raises(ValueError, match="1-based"):
        resolve_bands((0, 1, 2), 3)
    with pytest.raises(BandCountError):
        resolve_bands((1, 2, 5), 4)
    assert all(p.description for p in SENSOR_PRESETS.values())


# ------------------------------------------------------------------------------------------ read_geotiff


@needs_rasterio
def test_band_selection_by_index_and_name(tmp_path: Path) -> None:
    from geovl.io import read_geotiff

    path = write_tif(tmp_path / "four.tif", coded_bands(4))
    assert channel_codes(read_geotiff(path, bands=(4, 3, 2), stretch=CODE_STRETCH).image) == (4, 3, 2)
    assert channel_codes(read_geotiff(path, stretch=CODE_STRETCH).image) == (1, 2, 3)
    assert channel_codes(read_geotiff(path, bands="planetscope-rgb", stretch=CODE_STRETCH).image) == (3, 2, 1)
    assert read_geotiff(path, bands=(2,), stretch=CODE_STRETCH).image.shape == (8, 8, 1)
    assert channel_codes(read_geotiff(path, bands=(1, 2, 3, 4), stretch=CODE_STRETCH).image) == (1, 2, 3, 4)
    assert channel_codes(read_geotiff(path, bands=(2, 2, 2), stretch=CODE_STRETCH).image) == (2, 2, 2)
    with pytest.raises(BandCountError, match="band 5"):
        read_geotiff(path, bands=(5, 1, 2))
    with pytest.raises(BandCountError, match=r"sentinel2-rgb"):
        read_geotiff(write_tif(tmp_path / "three.tif", coded_bands(3)), bands="sentinel2-rgb")


@needs_rasterio
def test_sentinel2_presets_resolve_band_descriptions_first(tmp_path: Path) -> None:
    from geovl.io import read_geotiff

    # A 13-band stack in an unusual order (B8A last, then reversed) with ESA-style names: by position the
    # preset would pick the wrong bands, by name it must pick B4,B3,B2 / B8,B4,B3.
    names = [f"B{i:02d}" for i in range(1, 13)] + ["B8A"]
    names = names[::-1]
    path = write_tif(tmp_path / "s2.tif", coded_bands(13), descriptions=names)
    code = {normalise_band_name(n): k + 1 for k, n in enumerate(names)}
    rgb = read_geotiff(path, bands="sentinel2-rgb", stretch=CODE_STRETCH)
    assert channel_codes(rgb.image) == (code["B4"], code["B3"], code["B2"])
    assert rgb.bands == (code["B4"], code["B3"], code["B2"])
    assert rgb.sensor == "Sentinel-2"  # from the preset: the file has no sensor tag
    cir = read_geotiff(path, bands="sentinel2-false-color", stretch=CODE_STRETCH)
    assert channel_codes(cir.image) == (code["B8"], code["B4"], code["B3"])
    by_name = read_geotiff(path, bands=("B11", "B8A", 1), stretch=CODE_STRETCH)
    assert channel_codes(by_name.image) == (code["B11"], code["B8A"], 1)
    # Without descriptions the 13-band L1C order is assumed.
    plain = write_tif(tmp_path / "s2_plain.tif", coded_bands(13))
    assert channel_codes(read_geotiff(plain, bands="sentinel2-false-color", stretch=CODE_STRETCH).image) == (
        8,
        4,
        3,
    )


@needs_rasterio
def test_percentile_stretch_maps_percentiles_to_0_and_255(tmp_path: Path) -> None:
    from geovl.io import read_geotiff

    values = np.arange(100 * 100, dtype=np.uint16).reshape(1, 100, 100)
    data = np.concatenate([values, values * 2, values * 3])
    raster = read_geotiff(write_tif(tmp_path / "ramp.tif", data))
    for c in range(3):
        lo, hi = np.percentile(data[c], [2, 98])
        np.testing.assert_allclose(raster.limits[c], (lo, hi))
        band = data[c]
        assert np.all(raster.image[..., c][band <= lo] == 0)
        assert np.all(raster.image[..., c][band >= hi] == 255)
        expected = np.clip((band - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)
        assert np.abs(raster.image[..., c].astype(int) - expected).max() <= 1
    full = read_geotiff(tmp_path / "ramp.tif", percentiles=(0, 100))
    assert full.image[0, 0].tolist() == [0, 0, 0] and full.image[-1, -1].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="needs uint8"):
        read_geotiff(tmp_path / "ramp.tif", stretch=None)
    with pytest.raises(ValueError, match="max > min"):
        read_geotiff(tmp_path / "ramp.tif", stretch=(5, 5))


@needs_rasterio
def test_uint8_kept_and_float_with_nan(tmp_path: Path) -> None:
    from geovl.io import read_geotiff

    rgb = np.random.default_rng(2).integers(0, 256, size=(3, 20, 30), dtype=np.uint8)
    raster = read_geotiff(write_tif(tmp_path / "rgb.tif", rgb))
    np.testing.assert_array_equal(raster.image, rgb.transpose(1, 2, 0))
    assert raster.limits is None and raster.valid.all()
    floats = np.linspace(0.0, 1.0, 3 * 20 * 30, dtype=np.float32).reshape(3, 20, 30)
    floats[:, :5] = np.nan
    raster = read_geotiff(write_tif(tmp_path / "float.tif", floats))
    assert not raster.valid[:5].any() and raster.valid[5:].all()
    assert np.all(raster.image[:5] == 0)
    lo, hi = np.percentile(floats[0, 5:], [2, 98])
    np.testing.assert_allclose(raster.limits[0], (lo, hi), rtol=1e-6)


@needs_rasterio
def test_nodata_is_excluded_and_zeroed(tmp_path: Path) -> None:
    from geovl.io import read_geotiff

    data = ramp(40, 50)
    data[:, :10, :] = 0  # nodata region in every band
    data[0, 20, 20] = 0  # one band at the nodata value: the pixel stays valid
    raster = read_geotiff(write_tif(tmp_path / "nd.tif", data, nodata=0))
    assert not raster.valid[:10].any()
    assert raster.valid[10:].all()
    assert np.all(raster.image[:10] == 0)
    valid_values = data[:, 10:, :].reshape(3, -1)
    expected = np.percentile(valid_values, [2, 98], axis=1).T
    np.testing.assert_allclose(raster.limits, expected)
    assert raster.limits[:, 0].min() >= 1000

    # A user nodata value for a file that declares none.
    data = ramp(40, 50)
    data[:, -5:, -5:] = 65535
    raster = read_geotiff(write_tif(tmp_path / "user_nd.tif", data), nodata=65535)
    assert raster.valid.sum() == 40 * 50 - 25 and not raster.valid[-5:, -5:].any()
    assert raster.limits[:, 1].max() < 9000

    # An alpha band masks pixels too.
    rgba = np.full((4, 16, 16), 120, dtype=np.uint8)
    rgba[3] = 255
    rgba[3, :, :4] = 0
    raster = read_geotiff(write_tif(tmp_path / "rgba.tif", rgba, photometric="RGB", alpha="YES"))
    assert not raster.valid[:, :4].any() and raster.valid[:, 4:].all()
    assert np.all(raster.image[:, :4] == 0) and np.all(raster.image[:, 4:] == 120)


@needs_rasterio
def test_georeference_projected_utm(tmp_path: Path) -> None:
    from geovl.io import read_geotiff

    raster = read_geotiff(write_tif(tmp_path / "utm.tif", ramp(100, 200)))
    x0, y0 = UTM_ORIGIN
    assert raster.crs == UTM
    assert raster.transform == (10.0, 0.0, x0, 0.0, -10.0, y0)
    assert raster.bounds == (x0, y0 - 1000, x0 + 2000, y0)
    assert raster.gsd == pytest.approx(10.0)
    xs = [x0, x0 + 2000, x0 + 2000, x0]
    ys = [y0, y0, y0 - 1000, y0 - 1000]
    lons, lats = rasterio.warp.transform(UTM, "EPSG:4326", xs, ys)
    expected = [(lo, la) for lo, la in zip(lons, lats, strict=True)]
    assert raster.footprint is not None and raster.lonlat_bounds is not None
    np.testing.assert_allclose(raster.footprint[:4], expected, atol=1e-9)
    assert raster.footprint[0] == raster.footprint[-1]
    assert raster.footprint[0][0] == pytest.approx(15.0)  # x = 500 km is the central meridian of zone 33
    west, south, east, north = raster.lonlat_bounds
    assert west <= min(lons) + 1e-9 and east >= max(lons) - 1e-9
    assert south <= min(lats) + 1e-9 and north >= max(lats) - 1e-9
    assert east - west < 0.03 and north - south < 0.01  # 2 km x 1 km at 45 N


@needs_rasterio
def test_georeference_geographic(tmp_path: Path) -> None:
    from geovl.io import read_geotiff

    transform = from_origin(10.0, 50.0, 0.001, 0.001)
    raster = read_geotiff(write_tif(tmp_path / "wgs84.tif", ramp(100, 100), crs="EPSG:4326", transform=transform))
    assert raster.crs == "EPSG:4326"
    np.testing.assert_allclose(raster.bounds, (10.0, 49.9, 10.1, 50.0))
    np.testing.assert_allclose(raster.lonlat_bounds, (10.0, 49.9, 10.1, 50.0))
    # 0.001 deg is ~111 m north-south and ~71.6 m east-west at 49.95 N; the GSD is their geometric mean.
    assert raster.gsd == pytest.approx(math.sqrt(111.2 * 111.2 * math.cos(math.radians(49.95))), rel=5e-3)


@needs_rasterio
def test_acquisition_time_and_sensor_from_tags(tmp_path: Path) -> None:
    from geovl.io import read_geotiff
    from geovl.io.geotiff import parse_datetime

    tiff_dt = write_tif(tmp_path / "dt.tif", ramp(8, 8), tags={"TIFFTAG_DATETIME": "2021:06:01 10:30:00"})
    raster = read_geotiff(tiff_dt)
    assert raster.acquired == datetime(2021, 6, 1, 10, 30)
    assert raster.tags["TIFFTAG_DATETIME"] == "2021:06:01 10:30:00"
    assert raster.sensor is None
    tagged = write_tif(
        tmp_path / "acq.tif",
        ramp(8, 8),
        tags={
            "TIFFTAG_DATETIME": "2023:01:01 00:00:00",
            "SENSING_TIME": "2020-05-04T03:02:01.123Z",
            "SPACECRAFT_NAME": "Sentinel-2A",
        },
    )
    raster = read_geotiff(tagged, bands="naip-rgb")  # the tag wins over the preset's sensor
    assert raster.acquired == datetime(2020, 5, 4, 3, 2, 1, 123000, tzinfo=timezone.utc)
    assert raster.sensor == "Sentinel-2A"
    assert parse_datetime("20200504") == datetime(2020, 5, 4)
    assert parse_datetime("2020-05-04") == datetime(2020, 5, 4)
    assert parse_datetime("yesterday") is None


@needs_rasterio
def test_gray_and_two_band_files(tmp_path: Path) -> None:
    from geovl.io import read_geotiff

    one = write_tif(tmp_path / "one.tif", ramp(10, 10, count=1))
    with pytest.raises(BandCountError, match="allow_gray"):
        read_geotiff(one)
    gray = read_geotiff(one, allow_gray=True)
    assert gray.image.shape == (10, 10, 3)
    assert np.array_equal(gray.image[..., 0], gray.image[..., 2])
    two = write_tif(tmp_path / "two.tif", ramp(10, 10, count=2))
    with pytest.raises(BandCountError, match="2 band"):
        read_geotiff(two, allow_gray=True)
    assert read_geotiff(two, bands=(2, 1, 1)).image.shape == (10, 10, 3)


@needs_rasterio
def test_read_geotiff_bad_inputs(tmp_path: Path) -> None:
    from geovl.io import read_geotiff

    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(EmptyImageError):
        read_geotiff(empty)
    noise = tmp_path / "noise.tif"
    noise.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(NotAnImageError):
        read_geotiff(noise)
    with pytest.raises(FileNotFoundError):
        read_geotiff(tmp_path / "missing.tif")
    # GDAL writes the directory at the end of a plain GTiff, so cutting it breaks the header...
    whole = write_tif(tmp_path / "whole.tif", ramp(64, 64)).read_bytes()
    (tmp_path / "cut_header.tif").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(TruncatedImageError):
        read_geotiff(tmp_path / "cut_header.tif")
    # ...while a COG has its directory first, so the header opens and the pixel read fails.
    rasterio.shutil.copy(tmp_path / "whole.tif", tmp_path / "cog.tif", driver="COG", compress="deflate")
    cog = (tmp_path / "cog.tif").read_bytes()
    (tmp_path / "cut_pixels.tif").write_bytes(cog[: len(cog) // 2])
    with pytest.raises(TruncatedImageError, match="truncated or corrupt"):
        read_geotiff(tmp_path / "cut_pixels.tif")
    with pytest.raises(DecompressionBombError, match="ChipReader"):
        read_geotiff(tmp_path / "whole.tif", max_pixels=64 * 63)


@needs_rasterio
def test_load_image_routes_tiffs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geovl.io import geotiff, load_image

    multispectral = write_tif(tmp_path / "ms.tif", coded_bands(4, size=12))
    image = load_image(multispectral, bands="naip-false-color", stretch=CODE_STRETCH)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (4, 1, 2)
    assert load_image(multispectral).size == (12, 12)
    plain = tmp_path / "plain.tif"
    Image.fromarray(np.full((9, 7, 3), 77, dtype=np.uint8)).save(plain)
    png = tmp_path / "plain.png"
    Image.fromarray(np.full((9, 7, 3), 77, dtype=np.uint8)).save(png)

    def no_rasterio(*args: object, **kwargs: object) -> None:
        raise AssertionError("plain 8-bit RGB files must go through Pillow")

    monkeypatch.setattr(geotiff, "read_geotiff", no_rasterio)
    assert load_image(plain).getpixel((0, 0)) == (77, 77, 77)
    assert load_image(png).size == (7, 9)
    with pytest.raises(ValueError, match="TIFF"):
        load_image(png, bands=(1, 2, 3))


# ------------------------------------------------------------------------------------------ chips


def test_chip_offsets() -> None:
    from geovl.io.chips import chip_offsets

    assert chip_offsets(500, 128, 100, "pad") == [0, 100, 200, 300, 400]
    assert chip_offsets(500, 128, 100, "shift") == [0, 100, 200, 300, 372]
    assert chip_offsets(500, 128, 100, "drop") == [0, 100, 200, 300]
    assert chip_offsets(100, 128, 100, "pad") == [0]
    assert chip_offsets(100, 128, 100, "shift") == [0]
    assert chip_offsets(100, 128, 100, "drop") == []
    assert chip_offsets(256, 128, 128, "pad") == [0, 128]


@needs_rasterio
def test_chip_reader_validates_arguments(tmp_path: Path) -> None:
    from geovl.io import ChipReader

    path = write_tif(tmp_path / "s.tif", ramp(32, 32))
    for kwargs, message in [
        ({"size": 0}, "size"),
        ({"size": 16, "overlap": -1}, "overlap"),
        ({"size": 16, "overlap": 16}, "overlap"),
        ({"min_valid_fraction": 1.5}, "min_valid_fraction"),
        ({"edge": "wrap"}, "edge"),
        ({"stretch_scope": "tile"}, "stretch_scope"),
    ]:
        with pytest.raises(ValueError, match=message):
            ChipReader(path, **kwargs)


@needs_rasterio
@pytest.mark.parametrize(("edge", "rows", "cols"), [("pad", 3, 5), ("shift", 3, 5), ("drop", 2, 4)])
def test_chips_tile_the_scene_and_match_a_full_read(tmp_path: Path, edge: str, rows: int, cols: int) -> None:
    from geovl.io import ChipReader, read_geotiff

    data = ramp(300, 500)
    data[:, 250:, :60] = 0  # a nodata corner
    path = write_tif(tmp_path / "scene.tif", data, nodata=0, tags={"TIFFTAG_DATETIME": "2022:02:03 04:05:06"})
    reader = ChipReader(path, size=128, overlap=28, edge=edge, stats_size=4096)
    assert reader.grid_shape == (rows, cols) and len(reader) == rows * cols
    full = read_geotiff(path, stretch=reader.limits)
    # With stats_size above the scene size the "decimated" read is the full scene: the same limits.
    np.testing.assert_allclose(reader.limits, read_geotiff(path).limits)
    chips = list(reader)
    assert len(chips) == len(reader) and reader.skipped == 0
    covered = np.zeros((300, 500), dtype=bool)
    for chip in chips:
        col_off, row_off, width, height = chip.window
        assert (width, height) == (128, 128) and chip.image.shape == (128, 128, 3)
        assert col_off % 100 == 0 or edge == "shift"
        h, w = min(128, 300 - row_off), min(128, 500 - col_off)
        np.testing.assert_array_equal(chip.image[:h, :w], full.image[row_off : row_off + h, col_off : col_off + w])
        np.testing.assert_array_equal(chip.valid[:h, :w], full.valid[row_off : row_off + h, col_off : col_off + w])
        assert not chip.valid[h:].any() and not chip.valid[:, w:].any()
        assert not chip.image[h:].any() and not chip.image[:, w:].any()
        assert chip.valid_fraction == pytest.approx(chip.valid.mean())
        covered[row_off : row_off + h, col_off : col_off + w] = True
        assert chip.chip_id == f"scene_r{chip.row}_c{chip.col}"
        assert chip.acquired == datetime(2022, 2, 3, 4, 5, 6) and chip.crs == UTM and chip.gsd == pytest.approx(10)
        x0, y0 = UTM_ORIGIN[0] + 10 * col_off, UTM_ORIGIN[1] - 10 * row_off
        assert chip.transform == (10.0, 0.0, x0, 0.0, -10.0, y0)
        assert chip.bounds == (x0, y0 - 1280, x0 + 1280, y0)
    if edge == "drop":
        assert covered[:200, :400].all() and not covered[:, 428:].any()
    else:
        assert covered.all()
    if edge == "shift":
        assert all(c.window[0] + 128 <= 500 and c.window[1] + 128 <= 300 for c in chips)
        assert all(c.valid_fraction == pytest.approx(c.valid.mean()) for c in chips)


@needs_rasterio
def test_chip_footprints_follow_a_rotated_grid(tmp_path: Path) -> None:
    from geovl.io import ChipReader

    cos, sin = 10 * math.cos(math.radians(30)), 10 * math.sin(math.radians(30))
    transform = Affine(cos, sin, UTM_ORIGIN[0], sin, -cos, UTM_ORIGIN[1])  # 10 m pixels, grid rotated 30 deg
    path = write_tif(tmp_path / "rot.tif", ramp(64, 96), transform=transform)
    for chip in ChipReader(path, size=32):
        col_off, row_off, width, height = chip.window
        corners = [(col_off, row_off), (col_off + width, row_off), (col_off + width, row_off + height)]
        corners.append((col_off, row_off + height))
        xy = [
            (transform.a * c + transform.b * r + transform.c, transform.d * c + transform.e * r + transform.f)
            for c, r in corners
        ]
        lons, lats = rasterio.warp.transform(UTM, "EPSG:4326", [p[0] for p in xy], [p[1] for p in xy])
        assert chip.footprint is not None and chip.lonlat_bounds is not None
        np.testing.assert_allclose(chip.footprint[:4], list(zip(lons, lats, strict=True)), atol=1e-9)
        assert chip.bounds == pytest.approx(
            (min(p[0] for p in xy), min(p[1] for p in xy), max(p[0] for p in xy), max(p[1] for p in xy))
        )
        west, south, east, _ = chip.lonlat_bounds
        assert west <= min(lons) + 1e-9 and east >= max(lons) - 1e-9 and south <= min(lats) + 1e-9


@needs_rasterio
def test_scene_stretch_is_shared_and_chip_stretch_is_local(tmp_path: Path) -> None:
    from geovl.io import ChipReader
    from geovl.io.stretch import percentile_limits

    # Left half dark, right half bright: a per-chip stretch makes both look alike, the scene stretch does not.
    data = np.concatenate([ramp(64, 64) // 4, ramp(64, 64, seed=1)], axis=2).astype(np.uint16)
    path = write_tif(tmp_path / "halves.tif", data)
    scene = ChipReader(path, size=64, stats_size=32)  # stats from a 32 x 64 decimated read
    left, right = list(scene)
    assert left.image.mean() < 80 < right.image.mean()
    np.testing.assert_allclose(scene.limits, percentile_limits(data, 2, 98), atol=100)  # 1 % of the range
    local = list(ChipReader(path, size=64, stretch_scope="chip"))
    assert abs(float(local[0].image.mean()) - float(local[1].image.mean())) < 10
    assert ChipReader(path, size=64, stretch_scope="chip").limits is None


@needs_rasterio
def test_min_valid_fraction_skips_and_counts(tmp_path: Path) -> None:
    from geovl.io import ChipReader, read_geotiff

    data = ramp(128, 192)
    data[:, :, :80] = 0
    path = write_tif(tmp_path / "half.tif", data, nodata=0)
    valid = read_geotiff(path).valid
    reader = ChipReader(path, size=32, min_valid_fraction=0.5)
    expected_kept = sum(
        valid[r : r + 32, c : c + 32].mean() >= 0.5 for r in range(0, 128, 32) for c in range(0, 192, 32)
    )
    kept = list(reader)
    assert len(kept) == expected_kept and reader.skipped == len(reader) - expected_kept
    assert all(c.valid_fraction >= 0.5 for c in kept)
    assert len(list(reader)) == expected_kept  # iterable again, same result


@needs_rasterio
def test_chip_reader_reads_windows_not_the_scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geovl.io import ChipReader

    size, side = 512, 4096
    path = tmp_path / "big.tif"
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": UTM}
    profile.update(transform=from_origin(*UTM_ORIGIN, 10, 10), tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        cols = (np.arange(side, dtype=np.uint32) % 251).astype(np.uint8)
        for row_off in range(0, side, 256):  # write in strips so the test never holds the scene either
            strip = np.broadcast_to(cols, (3, 256, side)).copy()
            strip[1] += np.uint8(row_off % 200)
            dst.write(strip, window=rasterio.windows.Window(0, row_off, side, 256))

    reads: list[int] = []
    real_read = rasterio.io.DatasetReader.read

    def spy(self: Any, indexes: Any = None, **kwargs: Any) -> np.ndarray:
        out = real_read(self, indexes, **kwargs)
        reads.append(out.shape[-2] * out.shape[-1])
        return out

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    tracemalloc.start()
    try:
        reader = ChipReader(path, size=size, stretch="percentile", stats_size=1024)
        n = 0
        for chip in reader:
            assert chip.image.shape == (size, size, 3)
            n += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == (side // size) ** 2
    assert len(reads) == n + 1  # one decimated statistics read, then one read per chip
    assert max(reads) <= 1024 * 1024  # the statistics read is decimated; chip reads are one window each
    assert sorted(reads)[:-1] == [size * size] * n
    assert peak < side * side  # the scene is 3 x 16.8 MB; the peak stays below one band of it


@needs_rasterio
def test_write_chip_geotiff_round_trip(tmp_path: Path) -> None:
    from geovl.io import ChipReader, read_geotiff, write_chip_geotiff

    data = ramp(100, 120)
    data[:, :20] = 0
    scene = write_tif(tmp_path / "scene.tif", data, nodata=0, tags={"SENSOR": "TestSat"})
    chips = list(ChipReader(scene, size=64, overlap=8))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for chip in chips:
        written = write_chip_geotiff(chip, out_dir / f"{chip.chip_id}.tif")
        back = read_geotiff(written, stretch=None)
        assert back.transform == chip.transform and back.crs == chip.crs
        np.testing.assert_array_equal(back.image, chip.image)
        np.testing.assert_array_equal(back.valid, chip.valid)
        assert back.tags["CHIP_ID"] == chip.chip_id and back.sensor == "TestSat"
        np.testing.assert_allclose(back.lonlat_bounds, chip.lonlat_bounds)

    # A coarser per-chip output (e.g. a 16 x 16 patch heatmap) covers the same ground with bigger pixels.
    chip = chips[0]
    heat = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    target = out_dir / "heat.tif"
    target.write_bytes(b"old contents")
    write_chip_geotiff(chip, target, heat)
    with rasterio.open(target) as src:
        assert src.dtypes[0] == "float32" and src.res == (40.0, 40.0)
        np.testing.assert_allclose(src.bounds, chip.bounds)
        np.testing.assert_array_equal(src.read(1), heat)
    with pytest.raises(ValueError, match="HxW"):
        write_chip_geotiff(chip, out_dir / "bad.tif", np.zeros((2, 2, 2, 2)))
    leftovers = [p.name for p in out_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not (out_dir / "bad.tif").exists()
    assert os.access(target, os.R_OK)
