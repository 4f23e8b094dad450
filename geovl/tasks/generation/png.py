"""Generated images as PNG files that carry the settings that made them.

Rules:

* Each setting is a PNG international text chunk (``iTXt``, UTF-8, so any prompt fits) named after it (``prompt``,
  ``gsd``, ``seed``, ...): text as is, anything else as JSON, readable by any PNG tool. The chunk
  ``geovl-settings`` holds all of them as one JSON object, which :func:`read_png_settings` returns exactly.
* Files are written atomically (:func:`geovl.io.fs.atomic_write_bytes`): a crash never leaves half a PNG.
* Only ``.png`` paths are accepted: other formats would drop the settings.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from geovl.io.fs import atomic_write_bytes
from geovl.io.jsonable import to_jsonable

__all__ = ["SETTINGS_CHUNK", "encode_png", "read_png_settings", "save_png"]

#: The text chunk with every setting as one JSON object.
SETTINGS_CHUNK = "geovl-settings"


def encode_png(image: Image.Image, settings: dict[str, Any]) -> bytes:
    """``image`` as PNG bytes with ``settings`` (JSON-able values) in text chunks (see the module rules)."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image, got {type(image).__name__}")
    plain = to_jsonable(dict(settings))
    info = PngImagePlugin.PngInfo()
    for key, value in plain.items():
        if not key or key == SETTINGS_CHUNK or len(key) > 79:
            raise ValueError(f"setting name {key!r} cannot be a PNG text chunk name (1..79 characters, not "
                             f"{SETTINGS_CHUNK!r})")
        info.add_itxt(key, value if isinstance(value, str) else json.dumps(value))
    info.add_itxt(SETTINGS_CHUNK, json.dumps(plain, ensure_ascii=False))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(image: Image.Image, path: str | os.PathLike[str], settings: dict[str, Any]) -> Path:
    """Write ``image`` to the ``.png`` file ``path`` atomically, with ``settings`` in its text chunks."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValueError(f"{target}: generated images are written as .png files (the settings travel in PNG text "
                         "chunks); give a path ending in .png")
    if target.is_dir():
        raise ValueError(f"{target} is a folder; give a .png file path")
    return atomic_write_bytes(target, encode_png(image, settings))


def read_png_settings(path: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """The settings :func:`save_png` stored in a PNG (a path or the file's bytes).

    Raises:
        FileNotFoundError: no such file. ValueError: not a PNG, or a PNG without geovl settings.
    """
    name = "<bytes>" if isinstance(path, bytes) else str(path)
    source: Any = io.BytesIO(path) if isinstance(path, bytes) else Path(path)
    try:
        with Image.open(source) as image:
            image.load()
            if image.format != "PNG":
                raise ValueError(f"{name}: not a PNG file ({image.format})")
            text = dict(getattr(image, "text", {}) or {})
    except (OSError, Image.DecompressionBombError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{name}: cannot be read as a PNG ({exc})") from exc
    raw = text.get(SETTINGS_CHUNK)
    if raw is None:
        raise ValueError(f"{name}: no geovl generation settings in this PNG (no {SETTINGS_CHUNK!r} text chunk)")
    try:
        settings = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: the {SETTINGS_CHUNK!r} chunk is not valid JSON ({exc})") from exc
    if not isinstance(settings, dict):
        raise ValueError(f"{name}: the {SETTINGS_CHUNK!r} chunk is not a JSON object")
    return settings
