"""One table from format names to readers, :func:`open_dataset`, and :func:`autodetect` for a path."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from geovl.data.coco import CocoReader
from geovl.data.common import IMAGE_EXTENSIONS, PathLike
from geovl.data.gaia import GaiaReader
from geovl.data.git10m import Git10MReader
from geovl.data.imagefolder import ImageFolderReader
from geovl.data.karpathy import KarpathyReader
from geovl.data.levircc import LevirCCReader, SecondCCReader
from geovl.data.shards import WebDatasetReader
from geovl.data.skyscript import SkyScriptReader
from geovl.data.tabular import TableReader

__all__ = ["FORMATS", "DatasetReader", "autodetect", "open_dataset"]

DatasetReader = (
    KarpathyReader
    | CocoReader
    | ImageFolderReader
    | SkyScriptReader
    | GaiaReader
    | WebDatasetReader
    | Git10MReader
    | LevirCCReader
    | SecondCCReader
    | TableReader
)
"""Any reader :func:`open_dataset` returns."""

#: Format name -> reader. ``"gaia-wds"`` and ``"webdataset"`` are the same reader (img2dataset shards).
FORMATS: dict[str, Callable[..., DatasetReader]] = {
    "karpathy": KarpathyReader,
    "coco": CocoReader,
    "imagefolder": ImageFolderReader,
    "skyscript": SkyScriptReader,
    "gaia": GaiaReader,
    "gaia-wds": WebDatasetReader,
    "webdataset": WebDatasetReader,
    "git10m": Git10MReader,
    "levircc": LevirCCReader,
    "second-cc": SecondCCReader,
    "csv": partial(TableReader, format="csv"),
    "tsv": partial(TableReader, format="tsv"),
    "jsonl": partial(TableReader, format="jsonl"),
    "parquet": partial(TableReader, format="parquet"),
}

_SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def open_dataset(kind: str, path: PathLike, **kwargs: Any) -> DatasetReader:
    """Open ``path`` with the reader registered as ``kind`` (see :data:`FORMATS`; ``"auto"`` guesses it).

    Keyword arguments go to the reader (e.g. ``split="test"``, ``image_root=...``).
    """
    name = autodetect(path) if kind == "auto" else kind
    try:
        reader = FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown dataset format {kind!r}; known formats: {', '.join(FORMATS)}, or 'auto'") from None
    return reader(path, **kwargs)


def _csv_header(path: Path) -> list[str]:
    with path.open("r", encoding="utf-8", newline="") as fh:
        first = fh.readline()
    return [c.strip() for c in first.strip().split(",")]


def _json_kind(path: Path) -> str | None:
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        if isinstance(data.get("annotations"), list):
            return "coco"
        first = data["images"][0] if data["images"] else {}
        if isinstance(first, dict) and "filename" in first and "sentences" in first:
            return "karpathy"
    if isinstance(data, list) and data and isinstance(data[0], dict) and {"id", "captions"} <= set(data[0]):
        return "gaia"
    return None


def _starts_with_list(path: Path) -> bool:
    with path.open("r", encoding="utf-8") as fh:
        head = fh.read(64).lstrip()
    return head.startswith("[")


def _has_images(folder: Path, limit: int = 50) -> bool:
    with os.scandir(folder) as it:
        for i, entry in enumerate(it):
            if i >= limit:
                break
            if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                return True
    return False


def autodetect(path: PathLike) -> str:
    """Guess the format name of ``path`` from its layout (a few folder listings; a JSON file is parsed).

    Files: ``*.tar`` -> ``webdataset``; ``*.csv`` with ``filepath,title`` -> ``skyscript``, other tables by
    suffix; ``*.json`` by content (COCO, Karpathy, GAIA record list).

    Folders, checked in this order: ``save_to_disk`` files -> ``git10m``; ``dataset.json`` -> ``karpathy``;
    ``SECOND-CC-AUG.json`` or ``<split>/rgb/A`` -> ``second-cc``; ``LevirCCcaptions.json`` or
    ``images/<split>/A`` -> ``levircc``; tar shards -> ``webdataset``; JSON lists -> ``gaia``; class
    sub-folders of images -> ``imagefolder``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no known layout matches (the message lists what was checked).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        name = p.name.lower()
        if name.endswith(_SHARD_SUFFIXES):
            return "webdataset"
        suffix = p.suffix.lower()
        if suffix == ".csv":
            header = _csv_header(p)
            return "skyscript" if {"filepath", "title"} <= set(header) else "csv"
        tables = {
            ".tsv": "tsv",
            ".jsonl": "jsonl",
            ".ndjson": "jsonl",
            ".parquet": "parquet",
            ".pq": "parquet",
        }
        if suffix in tables:
            return tables[suffix]
        if suffix == ".json":
            kind = _json_kind(p)
            if kind is not None:
                return kind
            raise ValueError(
                f"{p.name}: JSON is neither COCO ('images' + 'annotations'), Karpathy ('images' with "
                "'filename' + 'sentences') nor a GAIA record list ('id' + 'captions')"
            )
        raise ValueError(f"{p.name}: unknown file type {suffix!r} (expected .json, .csv, .tsv, .jsonl, .parquet, .tar)")

    if any((p / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return "git10m"
    if (p / "dataset.json").is_file():
        return "karpathy"
    if (p / "SECOND-CC-AUG.json").is_file() or any((p / s / "rgb" / "A").is_dir() for s in ("train", "val", "test")):
        return "second-cc"
    if (p / "LevirCCcaptions.json").is_file() or any(
        (p / "images" / s / "A").is_dir() for s in ("train", "val", "test")
    ):
        return "levircc"
    entries = sorted(os.scandir(p), key=lambda e: e.name)
    if any(e.is_file() and e.name.lower().endswith(_SHARD_SUFFIXES) for e in entries):
        return "webdataset"
    if any(e.is_file() and e.name.lower().endswith(".json") and _starts_with_list(Path(e.path)) for e in entries):
        return "gaia"
    subdirs = [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
    if subdirs and all(_has_images(d) for d in subdirs[:5]):
        return "imagefolder"
    raise ValueError(
        f"{p}: cannot tell the dataset format (checked for datasets save_to_disk files, dataset.json, "
        "SECOND-CC / LEVIR-CC layouts, .tar shards, GAIA JSON lists and class folders of images); "
        f"pass one of {', '.join(FORMATS)} to open_dataset"
    )
