"""Batch change captioning of a folder of image pairs (``geovl change-caption --pairs DIR --output OUT``), resumable.

Pair folders (:func:`find_pairs`; pairs are matched by file name, an image present in one date only is reported, not
fatal; ``label/`` holds optional change masks of the same name, or the same stem)::

    DIR/A/<name>  DIR/B/<name>  [DIR/label/<name>]          LEVIR-CD samples (BIT_CD), DSIFN, LEVIR-CC without JSON
    DIR/<split>/A|B[/label]/<name>                          the LEVIR-CD release (train/, val/, test/)
    DIR/images/<split>/A|B/<name>                           LEVIR-CC

Output folder::

    manifest.json               format "geovl-change-captions": model, decoding, threshold, the pairs folder,
                                partitions done, the images without a pair ("only_before" / "only_after"), complete
    part-00000.parquet          (or .jsonl) one row per described pair: "id" (pair position), "pair_id" (the file
                                name, "<split>/<name>" in split layouts), "before", "after", "caption", "changed",
                                "probability", "heatmap" (the (h, w) grid of P(changed) over the after image,
                                row-major), "grid" ([h, w]), "threshold", "model", "decoding" (JSON), "captioned_at";
                                "split" in split layouts; "label" and "mask_changed_fraction" (share of the mask's
                                non-zero pixels) where a change mask exists
    part-00000.failures.jsonl   pairs of that partition whose before or after image could not be read (never fatal)

Rules: those of every partitioned run (:mod:`geovl.data.partitioned`): ids are positions in the sorted pair list, a
partition is written atomically and only then listed in the manifest, so a run killed at any moment and started again
with the same command ends with every pair described exactly once. A folder made with another model, other
decoding settings or threshold, another pairs folder (or another number of pairs) or partition size is refused.
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
from typing import Any, Literal

import numpy as np

from geovl._optional import require
from geovl.data.common import IMAGE_EXTENSIONS
from geovl.data.partitioned import (
    MANIFEST,
    Item,
    PartitionedRunConfig,
    geoparquet_table,
    is_run,
    mark_complete,
    note_partition,
    open_run,
    plan_partitions,
    read_run_rows,
    write_failures,
)
from geovl.data.sources import Record, Source
from geovl.io.fs import atomic_path, atomic_write_text
from geovl.io.jsonable import to_jsonable
from geovl.models.change_captioner import ChangeCaptionModel, check_threshold
from geovl.models.decoding import DecodingConfig
from geovl.tasks.change_captioning.geo import result_columns
from geovl.tasks.change_captioning.pipeline import ChangeCaptioningPipeline
from geovl.tasks.embedding import polygon_wkb

__all__ = ["CHANGE_CAPTIONS_FORMAT", "ChangeCaptionRunConfig", "ChangeCaptionRunSummary", "PairEntry", "PairListing",
           "PairSource", "find_pairs", "is_change_caption_run", "mask_changed_fraction", "read_change_captions",
           "run_change_captions", "write_rows"]

logger = logging.getLogger(__name__)

CHANGE_CAPTIONS_FORMAT = "geovl-change-captions"
_DATES = ("A", "B")
_LABEL_FOLDERS = ("label", "labels", "mask")


# ---------------------------------------------------------------- pair folders


@dataclass(frozen=True)
class PairEntry:
    """One before / after pair of a pairs folder, with its change mask when there is one."""

    pair_id: str
    before: Path
    after: Path
    label: Path | None = None
    split: str | None = None


@dataclass
class PairListing:
    """What :func:`find_pairs` found: the pairs (sorted by id), the images without a partner, and the layout."""

    root: Path
    layout: str
    pairs: list[PairEntry]
    only_before: list[str] = field(default_factory=list)
    only_after: list[str] = field(default_factory=list)


def _images(folder: Path) -> dict[str, Path]:
    return {f.name: f for f in sorted(folder.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS}


def _label_folder(folder: Path) -> Path | None:
    return next((folder / n for n in _LABEL_FOLDERS if (folder / n).is_dir()), None)


def _pair_folders(root: Path) -> tuple[str, list[tuple[str | None, Path, Path, Path | None]]]:
    """The layout's name and its (split, A folder, B folder, label folder) groups."""
    if all((root / d).is_dir() for d in _DATES):
        return "A/B", [(None, root / "A", root / "B", _label_folder(root))]
    for layout, base in (("images/<split>/A|B", root / "images"), ("<split>/A|B", root)):
        if not base.is_dir():
            continue
        splits = [s for s in sorted(base.iterdir()) if s.is_dir() and all((s / d).is_dir() for d in _DATES)]
        if splits:
            return layout, [(s.name, s / "A", s / "B", _label_folder(s)) for s in splits]
    raise ValueError(f"{root}: no pairs folder layout found: expected A/ and B/ folders (LEVIR-CD, LEVIR-CC style), "
                     "<split>/A|B or images/<split>/A|B")


def find_pairs(root: str | os.PathLike[str]) -> PairListing:
    """The before / after pairs of a pairs folder (see the module docstring for the layouts).

    Raises:
        FileNotFoundError: no such folder. ValueError: no known layout, or not one matching pair.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such pairs folder")
    layout, groups = _pair_folders(base)
    listing = PairListing(base, layout, [])
    for split, dir_a, dir_b, dir_label in groups:
        images_a, images_b = _images(dir_a), _images(dir_b)
        labels = _images(dir_label) if dir_label is not None else {}
        stems = {p.stem: p for p in labels.values()}
        prefix = f"{split}/" if split else ""
        for name in sorted(images_a.keys() & images_b.keys()):
            label = labels.get(name) or stems.get(Path(name).stem)
            listing.pairs.append(PairEntry(prefix + name, images_a[name], images_b[name], label, split))
        listing.only_before += [prefix + n for n in sorted(images_a.keys() - images_b.keys())]
        listing.only_after += [prefix + n for n in sorted(images_b.keys() - images_a.keys())]
    for side, names in (("A (before) only", listing.only_before), ("B (after) only", listing.only_after)):
        if names:
            logger.warning("%s: %d image(s) in %s, without a pair: %s", base, len(names), side, ", ".join(names[:5]))
    if not listing.pairs:
        raise ValueError(f"{base}: no before / after pair (no file name is in both A/ and B/)")
    return listing


class PairSource(Source):
    """The pairs of a :class:`PairListing` as records: the before image, with the pair in the metadata."""

    name = "change-pairs"

    def __init__(self, listing: PairListing) -> None:
        self.listing = listing

    def records(self) -> Iterator[Record]:
        for pair in self.listing.pairs:
            meta: dict[str, Any] = {"pair_id": pair.pair_id, "before": str(pair.before.resolve()),
                                    "after": str(pair.after.resolve())}
            if pair.split is not None:
                meta["split"] = pair.split
            if pair.label is not None:
                meta["label"] = str(pair.label.resolve())
            yield Record(image=meta["before"], meta=meta)

    def describe(self) -> dict[str, Any]:
        return {"kind": "change-pairs", "root": str(self.listing.root.resolve()), "layout": self.listing.layout,
                "pairs": len(self.listing.pairs)}


def mask_changed_fraction(path: str | os.PathLike[str]) -> float:
    """Share of a change mask's pixels that are non-zero (changed)."""
    from geovl.io.loading import load_image

    return float((np.asarray(load_image(path).convert("L")) > 0).mean())


# ---------------------------------------------------------------- run folder


@dataclass
class ChangeCaptionRunConfig(PartitionedRunConfig):
    """Settings of a batch change-captioning run: those of every partitioned run
    (:class:`~geovl.data.partitioned.PartitionedRunConfig`), with pair-sized batches and partitions, ``format``
    (``parquet`` or ``jsonl`` shards) and ``threshold`` (P(changed) at or above which a pair is changed; ``None``:
    the model's calibrated one)."""

    batch_size: int = 16
    partition_size: int = 500
    format: Literal["parquet", "jsonl"] = "parquet"
    threshold: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in ("parquet", "jsonl"):
            raise ValueError(f"format must be 'parquet' or 'jsonl', got {self.format!r}")
        if self.threshold is not None:
            check_threshold(self.threshold)


@dataclass
class ChangeCaptionRunSummary:
    """What a run did: pairs seen, described now, skipped as already done, failed; the unpaired images; timing."""

    out_dir: Path
    total: int = 0
    described: int = 0
    resumed: int = 0
    failed: int = 0
    changed: int = 0
    seconds: float = 0.0
    partitions: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    only_before: list[str] = field(default_factory=list)
    only_after: list[str] = field(default_factory=list)

    @property
    def pairs_per_second(self) -> float:
        return self.described / self.seconds if self.seconds > 0 else 0.0


def is_change_caption_run(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by :func:`run_change_captions`."""
    return is_run(path, CHANGE_CAPTIONS_FORMAT)


def _label_fraction(path: str) -> float | None:
    try:
        return mask_changed_fraction(path)
    except (ValueError, OSError) as exc:  # the ImageReadError family, a missing file
        logger.warning("change mask %s is unreadable (%s); mask_changed_fraction left empty", path, exc)
        return None


def _describe_partition(pipeline: ChangeCaptioningPipeline, chunk: list[Item], threshold: float, bar: Any
                        ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    before = [rec for _, rec, _ in chunk]
    after = [Record(rec.meta["after"], rec.meta) for rec in before]
    name = str(getattr(pipeline.model, "name", "change-captioner"))
    decoding = json.dumps(pipeline.decoding.to_dict(), sort_keys=True)
    rows: list[dict[str, Any]] = []
    bad: list[tuple[str, str]] = []
    for batch in pipeline.batches(before, after):
        stamp = datetime.now(timezone.utc).isoformat()
        bad += [(str(before[i].meta["pair_id"]), err) for i, err in batch.failures]
        for i, result in zip(batch.positions, batch.results, strict=True):
            meta = dict(before[i].meta)
            if "label" in meta:
                meta["mask_changed_fraction"] = _label_fraction(meta["label"])
            rows.append({"id": chunk[i][0], **meta, **result_columns(result), "threshold": threshold,
                         "model": name, "decoding": decoding, "captioned_at": stamp})
        bar.update(len(batch.positions) + len(batch.failures))
    return rows, bad


def write_rows(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> Path:
    """Write result rows atomically as Parquet (``.parquet``: a ``footprint`` ring becomes the WKB ``geometry`` of
    a GeoParquet file) or JSON Lines (any other suffix)."""
    target = Path(path)
    if target.suffix.lower() == ".parquet":
        pq = require("pyarrow.parquet", extra=None, feature="writing change-caption rows")
        table = [{**{k: v for k, v in r.items() if k != "footprint"},
                  **({"geometry": polygon_wkb(r["footprint"])} if r.get("footprint") else {})} for r in rows]
        with atomic_path(target, suffix=".tmp.parquet") as tmp:
            pq.write_table(geoparquet_table(table), tmp)
    else:
        atomic_write_text(target, "".join(json.dumps(to_jsonable(r)) + "\n" for r in rows))
    return target


def _write_partition(out: Path, name: str, rows: list[dict[str, Any]], bad: list[tuple[str, str]],
                     fmt: str) -> None:
    write_rows(out / f"{name}.{'parquet' if fmt == 'parquet' else 'jsonl'}", rows)
    write_failures(out, name, bad)


def run_change_captions(model: ChangeCaptionModel, pairs: str | os.PathLike[str] | PairListing,
                        out_dir: str | os.PathLike[str], config: ChangeCaptionRunConfig | None = None,
                        decoding: DecodingConfig | None = None) -> ChangeCaptionRunSummary:
    """Describe every pair of a pairs folder into ``out_dir``, resuming a previous run into the same folder.

    Raises:
        FileNotFoundError, ValueError: no pairs folder / layout / pair (:func:`find_pairs`); an output folder that
        holds another run.
    """
    config = config or ChangeCaptionRunConfig()
    decoding = decoding or DecodingConfig()
    listing = pairs if isinstance(pairs, PairListing) else find_pairs(pairs)
    source = PairSource(listing)
    threshold = model.threshold if config.threshold is None else config.threshold
    settings = {"sources": [source.describe()], "partition_size": config.partition_size,
                "shard_format": config.format, "limit": config.limit, "decoding": decoding.to_dict(),
                "threshold": threshold}
    out, manifest = open_run(out_dir, CHANGE_CAPTIONS_FORMAT, model.record(), settings, what="change-captions",
                             extra={"only_before": listing.only_before, "only_after": listing.only_after})
    done = {p["name"]: p for p in manifest["partitions"]}
    pipeline = ChangeCaptioningPipeline(model, decoding=decoding, threshold=config.threshold,
                                        batch_size=config.batch_size, workers=config.workers)
    from tqdm.auto import tqdm

    total = len(listing.pairs) if config.limit is None else min(len(listing.pairs), config.limit)
    bar = tqdm(total=total, unit="pair", desc="change-caption", disable=not config.progress, dynamic_ncols=True)
    summary = ChangeCaptionRunSummary(out, only_before=listing.only_before, only_after=listing.only_after)
    start = time.perf_counter()
    for name, chunk in plan_partitions([source], config.partition_size, config.limit):
        summary.total += len(chunk)
        if name in done:
            summary.resumed += done[name]["count"]
            bar.update(len(chunk))
            continue
        rows, bad = _describe_partition(pipeline, chunk, threshold, bar)
        _write_partition(out, name, rows, bad, config.format)
        note_partition(out / MANIFEST, manifest, name, chunk, len(rows), len(bad))
        summary.failures += bad
        summary.described += len(rows)
        summary.failed += len(bad)
        summary.changed += sum(bool(r["changed"]) for r in rows)
    bar.close()
    mark_complete(out / MANIFEST, manifest)
    summary.seconds = time.perf_counter() - start
    summary.partitions = len(manifest["partitions"])
    return summary


def read_change_captions(out_dir: str | os.PathLike[str], columns: Sequence[str] | None = None
                         ) -> list[dict[str, Any]]:
    """The rows of a change-caption run's listed partitions, in id order (unlisted, half-written shards are
    ignored); only ``columns`` (those the run has, ``id`` always) when given."""
    return read_run_rows(out_dir, CHANGE_CAPTIONS_FORMAT, columns, what="change-caption")
