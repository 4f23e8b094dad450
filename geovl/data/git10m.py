"""Git-10M as a Hugging Face ``datasets`` arrow folder (``Dataset.save_to_disk`` layout).

Two column layouts of the release are understood:

* ``image``, ``text`` where ``text`` is ``"<zoom level>_GOOGLE_LEVEL_<caption>"`` (level 0: the image comes
  from a public dataset and has no resolution);
* ``image``, ``img_name``, ``caption``, ``resolution``, ``Google_location`` (``"<z>_<x>_<y>"`` web-map tile),
  ``img_quality_score``, ``caption_length``.

The resolution of a Google zoom level is ``2 ** (17 - level)`` m per pixel (level 18: 0.5 m, level 10: 128 m).
Licence of the data: CC-BY-NC-ND-4.0.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, overload

from geovl._optional import require
from geovl.data.common import (
    PathLike,
    SplitArg,
    canonical_split,
    check_splits_present,
    clean_caption,
    split_set,
)
from geovl.data.samples import ImageTextSample
from geovl.io.images import ImageSource

__all__ = ["Git10MReader", "parse_level_text", "tile_bounds", "zoom_resolution_m"]

_LEVEL_SEP = "_GOOGLE_LEVEL_"


def zoom_resolution_m(level: int) -> float:
    """Ground resolution (m per pixel) of a Google web-map zoom level: ``2 ** (17 - level)``."""
    return float(2.0 ** (17 - level))


def parse_level_text(text: str) -> tuple[int | None, str]:
    """``"17_GOOGLE_LEVEL_a harbour"`` -> ``(17, "a harbour")``; without the marker -> ``(None, text)``."""
    head, sep, caption = text.partition(_LEVEL_SEP)
    if sep and head.strip().lstrip("-").isdigit():
        return int(head), caption
    return None, text


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """Web-mercator tile ``(z, x, y)`` -> ``(west, south, east, north)`` in degrees (WGS84)."""
    n = 2.0**z

    def lat(yy: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * yy / n))))

    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


class Git10MReader(Sequence[ImageTextSample]):
    """Indexable Git-10M samples read through ``datasets.load_from_disk`` (needs ``geovl[data]``).

    Args:
        path: the ``save_to_disk`` folder (a ``Dataset`` or a ``DatasetDict`` of splits).
        split: for a ``DatasetDict``, the split(s) to read (default: all, in order); for a single
            ``Dataset``, every sample is tagged with this name.
        image_format: ``"bytes"`` (encoded bytes, or the file path when the arrow row stores only a path) or
            ``"pil"`` (a lazily opened PIL image; pixels are decoded on first use).
        text_column: caption column; default ``caption`` when present, else ``text``.

    ``image_id`` is ``img_name`` when that column exists, else the row number (``<split>/<row>`` in a
    ``DatasetDict``). ``meta`` has ``zoom_level`` and ``resolution_m`` (the ``resolution`` column, taken as m
    per pixel, or the zoom level's) when known, ``bbox`` (west, south, east, north, degrees)
    and ``lon`` / ``lat`` (tile centre) from ``Google_location``, and every other non-image column. Images
    are never decoded when a sample is built: the image column is read with ``decode=False``.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        split: SplitArg = None,
        image_format: Literal["bytes", "pil"] = "bytes",
        text_column: str | None = None,
    ) -> None:
        if image_format not in ("bytes", "pil"):
            raise ValueError(f"image_format must be 'bytes' or 'pil', got {image_format!r}")
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder (expected a datasets save_to_disk folder)")
        if not any((root / f).is_file() for f in ("state.json", "dataset_info.json", "dataset_dict.json")):
            raise ValueError(
                f"{root}: not a datasets save_to_disk folder (no state.json / dataset_info.json / dataset_dict.json)"
            )
        ds_mod = require("datasets", extra="train", feature="reading Git-10M arrow datasets")
        loaded = ds_mod.load_from_disk(str(root))
        wanted = split_set(split)
        parts: list[tuple[str | None, Any]] = []
        self._is_dict = isinstance(loaded, ds_mod.DatasetDict)
        if self._is_dict:
            names = list(loaded.keys())
            check_splits_present(wanted, names, root.name)
            parts = [(canonical_split(n), loaded[n]) for n in names if wanted is None or n in wanted]
        else:
            if wanted is not None and len(wanted) != 1:
                raise ValueError(f"{root.name}: a single Dataset has no splits, so split= must be one name")
            parts = [(next(iter(wanted)) if wanted else None, loaded)]

        first = parts[0][1] if parts else None
        columns = list(first.column_names) if first is not None else []
        if "image" not in columns:
            raise ValueError(f"{root.name}: no 'image' column (found {', '.join(columns) or 'none'})")
        if text_column is None:
            text_column = "caption" if "caption" in columns else "text" if "text" in columns else None
        if text_column is None or text_column not in columns:
            raise ValueError(
                f"{root.name}: no caption column {text_column or 'caption/text'!r} (found {', '.join(columns)})"
            )
        self._parts = [(name, d.cast_column("image", ds_mod.Image(decode=False))) for name, d in parts]
        self._offsets: list[int] = []
        total = 0
        for _, d in self._parts:
            self._offsets.append(total)
            total += len(d)
        self._len = total
        self.source = str(root)
        self.text_column = text_column
        self.image_format = image_format
        self.columns = columns

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> ImageTextSample: ...

    @overload
    def __getitem__(self, index: slice) -> list[ImageTextSample]: ...

    def __getitem__(self, index: int | slice) -> ImageTextSample | list[ImageTextSample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"index {index} out of range for {self._len} samples")
        part = max(i for i, off in enumerate(self._offsets) if off <= index)
        split, ds = self._parts[part]
        local = index - self._offsets[part]
        return self._make(ds[local], local, split)

    def __iter__(self) -> Iterator[ImageTextSample]:
        for split, ds in self._parts:
            for local, row in enumerate(ds):
                yield self._make(row, local, split)

    @property
    def splits(self) -> list[str]:
        """The split names read, sorted."""
        return sorted({name for name, _ in self._parts if name is not None})

    def __repr__(self) -> str:
        return f"Git10MReader({self.source!r}, {len(self)} samples)"

    def _image(self, cell: Any, where: str) -> ImageSource:
        data = cell.get("bytes") if isinstance(cell, dict) else None
        file = cell.get("path") if isinstance(cell, dict) else None
        if data:
            if self.image_format == "pil":
                from PIL import Image

                return Image.open(io.BytesIO(data))
            return bytes(data)
        if file:
            return str(file)
        raise ValueError(f"{self.source}: {where} has an empty image (no bytes and no path)")

    def _make(self, row: dict[str, Any], local: int, split: str | None) -> ImageTextSample:
        where = f"row {local}" + (f" of split {split}" if split else "")
        raw = row.get(self.text_column)
        text = raw if isinstance(raw, str) else ""
        level, caption = parse_level_text(text)
        meta: dict[str, Any] = {k: v for k, v in row.items() if k not in ("image", self.text_column)}
        location = meta.get("Google_location")
        if isinstance(location, str) and location.count("_") == 2:
            try:
                z, x, y = (int(v) for v in location.split("_"))
            except ValueError:
                pass
            else:
                bbox = tile_bounds(z, x, y)
                meta["bbox"] = bbox
                meta["lon"], meta["lat"] = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
                level = level if level is not None else z
        if level is not None:
            meta["zoom_level"] = level
            if "resolution" not in meta and level > 0:
                meta["resolution_m"] = zoom_resolution_m(level)
        if isinstance(meta.get("resolution"), (int, float)):
            meta["resolution_m"] = float(meta["resolution"])
        name = row.get("img_name")
        return ImageTextSample(
            image_id=str(name) if name else f"{split}/{local}" if self._is_dict else str(local),
            image=self._image(row.get("image"), where),
            captions=[clean_caption(caption)] if caption.strip() else [],
            label=None,
            split=split,
            meta=meta,
        )
