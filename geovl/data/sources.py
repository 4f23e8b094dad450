"""Image sources: turn inputs into a stream of records (what to decode + its metadata) for every batch task.

A record is cheap to make (no pixels are read): a file path, encoded bytes, or a reference to one chip of a
GeoTIFF scene, plus metadata columns. Pixels are read later, by the decode mapper of :mod:`geovl.tasks.embedding`.
Sources:

* :class:`FolderSource`: image files under folders, recursively.
* :class:`SceneSource`: GeoTIFF scenes cut into georeferenced chips (:class:`geovl.io.chips.ChipReader`).
* :class:`DatasetSource`: any geovl dataset reader: caption sets, CSV / JSONL / parquet tables with paths,
  webdataset shards, HF datasets (``geovl.data.open_dataset``).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from geovl.data.common import IMAGE_EXTENSIONS
from geovl.io.images import ImageSource

PathLike = str | os.PathLike[str]



def list_images(paths: Iterable[PathLike], suffixes: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under ``paths`` (files are kept as given, folders searched recursively), sorted per folder.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    found: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found.extend(sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in suffixes))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


@dataclass(frozen=True)
class ChipRef:
    """One chip of a scene: index into the source's chip readers, and the grid cell."""

    scene: int
    row: int
    col: int


@dataclass
class Record:
    """What to embed and the metadata to store with it.

    Attributes:
        image: a path / bytes / PIL image / array, or a :class:`ChipRef`.
        meta: metadata columns (``path``, ``source``, ``caption``, ``label``, ``lon_min`` ..., user columns).
    """

    image: ImageSource | ChipRef
    meta: dict[str, Any] = field(default_factory=dict)


class Source(abc.ABC):
    """Base class: a named, re-iterable stream of records."""

    name: str = "source"

    @abc.abstractmethod
    def records(self) -> Iterator[Record]:
        """The records, in a deterministic order (ids are positions in this order)."""

    def describe(self) -> dict[str, Any]:
        """JSON-able description, stored in the embeddings manifest so a resumed run can check its inputs."""
        return {"kind": type(self).__name__}

    def chip_readers(self) -> list[Any]:
        """The chip readers a :class:`ChipRef` indexes into (only scene sources have any)."""
        return []


class FolderSource(Source):
    """Image files (JPEG, PNG, TIFF, ...) under the given files and folders, sorted per folder."""

    def __init__(self, paths: Sequence[PathLike], suffixes: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.paths = [Path(p) for p in paths]
        self.suffixes = tuple(suffixes)
        self.name = ",".join(p.name for p in self.paths)

    def records(self) -> Iterator[Record]:
        for f in list_images(self.paths, self.suffixes):
            path = str(f.resolve())
            yield Record(image=path, meta={"path": path})

    def describe(self) -> dict[str, Any]:
        return {"kind": "folder", "paths": [str(p.resolve()) for p in self.paths]}


class ListSource(Source):
    """The images named in a text file, one path per line, in file order (blank lines and ``#`` comments skipped;
    relative paths are relative to the list file's folder). A listed file that is missing or unreadable becomes a
    recorded failure of the run that reads it, not an error here."""

    #: file suffixes read as image lists by :func:`sources_for`
    SUFFIXES = (".txt", ".lst")

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such list file")
        self.name = self.path.name

    def records(self) -> Iterator[Record]:
        base = self.path.parent
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                image = Path(entry).expanduser()
                path = str((image if image.is_absolute() else base / image).resolve())
                yield Record(image=path, meta={"path": path})

    def describe(self) -> dict[str, Any]:
        return {"kind": "list", "path": str(self.path.resolve())}


class SceneSource(Source):
    """GeoTIFF scenes cut into chips; each record is one chip with its lon/lat footprint and acquisition time."""

    def __init__(
        self,
        scenes: Sequence[PathLike],
        *,
        size: int = 256,
        overlap: int = 0,
        bands: Any = None,
        nodata: float | None = None,
        min_valid_fraction: float = 0.5,
    ) -> None:
        from geovl.io.chips import ChipReader

        self.scenes = [Path(s) for s in scenes]
        self.options = {"size": size, "overlap": overlap, "bands": bands, "nodata": nodata,
                        "min_valid_fraction": min_valid_fraction}
        self.readers = [ChipReader(s, size=size, overlap=overlap, bands=bands, nodata=nodata,
                                   min_valid_fraction=min_valid_fraction) for s in self.scenes]
        self.name = ",".join(s.name for s in self.scenes)

    def records(self) -> Iterator[Record]:
        for i, reader in enumerate(self.readers):
            for r, c, window in reader.windows():
                yield Record(image=ChipRef(i, r, c), meta={
                    "path": str(self.scenes[i].resolve()), "chip_id": f"{self.scenes[i].stem}_r{r}_c{c}",
                    "col_off": window[0], "row_off": window[1], "width": window[2], "height": window[3]})

    def chip_readers(self) -> list[Any]:
        return self.readers

    def describe(self) -> dict[str, Any]:
        opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.options.items()}
        return {"kind": "scenes", "paths": [str(s.resolve()) for s in self.scenes], **opts}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, datetime))


class DatasetSource(Source):
    """Any dataset geovl reads (``geovl.data.open_dataset``): captions, labels, splits and scalar ``meta``
    fields (lon / lat, resolution, acquisition time, ...) become metadata columns."""

    def __init__(self, path: PathLike, format: str = "auto", **reader_options: Any) -> None:
        from geovl.data import autodetect, open_dataset

        self.path = Path(path)
        self.format = autodetect(path) if format == "auto" else format
        self.reader_options = reader_options
        self.reader = open_dataset(self.format, path, **reader_options)
        self.name = self.path.name

    def records(self) -> Iterator[Record]:
        sample: Any
        for sample in self.reader:
            if "image" not in sample:
                raise ValueError(f"{self.path}: {self.format} samples are image pairs; embed image sets instead")
            s = sample
            image = s["image"]
            meta: dict[str, Any] = {
                "path": str(Path(image).resolve()) if isinstance(image, str) else str(s["image_id"]),
                "image_id": str(s["image_id"]),
                "caption": s["captions"][0] if s["captions"] else None,
                "label": s["label"],
                "split": s["split"],
            }
            for key, value in s["meta"].items():
                if key not in meta and _scalar(value):
                    meta[key] = value
            yield Record(image=image, meta=meta)

    def describe(self) -> dict[str, Any]:
        return {"kind": "dataset", "path": str(self.path.resolve()), "format": self.format,
                **{k: str(v) for k, v in self.reader_options.items()}}


def is_scene(path: Path, chip_size: int) -> bool:
    """A georeferenced raster larger than two chips on a side: cut it into chips rather than embed it whole."""
    if path.suffix.lower() not in (".tif", ".tiff", ".vrt", ".jp2"):
        return False
    try:
        from geovl.io.geotiff import open_raster

        with open_raster(path) as ds:
            georeferenced = ds.crs is not None
            return georeferenced and max(ds.width, ds.height) > 2 * chip_size
    except (ImportError, ValueError, OSError):
        return False


def sources_for(paths: Sequence[PathLike], *, dataset_format: str | None = None, chip_size: int = 256,
                chip_overlap: int = 0, bands: Any = None, min_valid_fraction: float = 0.5) -> list[Source]:
    """Pick a source for each input: a dataset (when ``dataset_format`` is given, or the path is a dataset file
    such as a caption JSON, table or shard), a list of image paths (``.txt`` / ``.lst``), a scene to chip (large
    georeferenced rasters), or image files."""
    from geovl.data import autodetect

    sources: list[Source] = []
    plain: list[Path] = []
    scenes: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        if dataset_format is not None:
            sources.append(DatasetSource(p, dataset_format))
        elif p.is_file() and p.suffix.lower() in ListSource.SUFFIXES:
            sources.append(ListSource(p))
        elif p.is_file() and p.suffix.lower() in (".json", ".csv", ".tsv", ".jsonl", ".parquet", ".tar"):
            sources.append(DatasetSource(p, autodetect(p)))
        elif p.is_file() and is_scene(p, chip_size):
            scenes.append(p)
        else:
            plain.append(p)
    if scenes:
        sources.append(SceneSource(scenes, size=chip_size, overlap=chip_overlap, bands=bands,
                                   min_valid_fraction=min_valid_fraction))
    if plain:
        sources.append(FolderSource(plain))
    return sources
