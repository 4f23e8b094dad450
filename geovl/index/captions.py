"""Captions of an index's images: caption an index (or an embeddings folder) as a collection, and attach a caption
run to an index's metadata, where searches filter on it (``--where "caption contains harbour"``) and the demo shows it.

Rules:

* **Inputs** (:func:`index_sources`): one record per live row (tombstoned rows are skipped), in id order, carrying
  the row's metadata with its ``id`` as ``index_id`` (generated caption columns are left out; a dataset's
  ``caption`` becomes the run's ``reference_caption``). An image row is read from its ``path``. A scene chip is
  re-cut from its scene with the options it was embedded with (from the manifest of the embeddings folder that
  holds its id), at the window the row records. A row whose image or scene is gone, or whose chip options are no
  longer known (its embeddings folder was deleted), is a recorded failure of the run, never a crash.
* **Matching** (:func:`attach_captions`): a caption row belongs to the index rows that show the same image: the
  same ``path`` and, for chips, the same ``chip_id`` and window (``col_off``, ``row_off``, ``width``, ``height``).
  A row of a run over this index is matched through its ``index_id`` first, checked against that key (so an id
  taken by another image since is not matched); rows of any other run over the same files (``geovl caption IMAGES
  --attach-to INDEX``) are matched by the key alone, the last caption of a key winning.
* **The column**: ``caption`` when the index has none (or holds generated captions there already), else
  ``generated_caption``, so a dataset's reference captions stay. Attaching replaces the whole column: rows the run
  did not caption get null. The manifest's ``captions`` records the run behind each generated column.
* **Writing** goes through :func:`geovl.index.folder.rewrite_index_folder` (locked, copy-on-write, swapped in
  whole); ``index.faiss`` (and ``index.ivfdata``) are shared with the previous version. Nothing caches the metadata
  across processes: a searcher (``geovl serve``, the demo) reads ``metadata.parquet`` when it opens the index, so one
  opened afterwards filters on and shows the new column.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geovl._optional import require
from geovl.data.sources import ChipRef, Record, Source
from geovl.index.folder import finish_index_folder, link_or_copy, read_deleted, rewrite_index_folder
from geovl.index.manifest import (
    BUILD_HINT,
    EMBEDDINGS_FORMAT,
    INDEX_FILE,
    INDEX_FORMAT,
    IVFDATA_FILE,
    MANIFEST_FILE,
    METADATA_FILE,
    IndexManifest,
    utc_now,
)
from geovl.tasks.captioning.batch import MANIFEST as RUN_MANIFEST
from geovl.tasks.captioning.batch import is_caption_run, read_captions

__all__ = ["CAPTION_COLUMN", "GENERATED_COLUMN", "KEY_COLUMNS", "CaptionLookup", "IndexSource", "UnreadableChips",
           "attach_captions", "caption_column", "index_sources", "is_collection_folder", "is_embeddings_folder",
           "is_index_folder", "row_key"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

CAPTION_COLUMN = "caption"
GENERATED_COLUMN = "generated_caption"
KEY_COLUMNS = ("path", "chip_id", "col_off", "row_off", "width", "height")
"""What identifies an image: its file, and for a chip of a scene its id and pixel window."""
WINDOW_COLUMNS = ("col_off", "row_off", "width", "height")
_SCENE_KINDS = ("scenes", "scene")
_BATCH_ROWS = 65_536


# ---------------------------------------------------------------- what a folder is


def _manifest_format(path: Path) -> str | None:
    mpath = path / MANIFEST_FILE
    if not mpath.is_file():
        return None
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("format") if isinstance(data, dict) else None


def is_index_folder(path: PathLike) -> bool:
    """Whether ``path`` is a geovl index folder (its ``manifest.json`` has format ``geovl-index``)."""
    return Path(path).is_dir() and _manifest_format(Path(path)) == INDEX_FORMAT


def is_embeddings_folder(path: PathLike) -> bool:
    """Whether ``path`` is an embeddings folder written by ``geovl embed`` (format ``geovl-embeddings``)."""
    return Path(path).is_dir() and _manifest_format(Path(path)) == EMBEDDINGS_FORMAT


def is_collection_folder(path: PathLike) -> bool:
    """Whether ``path`` is a collection :func:`index_sources` captions: an index or an embeddings folder."""
    return is_index_folder(path) or is_embeddings_folder(path)


# ---------------------------------------------------------------- keys


def _plain(value: Any) -> Any:
    """A key part: integral floats as ints (JSON and parquet round trips), NaN as None."""
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float):
        if value != value:
            return None
        if value.is_integer():
            return int(value)
    return value


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """The :data:`KEY_COLUMNS` of a metadata or caption row (``None`` where absent)."""
    return tuple(_plain(row.get(c)) for c in KEY_COLUMNS)


def _table_keys(table: Any) -> list[tuple[Any, ...]]:
    n = table.num_rows
    cols = [table.column(c).to_pylist() if c in table.column_names else [None] * n for c in KEY_COLUMNS]
    return [tuple(_plain(v) for v in parts) for parts in zip(*cols, strict=True)] if n else []


# ---------------------------------------------------------------- reading a collection


@dataclass
class _Collection:
    """The live rows of an index or embeddings folder (sorted by id) and the embeddings folders they came from."""

    path: Path
    kind: str
    table: Any
    embeddings_dirs: list[Path]


def _partition_tables(folder: Path, manifest: dict[str, Any], columns: Sequence[str] | None = None) -> list[Any]:
    pq = require("pyarrow.parquet", extra=None, feature="reading embedding metadata")
    return [pq.read_table(folder / f"{p['name']}.parquet", columns=columns) for p in manifest.get("partitions", [])
            if (folder / f"{p['name']}.parquet").is_file()]


def _read_collection(path: Path) -> _Collection:
    pa = require("pyarrow", extra=None, feature="reading index metadata")
    pc = require("pyarrow.compute", extra=None, feature="reading index metadata")
    pq = require("pyarrow.parquet", extra=None, feature="reading index metadata")
    if is_index_folder(path):
        manifest = IndexManifest.load(path)
        table = pq.read_table(path / METADATA_FILE)
        deleted = read_deleted(path)
        if deleted.size:
            table = table.filter(pc.invert(pc.is_in(table.column("id"), value_set=pa.array(deleted))))
        kind, dirs, generated = "index", [Path(s.path) for s in manifest.sources], set(manifest.captions)
    elif is_embeddings_folder(path):
        manifest_data = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        tables = _partition_tables(path, manifest_data)
        table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({"id": pa.array(
            [], pa.int64()), "path": pa.array([], pa.string())})
        kind, dirs, generated = "embeddings", [path], set()
    else:
        raise ValueError(f"{path} is neither a geovl index nor an embeddings folder (no manifest.json of format "
                         f"{INDEX_FORMAT!r} or {EMBEDDINGS_FORMAT!r})")
    if "path" not in table.column_names:
        raise ValueError(f"{path}: its metadata has no 'path' column, so its images are unknown")
    drop = [c for c in table.column_names if c in generated or c == GENERATED_COLUMN]
    table = table.drop_columns(drop).sort_by("id").combine_chunks()
    return _Collection(path, kind, table, dirs)


# ---------------------------------------------------------------- re-cutting chips


class UnreadableChips:
    """Stands in for the chip reader of a scene whose chips cannot be re-cut: reading a chip raises ``ValueError``
    with the reason, which the decode mapper records as that input's failure."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason

    def read(self, row: int, col: int, ds: Any = None) -> Any:
        raise ValueError(self.reason)


class _ChipPlanner:
    """Chip readers for the chip rows of a collection, built with the options each scene was embedded with."""

    def __init__(self, embeddings_dirs: Sequence[Path]) -> None:
        self.dirs = list(embeddings_dirs)
        self.readers: list[Any] = []
        self._windows: list[dict[tuple[int, ...], tuple[int, int]]] = []
        self._reader_index: dict[str, int] = {}
        self._origin: tuple[np.ndarray, np.ndarray, list[dict[str, dict[str, Any]]]] | None = None

    def _load_origin(self) -> tuple[np.ndarray, np.ndarray, list[dict[str, dict[str, Any]]]]:
        """Sorted ids of every existing embeddings folder, the folder of each, and each folder's scene options."""
        ids, owner, scenes = [], [], []
        for k, folder in enumerate(self.dirs):
            options: dict[str, dict[str, Any]] = {}
            if is_embeddings_folder(folder):
                manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
                for src in manifest.get("sources") or []:
                    if src.get("kind") in _SCENE_KINDS:
                        opts = {k2: src.get(k2) for k2 in ("size", "overlap", "bands", "nodata", "min_valid_fraction")
                                if src.get(k2) is not None}
                        options.update({str(p): opts for p in src.get("paths", [])})
                for t in _partition_tables(folder, manifest, columns=["id"]):
                    part = np.asarray(t.column("id").to_numpy(), np.int64)
                    ids.append(part)
                    owner.append(np.full(part.size, k, np.int64))
            scenes.append(options)
        all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        all_owner = np.concatenate(owner) if owner else np.zeros(0, np.int64)
        order = np.argsort(all_ids, kind="stable")
        return all_ids[order], all_owner[order], scenes

    def _options(self, row_id: int, path: str) -> tuple[dict[str, Any] | None, str]:
        if self._origin is None:
            self._origin = self._load_origin()
        ids, owner, scenes = self._origin
        pos = int(np.searchsorted(ids, row_id))
        if pos < ids.size and ids[pos] == row_id:
            opts = scenes[int(owner[pos])].get(path)
            if opts is not None:
                return opts, ""
            return None, f"the embeddings folder {self.dirs[int(owner[pos])]} does not list the scene {path}"
        return None, (f"the chip options of {path} are unknown: the embeddings folder that recorded them "
                      f"({', '.join(map(str, self.dirs)) or 'none recorded'}) is gone; caption the scene itself with "
                      "the chip options it was indexed with and attach that run")

    def _unreadable(self, path: str, reason: str) -> int:
        key = f"{path}\0{reason}"
        if key not in self._reader_index:
            logger.warning("chips of %s cannot be re-cut: %s", path, reason)
            self._reader_index[key] = len(self.readers)
            self.readers.append(UnreadableChips(path, reason))
            self._windows.append({})
        return self._reader_index[key]

    def _reader(self, path: str, options: dict[str, Any]) -> int:
        from geovl.io.chips import ChipReader

        key = json.dumps([path, options], sort_keys=True, default=str)
        if key not in self._reader_index:
            try:
                reader = ChipReader(path, **options)
            except (OSError, ValueError, ImportError) as exc:
                return self._unreadable(path, f"cannot open the scene: {exc}")
            self._reader_index[key] = len(self.readers)
            self.readers.append(reader)
            self._windows.append({tuple(w): (r, c) for r, c, w in reader.windows()})
        return self._reader_index[key]

    def chip_ref(self, row_id: int, path: str, window: tuple[int, ...]) -> ChipRef:
        """The chip of ``path`` at ``window`` (col_off, row_off, width, height), as the index recorded it."""
        options, reason = self._options(row_id, path)
        if options is None:
            return ChipRef(self._unreadable(path, reason), 0, 0)
        scene = self._reader(path, options)
        cell = self._windows[scene].get(window)
        if cell is None:
            if isinstance(self.readers[scene], UnreadableChips):
                return ChipRef(scene, 0, 0)
            return ChipRef(self._unreadable(path, f"no chip at window {window} with the options the scene was "
                                                  f"embedded with ({options})"), 0, 0)
        return ChipRef(scene, *cell)


# ---------------------------------------------------------------- the source


def _rows_digest(table: Any) -> str:
    """sha256 of the rows' ids and keys: what a resumed run must find unchanged."""
    h = hashlib.sha256(np.asarray(table.column("id").to_numpy(), np.int64).tobytes())
    for name in KEY_COLUMNS:
        if name in table.column_names:
            h.update(f"\0{name}\0".encode())
            h.update("\x1f".join(map(str, table.column(name).to_pylist())).encode())
    return h.hexdigest()


class IndexSource(Source):
    """The live rows of an index (or embeddings) folder as captioning inputs, in id order (module docstring)."""

    def __init__(self, folder: PathLike) -> None:
        coll = _read_collection(Path(folder))
        self.folder = coll.path
        self.kind = coll.kind
        self.table = coll.table
        self.name = self.folder.name
        planner = _ChipPlanner(coll.embeddings_dirs)
        self._chips = self._plan_chips(planner)
        self._readers = planner.readers
        self._digest = _rows_digest(self.table)

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def _plan_chips(self, planner: _ChipPlanner) -> dict[int, ChipRef]:
        table = self.table
        if "chip_id" not in table.column_names or any(c not in table.column_names for c in WINDOW_COLUMNS):
            return {}
        chip_ids = table.column("chip_id").to_pylist()
        windows = list(zip(*(table.column(c).to_pylist() for c in WINDOW_COLUMNS), strict=True))
        ids, paths = table.column("id").to_pylist(), table.column("path").to_pylist()
        chips: dict[int, ChipRef] = {}
        for pos, (chip, window, path) in enumerate(zip(chip_ids, windows, paths, strict=True)):
            if chip is None or path is None or any(v is None for v in window):
                continue
            chips[pos] = planner.chip_ref(int(ids[pos]), str(path), tuple(int(v) for v in window))
        return chips

    def records(self) -> Iterator[Record]:
        pos = 0
        for batch in self.table.to_batches(max_chunksize=4096):
            for row in batch.to_pylist():
                meta = {"index_id": row.pop("id"), **row}
                chip = self._chips.get(pos)
                path = row.get("path")
                yield Record(chip if chip is not None else ("" if path is None else str(path)), meta)
                pos += 1

    def chip_readers(self) -> list[Any]:
        return self._readers

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.folder.resolve()), "rows": len(self),
                "rows_sha256": self._digest}


def index_sources(path: PathLike) -> list[Source]:
    """The collection of an index or embeddings folder as captioning inputs: one :class:`IndexSource`, whose records
    follow the live rows in id order and carry each row's id as ``index_id`` (module docstring).

    Raises:
        ValueError: ``path`` is neither kind of folder, or its metadata has no ``path`` column.
    """
    return [IndexSource(path)]


# ---------------------------------------------------------------- attaching


class CaptionLookup:
    """The captions of a run, by ``index_id`` (checked against the key) and by :func:`row_key`."""

    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self.by_id: dict[int, tuple[tuple[Any, ...], str, int]] = {}
        self.by_key: dict[tuple[Any, ...], tuple[str, list[int]]] = {}
        self.used: set[int] = set()
        self.total = 0
        for n, row in enumerate(rows):
            caption = row.get(CAPTION_COLUMN)
            if caption is None:
                continue
            self.total += 1
            key = row_key(row)
            if row.get("index_id") is not None:
                self.by_id[int(row["index_id"])] = (key, str(caption), n)
            if key[0] is not None:
                positions = self.by_key[key][1] if key in self.by_key else []
                self.by_key[key] = (str(caption), [*positions, n])

    def caption_for(self, row_id: int, key: tuple[Any, ...]) -> str | None:
        """The caption of the index row ``row_id`` with key ``key``, or ``None``."""
        hit = self.by_id.get(row_id)
        if hit is not None and hit[0] == key:
            self.used.add(hit[2])
            return hit[1]
        found = self.by_key.get(key) if key[0] is not None else None
        if found is None:
            return None
        self.used.update(found[1])
        return found[0]

    @property
    def unmatched(self) -> int:
        """Caption rows that matched no index row so far."""
        return self.total - len(self.used)


def caption_column(manifest: IndexManifest, columns: Sequence[str]) -> str:
    """``caption`` unless the index holds other (reference) captions there, else ``generated_caption``."""
    if CAPTION_COLUMN not in columns or CAPTION_COLUMN in manifest.captions:
        return CAPTION_COLUMN
    return GENERATED_COLUMN


def _write_metadata(src: Path, dst: Path, column: str, lookup: CaptionLookup,
                    deleted: np.ndarray) -> tuple[np.ndarray, int]:
    """Copy ``src`` to ``dst`` batch by batch with ``column`` (re)written from ``lookup``; returns the row ids and the
    number of live rows given a caption."""
    pa = require("pyarrow", extra=None, feature="writing index metadata")
    pq = require("pyarrow.parquet", extra=None, feature="writing index metadata")
    source = pq.ParquetFile(src)
    schema = source.schema_arrow
    field = pa.field(column, pa.string())
    at = schema.get_field_index(column)
    schema = schema.set(at, field) if at >= 0 else schema.append(field)
    ids_seen: list[np.ndarray] = []
    matched = 0
    with pq.ParquetWriter(dst, schema, compression="zstd") as writer:
        for batch in source.iter_batches(batch_size=_BATCH_ROWS):
            table = pa.Table.from_batches([batch])
            ids = np.asarray(table.column("id").to_numpy(), np.int64)
            captions = [lookup.caption_for(int(i), k) for i, k in zip(ids, _table_keys(table), strict=True)]
            live = ~np.isin(ids, deleted) if deleted.size else np.ones(ids.size, bool)
            matched += int(np.count_nonzero(live & np.array([c is not None for c in captions], bool)))
            values = pa.array(captions, pa.string())
            table = table.set_column(at, field, values) if at >= 0 else table.append_column(field, values)
            writer.write_table(table)
            ids_seen.append(ids)
    return np.sort(np.concatenate(ids_seen)) if ids_seen else np.zeros(0, np.int64), matched


def _check_inputs(index: Path, run: Path) -> dict[str, Any]:
    if not is_caption_run(run):
        raise ValueError(f"{run} is not a geovl caption run (no {RUN_MANIFEST} of format 'geovl-captions'); make "
                         f"one with `geovl caption INPUTS --out {run}`")
    if not is_index_folder(index):
        if is_embeddings_folder(index):
            raise ValueError(f"{index} is an embeddings folder, not an index: attach the captions to the index built "
                             f"from it ({BUILD_HINT})")
        raise ValueError(f"{index} is not a geovl index folder (no {MANIFEST_FILE} of format {INDEX_FORMAT!r}); "
                         f"{BUILD_HINT}")
    return dict(json.loads((run / RUN_MANIFEST).read_text(encoding="utf-8")))


def attach_captions(index_dir: PathLike, run_dir: PathLike) -> dict[str, Any]:
    """Write the captions of the caption run ``run_dir`` into the metadata of the index ``index_dir``.

    The column is ``caption``, or ``generated_caption`` when the index has reference captions; re-attaching
    replaces its values (rows without a caption get null). The index folder is replaced atomically, under its lock.

    Returns:
        ``{"index", "run", "column", "matched" (live rows given a caption), "unmatched" (caption rows that matched
        no index row), "uncaptioned" (live rows left null), "complete" (whether the run had finished)}``.

    Raises:
        ValueError: ``run_dir`` is not a caption run, or ``index_dir`` is not an index folder.
    """
    index, run = Path(index_dir), Path(run_dir)
    run_manifest = _check_inputs(index, run)
    lookup = CaptionLookup(read_captions(run, ("index_id", CAPTION_COLUMN, *KEY_COLUMNS)))
    pq = require("pyarrow.parquet", extra=None, feature="writing index metadata")
    with rewrite_index_folder(index) as tmp:
        manifest = IndexManifest.load(index)
        deleted = read_deleted(index)
        column = caption_column(manifest, pq.read_schema(index / METADATA_FILE).names)
        ids, matched = _write_metadata(index / METADATA_FILE, tmp / METADATA_FILE, column, lookup, deleted)
        for name in (INDEX_FILE, *((IVFDATA_FILE,) if manifest.on_disk else ())):
            link_or_copy(index / name, tmp / name)
        manifest.captions[column] = {
            "run": str(run.resolve()), "model": (run_manifest.get("model") or {}).get("name"),
            "decoding": run_manifest.get("decoding"), "attached": utc_now(), "matched": matched,
        }
        finish_index_folder(tmp, manifest, ids, deleted)
    logger.info("attached %d captions of %s to %s as %r", matched, run, index, column)
    return {"index": str(index), "run": str(run), "column": column, "matched": matched,
            "unmatched": lookup.unmatched, "uncaptioned": manifest.count - matched,
            "complete": bool(run_manifest.get("complete"))}
