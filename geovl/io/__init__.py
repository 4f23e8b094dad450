"""Image input/output: plain images through Pillow, GeoTIFF scenes and georeferenced chips through rasterio.

Everything here imports without rasterio; the GeoTIFF and chip readers import it when called and name the
``geo`` extra when it is missing.
"""

from geovl.io.chips import Chip, ChipReader, write_chip_geotiff
from geovl.io.geotiff import Raster, load_any_image, read_geotiff
from geovl.io.images import (
    BandCountError,
    DecompressionBombError,
    EmptyImageError,
    ImageReadError,
    ImageSource,
    NotAnImageError,
    TruncatedImageError,
    load_image,
    load_images,
)
from geovl.io.sensors import SENSOR_PRESETS, SensorPreset

__all__ = [
    "SENSOR_PRESETS",
    "BandCountError",
    "Chip",
    "ChipReader",
    "DecompressionBombError",
    "EmptyImageError",
    "ImageReadError",
    "ImageSource",
    "NotAnImageError",
    "Raster",
    "SensorPreset",
    "TruncatedImageError",
    "load_any_image",
    "load_image",
    "load_images",
    "read_geotiff",
    "write_chip_geotiff",
]
