"""Small geovl index folders for search tests, built through :mod:`geovl.index.store` (the path users take) from
seeded clustered vectors and synthetic metadata, plus brute-force references."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

MICRO_MODEL = {"name": "random:geovl-micro", "architecture": "geovl-micro", "checkpoint_sha256": None, "dim": 32}
SENSORS = ("S2", "L8", "WV3", "PlanetScope")
LABELS = ("forest", "river", "farmland", "residential", "airport", "desert")
T0 = datetime(2017, 1, 1, tzinfo=timezone.utc)


def clustered_vectors(n: int, dim: int, *, clusters: int = 50, noise: float = 0.35, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 unit vectors scattered around ``clusters`` random centres (embedding-like structure)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(
        dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near_queries(base: np.ndarray, n: int, *, noise: float = 0.3, seed: int = 1) -> np.ndarray:
    """Unit queries near random base vectors (like image queries against an image index)."""
    rng = np.random.default_rng(seed)
    q = base[rng.integers(0, base.shape[0], n)] + noise * rng.standard_normal((n, base.shape[1])).astype(
        np.float32) / np.sqrt(base.shape[1])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def box_wkb(west: float, south: float, east: float, north: float) -> bytes:
    """Little-endian WKB polygon of a lon/lat box."""
    ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<dd", x, y) for x, y in ring)


def synthetic_metadata(ids: np.ndarray, *, seed: int = 0) -> Any:
    """A metadata table for ``ids`` with every standard column.

    Footprints are 0.5-degree boxes on a global lon/lat grid (a few cross the antimeridian, about 2% have no
    bounds), acquisitions spread over 2017-2022, four sensors, six labels, and user columns ``cloud`` (float,
    some nulls) and ``tile`` (int).
    """
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n = ids.size
    lon = rng.uniform(-180.0, 179.5, n)
    lat = rng.uniform(-60.0, 59.5, n)
    lon_min, lat_min, lon_max, lat_max = lon, lat, lon + 0.5, lat + 0.5
    wrap = rng.random(n) < 0.01  # footprints across the antimeridian: west edge 179.8, east edge -179.7
    lon_min = np.where(wrap, 179.8, lon_min)
    lon_max = np.where(wrap, -179.7, lon_max)
    no_bounds = rng.random(n) < 0.02
    bounds = {k: pa.array(np.where(no_bounds, np.nan, v), mask=no_bounds)
              for k, v in (("lon_min", lon_min), ("lat_min", lat_min), ("lon_max", lon_max), ("lat_max", lat_max))}
    seconds = rng.integers(0, 6 * 365 * 86400, n)
    acquired = [T0 + timedelta(seconds=int(s)) for s in seconds]
    cloud = rng.uniform(0, 100, n)
    cloud_null = rng.random(n) < 0.05
    sensors = np.asarray(SENSORS)[rng.integers(0, len(SENSORS), n)]
    labels = np.asarray(LABELS)[rng.integers(0, len(LABELS), n)]
    gsd = np.select([sensors == "S2", sensors == "L8", sensors == "WV3"], [10.0, 30.0, 0.3], 3.0)
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "path": pa.array([f"chips/{i:07d}.png" for i in ids]),
        **bounds,
        "geometry": pa.array([None if nb else box_wkb(a, b, c, d)
                              for nb, a, b, c, d in zip(no_bounds, lon_min, lat_min, lon_max, lat_max, strict=True)],
                             pa.binary()),
        "acquired": pa.array(acquired, pa.timestamp("us", tz="UTC")),
        "sensor": pa.array(sensors.tolist()),
        "gsd": pa.array(gsd, pa.float64()),
        "caption": pa.array([f"{lab} seen by {s}" for lab, s in zip(labels, sensors, strict=True)]),
        "label": pa.array(labels.tolist()),
        "chip_id": pa.array([f"c{i}" for i in ids]),
        "cloud": pa.array(np.where(cloud_null, np.nan, cloud), mask=cloud_null),
        "tile": pa.array(ids % 97, pa.int64()),
    })


def write_index_dir(
    folder: Path,
    vectors: np.ndarray,
    *,
    ids: np.ndarray | None = None,
    index_type: str = "Flat",
    metadata: Any = None,
    deleted: np.ndarray | None = None,
    model: dict[str, Any] | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    on_disk: bool = False,
    calibrate: bool = False,
) -> Path:
    """Build an index folder for ``vectors`` the way users do, through :mod:`geovl.index.store`.

    The vectors and metadata (ids default to 0..N-1; metadata to :func:`synthetic_metadata`) are written as an
    embeddings folder next to ``folder`` (``<name>_embeddings``), then :func:`~geovl.index.store.build_index` builds
    ``index_type`` from it (seed 0, on the CPU). ``on_disk`` instead takes the sharded path for an IVF type:
    :func:`~geovl.index.sharded.train_ivf_quantizer`, two :func:`~geovl.index.sharded.build_shard` and
    :func:`~geovl.index.sharded.merge_shards` with ``on_disk=True`` (lists in ``index.ivfdata``). ``deleted`` ids are
    then removed with :func:`~geovl.index.store.remove_from_index`: Flat and in-RAM IVF indexes delete them, HNSW
    and on-disk indexes record tombstones (``deleted.npy``). The build is not calibrated unless ``calibrate``, so
    the default ``nprobe`` / ``efSearch`` stay the documented ones the tests rely on.
    """
    from geovl.index import sharded, store
    from tests.index_fixtures import write_embeddings

    ids = np.arange(vectors.shape[0], dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    table = synthetic_metadata(ids) if metadata is None else metadata
    record = dict(model or {"name": "synthetic", "architecture": "none", "checkpoint_sha256": None})
    emb = folder.with_name(folder.name + "_embeddings")
    if not on_disk:
        write_embeddings(emb, vectors, ids, model=record, metadata=table)
        store.build_index(emb, folder, factory=index_type, nprobe=nprobe, ef_search=ef_search, use_gpu=False,
                          progress=False, calibrate=calibrate)
    else:
        half = vectors.shape[0] // 2
        parts = [write_embeddings(emb.with_name(f"{emb.name}{i}"), vectors[sl], ids[sl], model=record, metadata=table)
                 for i, sl in enumerate((slice(0, half), slice(half, None)))]
        trained = folder.with_name(folder.name + "_trained")
        sharded.train_ivf_quantizer(parts, trained, factory=index_type, use_gpu=False, nprobe=nprobe)
        shards = [part.with_name(part.name + "_shard") for part in parts]
        for part, shard in zip(parts, shards, strict=True):
            sharded.build_shard(trained, part, shard, use_gpu=False, progress=False)
        sharded.merge_shards(shards, folder, on_disk=True)
    if deleted is not None and len(deleted):
        store.remove_from_index(folder, np.asarray(deleted, np.int64))
    return folder


def exact_filtered(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, allowed: np.ndarray,
                   k: int) -> list[list[int]]:
    """Brute force: per query, the ids of the ``k`` best allowed rows by inner product, best first."""
    rows = np.flatnonzero(allowed)
    scores = queries @ vectors[rows].T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [ids[rows[o]].tolist() for o in order]
