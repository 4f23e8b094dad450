"""The embedding pipeline: reader -> mapper (decode + preprocess + encode) -> writer, driven by a runner.

Output folder::

    manifest.json        format "geovl-embeddings": model, dim, sources, partitions done, complete flag
    part-00000.npy       float32 (n, D) L2-normalised embeddings
    part-00000.parquet   metadata, same row order: global int64 "id", path, footprint (GeoParquet WKB
                         "geometry" + lon/lat bounds), "acquired", "sensor", "gsd", caption, label, user columns
    part-00000.failures.jsonl   inputs of that partition that could not be read (never fatal)

Ids are positions in the input order, so they are stable across reruns; an unreadable input leaves a gap.
Records are cut into partitions of ``partition_size``. A partition is written to temporary files, renamed into
place, and only then listed in the manifest, so after a crash or kill a rerun skips the finished partitions and
redoes the rest: nothing is lost and nothing is duplicated.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geovl import __version__
from geovl._optional import require
from geovl.data.partitioned import Item, PartitionedRunConfig, flat_records, geoparquet_table, mark_complete
from geovl.data.partitioned import note_partition as note_run_partition
from geovl.data.partitioned import plan_partitions as partition_plan
from geovl.data.sources import Source
from geovl.index.manifest import EMBEDDINGS_FORMAT
from geovl.index.manifest import MANIFEST_FILE as MANIFEST
from geovl.io.fs import atomic_path, atomic_write, atomic_write_text, remove_stale_temps
from geovl.models.backbone import Backbone
from geovl.models.record import model_record
from geovl.tasks.embedding import decode_loader, default_decode_workers

__all__ = ["EmbedConfig", "EmbedSummary", "read_embeddings", "run_embed"]

logger = logging.getLogger(__name__)



@dataclass
class EmbedConfig(PartitionedRunConfig):
    """Settings of an embedding run (:class:`~geovl.data.partitioned.PartitionedRunConfig`): ``batch_size`` images
    per model call, ``workers`` decode processes (default :func:`default_decode_workers`: 0 for a model on a CPU
    with at most 4 cores, else cores - 1), ``partition_size`` records per partition (the unit of resume),
    ``progress`` bar with images/s, ``limit`` to the first records."""

    def resolved_workers(self, device: torch.device | str = "cpu") -> int:
        return self.workers if self.workers is not None else default_decode_workers(device)


@dataclass
class EmbedSummary:
    """What a run did: records seen, embedded now, skipped as already done, failed; timing."""

    out_dir: Path
    total: int
    embedded: int
    resumed: int
    failed: int
    seconds: float
    partitions: int
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- writer


def _write_partition(out: Path, name: str, emb: np.ndarray, rows: list[dict[str, Any]],
                     failures: list[tuple[str, str]]) -> None:
    """Write one partition's embeddings, metadata and failures, each atomically (the caller lists it in the
    manifest afterwards)."""
    pq = require("pyarrow.parquet", extra=None, feature="writing embedding metadata")
    atomic_write(out / f"{name}.npy", lambda fh: np.save(fh, emb.astype(np.float32)))
    with atomic_path(out / f"{name}.parquet") as tmp:
        pq.write_table(geoparquet_table(rows), tmp)
    atomic_write_text(out / f"{name}.failures.jsonl",
                      "".join(json.dumps({"input": p, "error": e}) + "\n" for p, e in failures))


_Item = Item


def _load_manifest(out: Path, model: dict[str, Any], sources: list[dict[str, Any]], config: EmbedConfig,
                   dim: int) -> dict[str, Any]:
    path = out / MANIFEST
    if path.is_file():
        manifest = json.loads(path.read_text())
        if manifest.get("format") != EMBEDDINGS_FORMAT:
            raise ValueError(f"{out} holds something else ({path} is not a geovl embeddings manifest)")
        old, new = manifest.get("model", {}), model
        if (old.get("name"), old.get("checkpoint_sha256"), old.get("dim")) != (new["name"],
                                                                                new["checkpoint_sha256"], dim):
            raise ValueError(f"{out} was embedded with model {old.get('name')!r}; this run uses {new['name']!r}. "
                             "Use another --out folder (embeddings of different models cannot be mixed)")
        if manifest.get("sources") != sources or manifest.get("partition_size") != config.partition_size:
            raise ValueError(f"{out} was made from other inputs or another partition size; resume needs the same "
                             "inputs and --partition-size (or use another --out folder)")
        return dict(manifest)
    return {"format": EMBEDDINGS_FORMAT, "format_version": 1, "model": model, "dim": dim, "metric": "ip",
            "normalized": True, "sources": sources, "partition_size": config.partition_size, "partitions": [],
            "count": 0, "failed": 0, "complete": False, "geovl_version": __version__,
            "created": datetime.now(timezone.utc).isoformat()}


def open_run(backbone_record: dict[str, Any], dim: int, sources: Sequence[Source], out_dir: str | os.PathLike[str],
             config: EmbedConfig) -> tuple[Path, dict[str, Any]]:
    """Create (or reopen, to resume) an output folder; returns it and its manifest."""
    if not sources:
        raise ValueError("nothing to embed: no sources")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(out, backbone_record, [s.describe() for s in sources], config, dim)
    # A killed run cannot delete its half-written temporary files: remove them before writing again.
    remove_stale_temps(out)
    return out, manifest


def plan_partitions(sources: Sequence[Source], config: EmbedConfig) -> Iterator[tuple[str, list[_Item]]]:
    """``(name, records)`` of every partition, in order (ids are positions in the input order)."""
    return partition_plan(sources, config.partition_size, config.limit)


def note_partition(out: Path, manifest: dict[str, Any], name: str, chunk: list[_Item], count: int,
                   failed: int) -> None:
    """List a written partition in the manifest (rewritten atomically): from now on a rerun skips it."""
    note_run_partition(out / MANIFEST, manifest, name, chunk, count, failed)


def finish_run(out: Path, manifest: dict[str, Any]) -> None:
    mark_complete(out / MANIFEST, manifest)


def run_embed(backbone: Backbone, sources: Sequence[Source], out_dir: str | os.PathLike[str],
              config: EmbedConfig | None = None) -> EmbedSummary:
    """Embed every record of ``sources`` into ``out_dir`` (resuming a previous run into the same folder)."""
    config = config or EmbedConfig()
    out, manifest = open_run(model_record(backbone), backbone.embed_dim, sources, out_dir, config)
    done = {p["name"]: p for p in manifest["partitions"]}
    chip_readers = [s.chip_readers() for s in sources]
    workers = config.resolved_workers(backbone.device)
    from tqdm.auto import tqdm

    bar = tqdm(unit="img", desc="embed", disable=not config.progress, dynamic_ncols=True)
    total = embedded = resumed = failed = 0
    failures: list[tuple[str, str]] = []
    start = time.perf_counter()
    for name, chunk in plan_partitions(sources, config):
        total += len(chunk)
        if name in done:
            resumed += done[name]["count"]
            bar.update(len(chunk))
            continue
        rows, emb, bad = _embed_partition(backbone, chunk, chip_readers, config, workers, bar)
        _write_partition(out, name, emb, rows, bad)
        note_partition(out, manifest, name, chunk, len(rows), len(bad))
        failures += bad
        embedded += len(rows)
        failed += len(bad)
    bar.close()
    finish_run(out, manifest)
    return EmbedSummary(out_dir=out, total=total, embedded=embedded, resumed=resumed, failed=failed,
                        seconds=time.perf_counter() - start, partitions=len(manifest["partitions"]),
                        failures=failures)


def embed_partition_to(out: Path, backbone: Backbone, name: str, chunk: list[_Item], chip_readers: list[list[Any]],
                       config: EmbedConfig, workers: int = 0) -> tuple[int, list[tuple[str, str]]]:
    """Embed and write one partition (used by distributed runners); returns the row count and failures."""
    rows, emb, bad = _embed_partition(backbone, chunk, chip_readers, config, workers, _NullBar())
    _write_partition(out, name, emb, rows, bad)
    return len(rows), bad


class _NullBar:
    def update(self, n: int) -> None:
        pass


def _embed_partition(backbone: Backbone, chunk: list[_Item], chip_readers: list[list[Any]],
                     config: EmbedConfig, workers: int, bar: Any) -> tuple[list[dict[str, Any]], np.ndarray,
                                                                            list[tuple[str, str]]]:
    """Embed one partition's records; returns metadata rows, embeddings (same order) and failures."""
    records, flat_readers = flat_records(chunk, chip_readers)
    loader = decode_loader(backbone, records, flat_readers, config.batch_size, workers)
    rows: list[dict[str, Any]] = []
    chunks: list[np.ndarray] = []
    bad: list[tuple[str, str]] = []
    for idx, pixels, extra, failed in loader:
        for i, err in failed:
            bad.append((str(records[i].meta.get("chip_id") or records[i].meta.get("path")), err))
        if pixels is not None:
            chunks.append(backbone.embed_pixels(pixels).cpu().numpy())
            for i, more in zip(idx, extra, strict=True):
                rows.append({"id": chunk[i][0], **records[i].meta, **more})
        bar.update(len(idx) + len(failed))
    emb = np.concatenate(chunks) if chunks else np.zeros((0, backbone.embed_dim), np.float32)
    return rows, emb, bad


def read_embeddings(
    out_dir: str | os.PathLike[str], *, with_metadata: bool = True
) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """All partitions of an embeddings folder: ``(embeddings (N, D), metadata table or None, manifest)``.

    Only partitions listed in the manifest are read, so a run that is still going (or was killed) yields what
    it finished. Use this for moderate sizes; the index build streams partition by partition instead.
    """
    out = Path(out_dir)
    path = out / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out}: no {MANIFEST}; make embeddings with `geovl embed ... --out {out}`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != EMBEDDINGS_FORMAT:
        raise ValueError(f"{path}: not a geovl embeddings manifest")
    parts = [p["name"] for p in manifest["partitions"]]
    dim = int(manifest["dim"])
    emb = np.concatenate([np.load(out / f"{n}.npy") for n in parts]) if parts else np.zeros((0, dim), np.float32)
    table = None
    if with_metadata:
        pa = require("pyarrow", extra=None, feature="reading embedding metadata")
        pq = require("pyarrow.parquet", extra=None, feature="reading embedding metadata")
        tables = [pq.read_table(out / f"{n}.parquet") for n in parts]
        table = pa.concat_tables(tables, promote_options="default") if tables else None
    return emb, table, manifest
