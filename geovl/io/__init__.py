"""Image input/output: plain images through Pillow, GeoTIFF scenes and georeferenced chips through rasterio.

Importing this package does not import rasterio; the GeoTIFF and chip readers import it when called.
Atomic file writes, locks and hashes are in :mod:`geovl.io.fs`; the one JSON sanitiser in :mod:`geovl.io.jsonable`.
"""

from geovl.io.chips import Chip, ChipReader, write_chip_geotiff
from geovl.io.geotiff import Raster, read_geotiff
from geovl.io.images import (
    BandCountError,
    DecompressionBombError,
    EmptyImageError,
    ImageReadError,
    ImageSource,
    NotAnImageError,
    TruncatedImageError,
    load_pillow_image,
)
from geovl.io.loading import Failure, load_image, load_images
from geovl.io.sensors import SENSOR_PRESETS, SensorPreset

__all__ = [
    "SENSOR_PRESETS",
    "BandCountError",
    "Chip",
    "ChipReader",
    "DecompressionBombError",
    "EmptyImageError",
    "Failure",
    "ImageReadError",
    "ImageSource",
    "NotAnImageError",
    "Raster",
    "SensorPreset",
    "TruncatedImageError",
    "load_image",
    "load_images",
    "load_pillow_image",
    "read_geotiff",
    "write_chip_geotiff",
]
