"""Decode JPEG / PNG / TIFF (and anything else Pillow reads) into RGB images, with specific errors.

Each way an image file can be bad has its own exception, all subclasses of :class:`ImageReadError` (itself
a ``ValueError``), so batch callers can skip and record bad files (:func:`load_images`) while interactive
callers get a message that names the file and the problem.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray
"""Anything :func:`load_pillow_image` accepts: a path, encoded bytes, a PIL image or an HxW[xC] array."""

#: Default pixel limit (width x height). 24k x 24k covers any single-image chip or photo; whole satellite
#: scenes should be read as windows through :mod:`geovl.io.chips` instead.
DEFAULT_MAX_PIXELS = 24_000 * 24_000


class ImageReadError(ValueError):
    """An image could not be turned into an RGB array. ``source`` names the file (or ``"<bytes>"``)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class EmptyImageError(ImageReadError):
    """The file has zero bytes."""


class NotAnImageError(ImageReadError):
    """The bytes are not in any image format Pillow (or rasterio) understands."""


class TruncatedImageError(ImageReadError):
    """The header is valid but the pixel data ends early or is corrupt."""


class DecompressionBombError(ImageReadError):
    """The image declares more pixels than the configured limit (a decompression bomb or a whole scene)."""


class BandCountError(ImageReadError):
    """The image has fewer bands than needed (e.g. 1 or 2 bands when 3 are required)."""


def describe_source(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, bytes):
        return "<bytes>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return "<PIL image>"


def _array_to_rgb(arr: np.ndarray, name: str, allow_gray: bool) -> Image.Image:
    if arr.ndim == 2:
        if not allow_gray:
            raise BandCountError(
                name, "image has 1 band but 3 (RGB) are required; pass allow_gray=True to replicate it"
            )
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected an HxW or HxWxC array, got shape {arr.shape}")
    bands = arr.shape[2]
    if bands < 3:
        if bands == 1 and allow_gray:
            arr = np.repeat(arr, 3, axis=2)
        else:
            raise BandCountError(name, f"image has {bands} band(s) but 3 (RGB) are required")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        raise ValueError(
            f"{name}: array dtype is {arr.dtype}; convert to uint8 first "
            "(geovl.io.stretch.stretch_to_uint8 does a percentile stretch for 16-bit or float data)"
        )
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def load_pillow_image(
    source: ImageSource,
    *,
    allow_gray: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode ``source`` into an RGB PIL image, fully loaded.

    Args:
        source: a path, encoded bytes, a PIL image or an HxW / HxWxC uint8 array.
        allow_gray: replicate single-band (grayscale) images to RGB; when False they raise
            :class:`BandCountError`. Two-band images (e.g. gray + alpha arrays) always raise.
        max_pixels: refuse images with more than this many pixels (:class:`DecompressionBombError`);
            ``None`` disables the check.

    Raises:
        EmptyImageError, NotAnImageError, TruncatedImageError, DecompressionBombError, BandCountError,
        FileNotFoundError.
    """
    name = describe_source(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name, allow_gray)
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, bytes):
            if not source:
                raise EmptyImageError(name, "0 bytes")
            fp: io.BytesIO | Path = io.BytesIO(source)
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"{name}: no such file")
            if path.stat().st_size == 0:
                raise EmptyImageError(name, "file is empty (0 bytes)")
            fp = path
        try:
            img = Image.open(fp)
        except UnidentifiedImageError as exc:
            raise NotAnImageError(name, "not a recognised image format") from exc
        except Image.DecompressionBombError as exc:
            raise DecompressionBombError(name, str(exc)) from exc
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise DecompressionBombError(
            name,
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}; "
            "read large scenes as chips with geovl.io.chips.ChipReader or raise max_pixels",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise TruncatedImageError(name, f"image data is truncated or corrupt ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise DecompressionBombError(name, str(exc)) from exc
    return _to_rgb(img, name, allow_gray)


def _to_rgb(img: Image.Image, name: str, allow_gray: bool) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "RGBX", "CMYK", "YCbCr", "P", "PA"):
        return img.convert("RGB")
    if mode in ("L", "1"):
        if not allow_gray:
            raise BandCountError(name, "image has 1 band but 3 (RGB) are required")
        return img.convert("RGB")
    if mode == "LA":
        raise BandCountError(name, "image has 2 bands (gray + alpha) but 3 (RGB) are required")
    if mode.startswith("I") or mode == "F":
        # 16/32-bit single band (e.g. a panchromatic TIFF): stretch to 8 bit rather than clip.
        if not allow_gray:
            raise BandCountError(name, f"image has 1 band ({mode}) but 3 (RGB) are required")
        from geovl.io.stretch import stretch_to_uint8

        arr = stretch_to_uint8(np.asarray(img, dtype=np.float32)[None])[0]
        return Image.fromarray(arr, mode="L").convert("RGB")
    return img.convert("RGB")
