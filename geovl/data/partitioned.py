"""Partitioned, resumable batch runs over image sources: the pieces every run writer shares.

A run (``geovl embed``, ``geovl caption``) numbers its records in input order (the id of a record is its position,
so ids are stable across reruns), cuts them into partitions of a fixed size, writes each partition's files
atomically and only then lists the partition in the run's ``manifest.json`` (rewritten atomically). A rerun into the
same folder skips the listed partitions and redoes the rest, so a run killed at any moment ends, once restarted,
with every record processed exactly once.

Metadata rows become GeoParquet tables (:func:`geoparquet_table`): a WKB ``geometry`` footprint column with the
``geo`` schema metadata when a row has one, ``acquired`` as a UTC timestamp, ``id`` as int64.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from geovl._optional import require
from geovl.data.sources import ChipRef, Record, Source
from geovl.io.fs import atomic_path, atomic_write_text, iter_jsonl, remove_stale_temps
from geovl.io.jsonable import to_jsonable

__all__ = ["Item", "PartitionedRunConfig", "flat_records", "geoparquet_table", "mark_complete", "note_partition",
           "plan_partitions", "write_manifest"]

GEO_METADATA = {
    "version": "1.0.0",
    "primary_column": "geometry",
    "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"]}},
}

Item = tuple[int, Record, int]
"""A record of a run: its global id, the record, the index of its source."""


@dataclass
class PartitionedRunConfig:
    """What every partitioned run takes (each run's config adds its own settings and defaults).

    Attributes:
        batch_size: images per model call.
        workers: decode worker processes; 0 decodes in the model's process between forward passes; ``None``: the
            default for the model's device (:func:`geovl.tasks.embedding.default_decode_workers`).
        partition_size: records per output partition (the unit of resume).
        progress: show a progress bar with images/s.
        limit: process only the first ``limit`` records.
    """

    batch_size: int = 64
    workers: int | None = None
    partition_size: int = 10_000
    progress: bool = True
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.partition_size < 1:
            raise ValueError(f"partition_size must be >= 1, got {self.partition_size}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


def geoparquet_table(rows: list[dict[str, Any]]) -> Any:
    """A pyarrow table of metadata rows (the union of their keys; missing values are null)."""
    pa = require("pyarrow", extra=None, feature="writing run metadata")
    columns: dict[str, list[Any]] = {}
    for n, row in enumerate(rows):
        for key in row:
            if key not in columns:
                columns[key] = [None] * n
        for key, values in columns.items():
            values.append(row.get(key))
    arrays = {}
    for key, values in columns.items():
        if key == "id":
            arrays[key] = pa.array(values, pa.int64())
        elif key == "geometry":
            arrays[key] = pa.array(values, pa.binary())
        elif key == "acquired":
            stamps = [v if v is None or v.tzinfo else v.replace(tzinfo=timezone.utc) for v in values]
            arrays[key] = pa.array(stamps, pa.timestamp("us", tz="UTC"))
        else:
            try:
                arrays[key] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arrays[key] = pa.array([None if v is None else str(v) for v in values], pa.string())
    table = pa.table(arrays)
    if "geometry" in arrays:
        table = table.replace_schema_metadata({b"geo": json.dumps(GEO_METADATA).encode()})
    return table


def _numbered(sources: Sequence[Source]) -> Iterator[Item]:
    ids = itertools.count()
    for src_index, source in enumerate(sources):
        for record in source.records():
            yield next(ids), record, src_index


def plan_partitions(sources: Sequence[Source], size: int, limit: int | None = None
                    ) -> Iterator[tuple[str, list[Item]]]:
    """``(name, items)`` of every partition (``part-00000``, ...), in input order, the first ``limit`` records."""
    if size < 1:
        raise ValueError(f"partition size must be >= 1, got {size}")
    stream: Iterator[Item] = _numbered(sources)
    if limit is not None:
        stream = itertools.islice(stream, limit)
    for p in itertools.count():
        chunk = list(itertools.islice(stream, size))
        if not chunk:
            return
        yield f"part-{p:05d}", chunk


def flat_records(chunk: list[Item], chip_readers: list[list[Any]]) -> tuple[list[Record], list[Any]]:
    """The chunk's records with chip references re-indexed into one flat list of chip readers (for
    :class:`geovl.tasks.embedding.DecodeMapper`), and that list."""
    records = []
    for _, rec, src in chunk:
        if isinstance(rec.image, ChipRef):
            offset = sum(len(r) for r in chip_readers[:src])
            rec = Record(ChipRef(offset + rec.image.scene, rec.image.row, rec.image.col), rec.meta)
        records.append(rec)
    return records, [r for readers in chip_readers for r in readers]


def write_manifest(path: Path, data: dict[str, Any]) -> None:
    """Write a run manifest atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def note_partition(path: Path, manifest: dict[str, Any], name: str, chunk: list[Item], count: int,
                   failed: int) -> None:
    """List a written partition in the manifest at ``path`` (rewritten atomically): from now on a rerun skips it."""
    manifest["partitions"] = [p for p in manifest["partitions"] if p["name"] != name]
    manifest["partitions"].append({"name": name, "count": count, "failed": failed,
                                   "first_id": chunk[0][0], "last_id": chunk[-1][0]})
    manifest["partitions"].sort(key=lambda p: p["name"])
    manifest["count"] = sum(x["count"] for x in manifest["partitions"])
    manifest["failed"] = sum(x["failed"] for x in manifest["partitions"])
    write_manifest(path, manifest)


def mark_complete(path: Path, manifest: dict[str, Any]) -> None:
    """Mark the run complete (every partition written)."""
    manifest["complete"] = True
    manifest["updated"] = datetime.now(timezone.utc).isoformat()
    write_manifest(path, manifest)


# ---------------------------------------------------------------- run folders of result rows

MANIFEST = "manifest.json"


def model_identity(model: dict[str, Any]) -> tuple[Any, ...]:
    """What must match for a run folder to be resumed with a model: its name and weights' sha256."""
    return model.get("name"), model.get("checkpoint_sha256")


def open_run(out_dir: str | os.PathLike[str], fmt: str, model: dict[str, Any], settings: dict[str, Any], *,
             what: str, extra: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """Create (or reopen, to resume) the output folder of a run of ``fmt`` rows; returns it and its manifest.

    ``settings`` (inputs, partition size, shard format, model options) must equal the folder's to resume;
    ``extra`` goes into a new manifest only (facts about the inputs, not settings).

    Raises:
        ValueError: a file in the folder's place, or a folder holding another run (another format, model or
        settings), naming what differs.
    """
    from geovl import __version__

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; the output must be a folder")
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    if path.is_file():
        manifest = json.loads(path.read_text())
        if manifest.get("format") != fmt:
            raise ValueError(f"{out} holds something else ({path} is not a geovl {what} manifest)")
        if model_identity(manifest.get("model", {})) != model_identity(model):
            raise ValueError(f"{out} was made with model {manifest.get('model', {}).get('name')!r}; this run uses "
                             f"{model.get('name')!r}. Use another output folder")
        changed = [k for k, v in settings.items() if to_jsonable(manifest.get(k)) != to_jsonable(v)]
        if changed:
            raise ValueError(f"{out} was made with other {', '.join(changed)}; resume with the same inputs and "
                             "options, or use another output folder")
    else:
        manifest = {"format": fmt, "format_version": 1, "model": model, **settings, **(extra or {}),
                    "partitions": [], "count": 0, "failed": 0, "complete": False, "geovl_version": __version__,
                    "created": datetime.now(timezone.utc).isoformat()}
    remove_stale_temps(out)  # a killed run cannot delete its half-written temporary files
    return out, to_jsonable(manifest)


def is_run(path: str | os.PathLike[str], fmt: str) -> bool:
    """Whether ``path`` is a run folder of ``fmt`` rows."""
    manifest = Path(path) / MANIFEST
    try:
        return manifest.is_file() and bool(json.loads(manifest.read_text()).get("format") == fmt)
    except (json.JSONDecodeError, OSError):
        return False


def write_partition(out: Path, name: str, rows: list[dict[str, Any]], bad: list[tuple[str, str]],
                    shard_format: str) -> None:
    """Write one partition's rows (Parquet, GeoParquet with footprints, or JSON Lines) and failures atomically."""
    if shard_format == "parquet":
        pq = require("pyarrow.parquet", extra=None, feature="writing result shards")
        with atomic_path(out / f"{name}.parquet") as tmp:
            pq.write_table(geoparquet_table(rows), tmp)
    else:
        atomic_write_text(out / f"{name}.jsonl", "".join(json.dumps(to_jsonable(r)) + "\n" for r in rows))
    write_failures(out, name, bad)


def write_failures(out: Path, name: str, bad: list[tuple[str, str]]) -> None:
    """``<name>.failures.jsonl``: the inputs of a partition that could not be read, with the reason."""
    atomic_write_text(out / f"{name}.failures.jsonl",
                      "".join(json.dumps({"input": p, "error": e}) + "\n" for p, e in bad))


def read_run_rows(out_dir: str | os.PathLike[str], fmt: str, columns: Sequence[str] | None = None, *,
                  what: str) -> list[dict[str, Any]]:
    """The rows of a run's listed partitions, in id order (unlisted, half-written shards are ignored); only
    ``columns`` (those the run has, ``id`` always) when given."""
    out = Path(out_dir)
    if not is_run(out, fmt):
        raise ValueError(f"{out} is not a geovl {what} run folder (no {MANIFEST} of format {fmt!r})")
    manifest = json.loads((out / MANIFEST).read_text())
    wanted = None if columns is None else ["id", *(c for c in columns if c != "id")]
    rows: list[dict[str, Any]] = []
    for part in manifest["partitions"]:
        if manifest.get("shard_format") == "jsonl":
            shard = iter_jsonl(out / f"{part['name']}.jsonl")
            rows.extend(r if wanted is None else {k: r[k] for k in wanted if k in r} for r in shard)
        else:
            pq = require("pyarrow.parquet", extra=None, feature=f"reading {what} shards")
            path = out / f"{part['name']}.parquet"
            names = set(pq.read_schema(path).names)
            rows.extend(pq.read_table(path, columns=None if wanted is None else [c for c in wanted if c in names])
                        .to_pylist())
    return sorted(rows, key=lambda r: int(r["id"]))
