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

import contextlib
import itertools
import json
import logging
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from geovl import __version__
from geovl._optional import require
from geovl.index.embed import model_record
from geovl.index.manifest import EMBEDDINGS_FORMAT
from geovl.index.manifest import MANIFEST_FILE as MANIFEST
from geovl.index.sources import ChipRef, Record, Source

__all__ = ["EmbedConfig", "EmbedSummary", "Record", "decode_loader", "default_decode_workers", "read_embeddings",
           "run_embed"]
from geovl.io.images import ImageReadError
from geovl.vlm.backbone import Backbone

logger = logging.getLogger(__name__)



@dataclass
class EmbedConfig:
    """Settings of an embedding run.

    Attributes:
        batch_size: images per model call.
        workers: decode worker processes; 0 decodes in the model's process between forward passes. Default
            :func:`default_decode_workers` (0 for a model on a CPU with at most 4 cores, else cores - 1).
        partition_size: records per output partition (the unit of resume).
        progress: show a progress bar with images/s.
        limit: embed only the first ``limit`` records.
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

    def resolved_workers(self, device: torch.device | str = "cpu") -> int:
        return self.workers if self.workers is not None else default_decode_workers(device)


#: A model on a CPU with at most this many cores decodes in its own process by default (see
#: :func:`default_decode_workers`).
SMALL_CPU_CORES = 4


def default_decode_workers(device: torch.device | str, cores: int | None = None) -> int:
    """How many decode processes to run beside a model on ``device``.

    On a GPU: one per spare core, so that decoding overlaps the forward passes. On a CPU with few cores the
    model's threads already occupy every core, and a decode process beside them pre-empts those threads (which
    wait for each other at every layer): measured on 2 cores (docs/benchmarks.md), decoding in the model's
    process between forward passes was at least as fast for every model tried (0.73 vs 0.65 of the bare model for
    the bundled model's architecture, 0.95 vs 0.93 for ViT-B/32). Larger CPUs keep worker processes.
    """
    cores = cores or os.cpu_count() or 2
    if torch.device(device).type == "cpu" and cores <= SMALL_CPU_CORES:
        return 0
    return max(1, cores - 1)


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


# ---------------------------------------------------------------- mapper (runs in DataLoader workers)


def _polygon_wkb(ring: Sequence[tuple[float, float]]) -> bytes:
    """ISO WKB (little endian) of a one-ring polygon, as GeoParquet stores geometries."""
    pts = list(ring)
    if pts and pts[0] != pts[-1]:
        pts.append(pts[0])
    return struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(pts)) + b"".join(struct.pack("<dd", x, y)
                                                                                for x, y in pts)


def _chip_meta(chip: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"gsd": chip.gsd, "sensor": chip.sensor, "acquired": chip.acquired,
                            "valid_fraction": float(chip.valid_fraction), "crs": chip.crs}
    if chip.lonlat_bounds is not None:
        meta.update(zip(("lon_min", "lat_min", "lon_max", "lat_max"), map(float, chip.lonlat_bounds), strict=True))
    if chip.footprint:
        meta["geometry"] = _polygon_wkb(chip.footprint)
    return meta


class _Mapper(Dataset):
    """Decode + preprocess one record per item; returns (position, tensor | None, extra metadata, error)."""

    def __init__(self, records: Sequence[Record], transform: Callable[[Any], torch.Tensor], chip_readers: list[Any]):
        self.records = records
        self.transform = transform
        self.chip_readers = chip_readers
        self._open: dict[int, Any] = {}  # per worker process: scene index -> open rasterio dataset

    def __len__(self) -> int:
        return len(self.records)

    def _dataset(self, scene: int) -> Any:
        if scene not in self._open:
            from geovl.io.geotiff import open_dataset

            ctx = open_dataset(self.chip_readers[scene].path)
            self._open[scene] = (ctx, ctx.__enter__())
        return self._open[scene][1]

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, dict[str, Any], str | None]:
        from PIL import Image

        from geovl.io.geotiff import load_any_image

        image = self.records[i].image
        try:
            if isinstance(image, ChipRef):
                chip = self.chip_readers[image.scene].read(image.row, image.col, self._dataset(image.scene))
                if chip is None:
                    return i, None, {}, "below the minimum valid-pixel fraction"
                return i, self.transform(Image.fromarray(chip.image[:, :, :3])), _chip_meta(chip), None
            return i, self.transform(load_any_image(image)), {}, None
        except (ImageReadError, OSError, ValueError) as exc:
            return i, None, {}, str(exc)


def _collate(items: list[tuple[int, torch.Tensor | None, dict[str, Any], str | None]]) -> Any:
    ok = [(i, t, m) for i, t, m, _ in items if t is not None]
    bad = [(i, e or "unreadable") for i, t, _, e in items if t is None]
    pixels = torch.stack([t for _, t, _ in ok]) if ok else None
    return [i for i, _, _ in ok], pixels, [m for _, _, m in ok], bad


def decode_loader(backbone: Backbone, records: Sequence[Record], chip_readers: list[Any], batch_size: int,
                  workers: int) -> DataLoader:
    """Batches of ``(positions, pixels | None, chip metadata, failures)``, decoded in ``workers`` processes."""
    cpu = backbone.device.type == "cpu"
    return DataLoader(_Mapper(records, backbone.uint8_transform, chip_readers), batch_size=batch_size,
                      num_workers=workers, collate_fn=_collate, pin_memory=not cpu,
                      worker_init_fn=_yield_to_the_model if cpu else None, prefetch_factor=4 if workers else None)


def _yield_to_the_model(_: int) -> None:
    """Decode workers run at a lower CPU priority when the model shares the CPU: the model's OpenMP threads wait
    for each other at every layer, so a worker that pre-empts one of them stalls all of them."""
    with contextlib.suppress(OSError):  # not permitted: keep the default priority
        os.nice(10)


# ---------------------------------------------------------------- writer


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_GEO_METADATA = {
    "version": "1.0.0",
    "primary_column": "geometry",
    "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"]}},
}


def _metadata_table(rows: list[dict[str, Any]]) -> Any:
    pa = require("pyarrow", extra="index", feature="writing embedding metadata")
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
        table = table.replace_schema_metadata({b"geo": json.dumps(_GEO_METADATA).encode()})
    return table


def _write_partition(out: Path, name: str, emb: np.ndarray, rows: list[dict[str, Any]],
                     failures: list[tuple[str, str]]) -> None:
    """Write one partition's embeddings, metadata and failures, each atomically (the caller lists it in the
    manifest afterwards)."""
    pq = require("pyarrow.parquet", extra="index", feature="writing embedding metadata")
    def save_npy(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, emb.astype(np.float32))

    _atomic(out / f"{name}.npy", save_npy)
    _atomic(out / f"{name}.parquet", lambda tmp: pq.write_table(_metadata_table(rows), tmp))

    def save_failures(tmp: str) -> None:
        Path(tmp).write_text("".join(json.dumps({"input": p, "error": e}) + "\n" for p, e in failures))

    _atomic(out / f"{name}.failures.jsonl", save_failures)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(data, indent=2, default=str) + "\n")

    _atomic(path, write)


# ---------------------------------------------------------------- runner


_Item = tuple[int, Record, int]  # global id, record, index of its source


def _numbered(sources: Sequence[Source]) -> Iterator[_Item]:
    ids = itertools.count()
    for src_index, source in enumerate(sources):
        for record in source.records():
            yield next(ids), record, src_index


def _chunks(items: Iterator[_Item], size: int) -> Iterator[list[_Item]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


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
    for stale in [*out.glob(".part-*.tmp"), *out.glob(f".{MANIFEST}.*.tmp")]:
        stale.unlink(missing_ok=True)
    return out, manifest


def plan_partitions(sources: Sequence[Source], config: EmbedConfig) -> Iterator[tuple[str, list[_Item]]]:
    """``(name, records)`` of every partition, in order (ids are positions in the input order)."""
    stream: Iterator[_Item] = _numbered(sources)
    if config.limit is not None:
        stream = itertools.islice(stream, config.limit)
    for p, chunk in enumerate(_chunks(stream, config.partition_size)):
        yield f"part-{p:05d}", chunk


def note_partition(out: Path, manifest: dict[str, Any], name: str, chunk: list[_Item], count: int,
                   failed: int) -> None:
    """List a written partition in the manifest (rewritten atomically): from now on a rerun skips it."""
    manifest["partitions"] = [p for p in manifest["partitions"] if p["name"] != name]
    manifest["partitions"].append({"name": name, "count": count, "failed": failed,
                                   "first_id": chunk[0][0], "last_id": chunk[-1][0]})
    manifest["partitions"].sort(key=lambda p: p["name"])
    manifest["count"] = sum(x["count"] for x in manifest["partitions"])
    manifest["failed"] = sum(x["failed"] for x in manifest["partitions"])
    _write_json(out / MANIFEST, manifest)


def finish_run(out: Path, manifest: dict[str, Any]) -> None:
    manifest["complete"] = True
    manifest["updated"] = datetime.now(timezone.utc).isoformat()
    _write_json(out / MANIFEST, manifest)


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
    records = []
    for _, rec, src in chunk:
        if isinstance(rec.image, ChipRef):
            # Flatten (source, scene) into one index space for the mapper.
            offset = sum(len(r) for r in chip_readers[:src])
            rec = Record(ChipRef(offset + rec.image.scene, rec.image.row, rec.image.col), rec.meta)
        records.append(rec)
    flat_readers = [r for readers in chip_readers for r in readers]
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
        pa = require("pyarrow", extra="index", feature="reading embedding metadata")
        pq = require("pyarrow.parquet", extra="index", feature="reading embedding metadata")
        tables = [pq.read_table(out / f"{n}.parquet") for n in parts]
        table = pa.concat_tables(tables, promote_options="default") if tables else None
    return emb, table, manifest
