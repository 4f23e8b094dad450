"""Batch captioning runs (``geovl caption INPUT --out OUT``): reader -> mapper (decode + caption) -> writer.

Output folder::

    manifest.json               format "geovl-captions": model, decoding, inputs, partitions done, complete flag
    part-00000.parquet          (or .jsonl) one row per captioned input: "id" (input position), "path" (or the
                                chip's "chip_id"), "caption", "model", "decoding" (JSON), "captioned_at" (UTC),
                                the chip footprint ("geometry" WKB + lon/lat bounds, "crs", "gsd") when there is one,
                                and the input's own metadata (a caption dataset's sentence as "reference_caption")
    part-00000.failures.jsonl   inputs of that partition that could not be read (never fatal)

Rules (the partition machinery of :mod:`geovl.data.partitioned`): ids are positions in the input order; a partition
is written atomically and only then listed in the manifest, so a run killed at any moment (even with SIGKILL) and
started again with the same command ends with every input captioned exactly once. A folder made with another model,
other decoding settings, other inputs or another partition size is refused rather than mixed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from geovl.data.partitioned import (
    MANIFEST,
    Item,
    PartitionedRunConfig,
    flat_records,
    is_run,
    mark_complete,
    note_partition,
    open_run,
    plan_partitions,
    read_run_rows,
    write_partition,
)
from geovl.data.sources import Source
from geovl.models.captioner import CaptionModel
from geovl.models.decoding import DecodingConfig
from geovl.tasks.captioning.pipeline import CaptioningPipeline

__all__ = ["CAPTIONS_FORMAT", "CaptionRunConfig", "CaptionRunSummary", "caption_partition_to", "is_caption_run",
           "open_caption_run", "read_captions", "run_captions"]

logger = logging.getLogger(__name__)

CAPTIONS_FORMAT = "geovl-captions"


@dataclass
class CaptionRunConfig(PartitionedRunConfig):
    """Settings of a batch captioning run: those of every partitioned run
    (:class:`~geovl.data.partitioned.PartitionedRunConfig`: batch size, decode workers, partition size, progress
    bar with images/s and ETA, limit), with smaller batches and partitions (a caption costs more than an
    embedding), and ``format``: ``parquet`` shards (GeoParquet when there are footprints) or ``jsonl``."""

    batch_size: int = 32
    partition_size: int = 1000
    format: Literal["parquet", "jsonl"] = "parquet"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in ("parquet", "jsonl"):
            raise ValueError(f"format must be 'parquet' or 'jsonl', got {self.format!r}")


@dataclass
class CaptionRunSummary:
    """What a run did: inputs seen, captioned now, skipped as already done, failed; timing."""

    out_dir: Path
    total: int
    captioned: int
    resumed: int
    failed: int
    seconds: float
    partitions: int
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.captioned / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- manifest


def open_caption_run(model: dict[str, Any], decoding: DecodingConfig, sources: Sequence[Source],
                     out_dir: str | os.PathLike[str], config: CaptionRunConfig) -> tuple[Path, dict[str, Any]]:
    """Create (or reopen, to resume) an output folder; returns it and its manifest.

    Raises:
        ValueError: no sources, or a folder holding another run (other model, decoding, inputs, partitioning).
    """
    if not sources:
        raise ValueError("nothing to caption: no inputs")
    settings = {"sources": [s.describe() for s in sources], "partition_size": config.partition_size,
                "shard_format": config.format, "limit": config.limit, "decoding": decoding.to_dict()}
    return open_run(out_dir, CAPTIONS_FORMAT, model, settings, what="captions")


def is_caption_run(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by :func:`run_captions`."""
    return is_run(path, CAPTIONS_FORMAT)


# ---------------------------------------------------------------- mapper + writer


def _caption_partition(model: CaptionModel, pipeline: CaptioningPipeline, chunk: list[Item],
                       chip_readers: list[list[Any]], bar: Any) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    records, flat_readers = flat_records(chunk, chip_readers)
    name = str(getattr(model, "name", "captioner"))
    decoding = json.dumps(pipeline.decoding.to_dict(), sort_keys=True)
    rows: list[dict[str, Any]] = []
    bad: list[tuple[str, str]] = []
    for batch in pipeline.batches(records, flat_readers):
        stamp = datetime.now(timezone.utc)
        for i, err in batch.failures:
            bad.append((str(records[i].meta.get("chip_id") or records[i].meta.get("path")), err))
        for i, caption, extra in zip(batch.positions, batch.captions, batch.meta, strict=True):
            meta = dict(records[i].meta)
            if "caption" in meta:
                meta["reference_caption"] = meta.pop("caption")
            rows.append({"id": chunk[i][0], **meta, **extra, "caption": caption, "model": name,
                         "decoding": decoding, "captioned_at": stamp.isoformat()})
        bar.update(len(batch.positions) + len(batch.failures))
    return rows, bad


class _NullBar:
    def update(self, n: int) -> None:
        pass


def caption_partition_to(out: Path, model: CaptionModel, name: str, chunk: list[Item], chip_readers: list[list[Any]],
                         config: CaptionRunConfig, decoding: DecodingConfig, workers: int = 0
                         ) -> tuple[int, list[tuple[str, str]]]:
    """Caption and write one partition (used by distributed runners); returns the row count and failures."""
    pipeline = CaptioningPipeline(model, decoding=decoding, batch_size=config.batch_size, workers=workers)
    rows, bad = _caption_partition(model, pipeline, chunk, chip_readers, _NullBar())
    write_partition(out, name, rows, bad, config.format)
    return len(rows), bad


def run_captions(model: CaptionModel, sources: Sequence[Source], out_dir: str | os.PathLike[str],
                 config: CaptionRunConfig | None = None, decoding: DecodingConfig | None = None) -> CaptionRunSummary:
    """Caption every input of ``sources`` into ``out_dir``, resuming a previous run into the same folder."""
    config = config or CaptionRunConfig()
    decoding = decoding or DecodingConfig()
    out, manifest = open_caption_run(model.record(), decoding, sources, out_dir, config)
    done = {p["name"]: p for p in manifest["partitions"]}
    chip_readers = [s.chip_readers() for s in sources]
    pipeline = CaptioningPipeline(model, decoding=decoding, batch_size=config.batch_size, workers=config.workers)
    from tqdm.auto import tqdm

    total_inputs = sum(1 for s in sources for _ in s.records())
    if config.limit is not None:
        total_inputs = min(total_inputs, config.limit)
    bar = tqdm(total=total_inputs, unit="img", desc="caption", disable=not config.progress, dynamic_ncols=True)
    summary = CaptionRunSummary(out, 0, 0, 0, 0, 0.0, 0)
    start = time.perf_counter()
    for name, chunk in plan_partitions(sources, config.partition_size, config.limit):
        summary.total += len(chunk)
        if name in done:
            summary.resumed += done[name]["count"]
            bar.update(len(chunk))
            continue
        rows, bad = _caption_partition(model, pipeline, chunk, chip_readers, bar)
        write_partition(out, name, rows, bad, config.format)
        note_partition(out / MANIFEST, manifest, name, chunk, len(rows), len(bad))
        summary.failures += bad
        summary.captioned += len(rows)
        summary.failed += len(bad)
    bar.close()
    mark_complete(out / MANIFEST, manifest)
    summary.seconds = time.perf_counter() - start
    summary.partitions = len(manifest["partitions"])
    return summary


def read_captions(out_dir: str | os.PathLike[str], columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows of a caption run's listed partitions, in id order (unlisted, half-done shards are ignored); only
    ``columns`` (those the run has, ``id`` always) when given."""
    return read_run_rows(out_dir, CAPTIONS_FORMAT, columns, what="caption")
