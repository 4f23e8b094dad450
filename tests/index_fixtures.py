"""Seeded generators for index tests: clustered unit vectors and embeddings folders in the pipeline's layout.

Vectors are clustered (centres + small noise), like image embeddings; on i.i.d. noise no ANN index works, so
recall tests on it would say nothing.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DIM = 32
TEST_MODEL: dict[str, Any] = {"name": "geovl-test-tiny", "architecture": "tiny-vit", "checkpoint_sha256": "ab" * 32,
                              "dim": DIM, "precision": "fp32"}
OTHER_MODEL: dict[str, Any] = {**TEST_MODEL, "name": "other-model", "checkpoint_sha256": "cd" * 32}


def clustered_unit_vectors(n: int, dim: int = DIM, *, n_clusters: int = 40, spread: float = 1.0, seed: int = 0,
                           centre_seed: int = 0) -> np.ndarray:
    """(n, dim) float32 L2-normalised rows around ``n_clusters`` random centres (noise norm ~``spread``).

    Calls with the same ``centre_seed`` and different ``seed`` draw new points from the same distribution.
    """
    centres = np.random.default_rng(centre_seed).standard_normal((n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed + 1_000_003)
    x = centres[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, dim)) * spread / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def gappy_ids(n: int, *, start: int = 0, seed: int = 0) -> np.ndarray:
    """``n`` increasing int64 ids from ``start`` with gaps of 1-3 (failed inputs leave holes)."""
    steps = np.random.default_rng(seed).integers(1, 4, n)
    return (start + np.cumsum(steps) - steps[0]).astype(np.int64)


def _wkb_box(x0: float, y0: float, x1: float, y1: float) -> bytes:
    ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<dd", x, y) for x, y in ring)


def metadata_table(ids: np.ndarray, *, extra: bool = True) -> Any:
    """A GeoParquet-like metadata table: id, path and (``extra``) bbox, WKB geometry, time, sensor, caption."""
    import pyarrow as pa

    cols: dict[str, Any] = {"id": pa.array(ids, pa.int64()), "path": pa.array([f"chips/{i}.png" for i in ids])}
    if extra:
        lon = -10.0 + (ids % 97) * 0.01
        lat = 40.0 + (ids % 89) * 0.01
        cols.update(
            lon_min=pa.array(lon), lat_min=pa.array(lat), lon_max=pa.array(lon + 0.005), lat_max=pa.array(lat + 0.005),
            geometry=pa.array([_wkb_box(a, b, a + 0.005, b + 0.005) for a, b in zip(lon, lat, strict=True)],
                              pa.binary()),
            acquired=pa.array((1_600_000_000_000_000 + ids * 86_400_000_000).astype("int64"),
                              pa.timestamp("us", tz="UTC")),
            sensor=pa.array(["sentinel-2" if i % 2 else "naip" for i in ids]),
            caption=pa.array([f"chip {i}" for i in ids]),
        )
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "bbox": [0, 0, 1, 1]}}}
    table = pa.table(cols)
    return table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}) if extra else table


def write_embeddings(path: Path, vectors: np.ndarray, ids: np.ndarray | None = None, *,
                     model: Mapping[str, Any] | None = None, partition_size: int = 1000,
                     shuffle_partition: int | None = None, extra_columns: bool = True,
                     metadata: Any = None) -> Path:
    """Write an embeddings folder (manifest.json + part-NNNNN.npy/.parquet) in the pipeline's layout.

    Args:
        path: the folder to create.
        vectors: (N, D) float32 unit rows.
        ids: global ids (default :func:`gappy_ids`).
        model: model record (default :data:`TEST_MODEL`).
        partition_size: rows per partition.
        shuffle_partition: index of a partition whose rows are written in shuffled id order.
        extra_columns: add the optional geo/time/caption columns.
        metadata: a pyarrow table with an ``id`` column holding every id, written instead of the generated
            columns (each partition gets the rows of its ids, in its order).
    """
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    ids = gappy_ids(len(vectors)) if ids is None else np.asarray(ids, np.int64)
    model = dict(TEST_MODEL if model is None else model)
    model["dim"] = int(vectors.shape[1])
    parts: list[dict[str, Any]] = []
    if metadata is not None:
        table_ids = np.asarray(metadata.column("id").to_numpy(), np.int64)
        by_id = np.argsort(table_ids, kind="stable")
    for p, start in enumerate(range(0, len(vectors), partition_size)):
        name = f"part-{p:05d}"
        v, i = vectors[start:start + partition_size], ids[start:start + partition_size]
        if shuffle_partition == p:
            order = np.random.default_rng(p).permutation(len(i))
            v, i = v[order], i[order]
        np.save(path / f"{name}.npy", np.ascontiguousarray(v, np.float32))
        if metadata is None:
            table = metadata_table(i, extra=extra_columns)
        else:
            rows = by_id[np.minimum(np.searchsorted(table_ids[by_id], i), len(by_id) - 1)]
            if not np.array_equal(table_ids[rows], i):
                raise ValueError("metadata lacks some of the ids")
            table = metadata.take(rows)
        pq.write_table(table, path / f"{name}.parquet")
        parts.append({"name": name, "count": len(i)})
    manifest = {"format": "geovl-embeddings", "format_version": 1, "model": model, "dim": int(vectors.shape[1]),
                "metric": "ip", "normalized": True, "count": len(vectors), "partitions": parts, "complete": True,
                "geovl_version": "0.1.0", "created": "2025-01-01T00:00:00+00:00"}
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return path


def exact_topk(base: np.ndarray, base_ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Global ids of the exact top-``k`` inner products (faiss IndexFlatIP)."""
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, np.float32))
    _, rows = index.search(np.ascontiguousarray(queries, np.float32), k)
    return np.asarray(base_ids)[rows]


def recall(exact: np.ndarray, found: np.ndarray) -> float:
    """Mean share of each row of ``exact`` found in the same row of ``found``."""
    k = exact.shape[1]
    return float(np.mean([len(set(e.tolist()) & set(f.tolist())) / k for e, f in zip(exact, found, strict=True)]))


def folder_bytes(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name -> bytes), to assert a folder is unchanged."""
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def leftovers(out: Path) -> Sequence[Path]:
    """Temporary or set-aside folders a writer of ``out`` left next to it."""
    return sorted(p for p in out.parent.iterdir() if p.is_dir() and p.name.startswith(f".{out.name}."))
