"""Filtered search: single-query latency and recall@10 of geovl's Searcher, unfiltered and with filters that
match 50%, 10%, 1% and 0.1% of the rows, against exact filtered brute force.

Each filtered row is measured on both search paths (the exact scan over the matching rows, and the ANN index with
an id selector) so the crossover that sets ``DEFAULT_EXACT_THRESHOLD`` is visible; the ``default`` column says
which path the default threshold picks. Filters are on a uniform random column (uncorrelated with the vectors)
and, with ``--correlated``, on a region column that follows the vector clusters (the hard case for HNSW).

    python benchmarks/filtered_search.py                       # 200k x 512, HNSW32 (efConstruction 40)
    python benchmarks/filtered_search.py --n 1000000           # the full size
    python benchmarks/filtered_search.py --index IVF1024,Flat --nprobe 8
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geovl.index.faisslib import faiss_module
from geovl.index.filters import Filters
from geovl.index.search import DEFAULT_EXACT_THRESHOLD, Searcher

faiss = faiss_module()  # with faiss' OpenBLAS set up for this CPU (geovl.index.faisslib)

BUCKETS = 10_000


def clustered(n: int, dim: int, clusters: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) unit vectors around random centres, built in chunks to bound memory; also the cluster of each."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    assign = rng.integers(0, clusters, n)
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        block = centres[assign[s:e]] + 0.35 * rng.standard_normal((e - s, dim)).astype(np.float32) / np.sqrt(dim)
        x[s:e] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x, assign


def write_index(folder: Path, x: np.ndarray, metadata: pa.Table, key: str, ef_search: int, nprobe: int) -> float:
    """Build ``key`` with global ids 0..N-1 and write a geovl index folder; returns the build seconds."""
    start = time.perf_counter()
    d = x.shape[1]
    ids = np.arange(x.shape[0], dtype=np.int64)
    ivf = key.startswith("IVF")
    index: Any = faiss.index_factory(d, key if ivf else f"IDMap2,{key}", faiss.METRIC_INNER_PRODUCT)
    if key.startswith("HNSW"):
        hnsw: Any = faiss.downcast_index(index.index)
        hnsw.hnsw.efConstruction = 40
    if ivf:
        sample = x[np.random.default_rng(0).choice(x.shape[0], min(x.shape[0], 100_000), replace=False)]
        index.train(sample)
    index.add_with_ids(x, ids)
    build = time.perf_counter() - start
    faiss.write_index(index, str(folder / "index.faiss"))
    pq.write_table(metadata, folder / "metadata.parquet")
    manifest = {"format": "geovl-index", "format_version": 1,
                "model": {"name": "synthetic", "architecture": "none", "checkpoint_sha256": None, "dim": d},
                "dim": d, "metric": "ip", "count": int(x.shape[0]), "deleted": 0, "index_type": key,
                "params": {"nprobe": nprobe, "efSearch": ef_search}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return build


def exact_truth(x: np.ndarray, q: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(nq, k) ids of the exact top-k over ``rows`` (blocked)."""
    best_s = np.full((q.shape[0], 0), -np.inf, np.float32)
    best_i = np.zeros((q.shape[0], 0), np.int64)
    for s in range(0, rows.size, 65_536):
        r = rows[s:s + 65_536]
        scores = q @ x[r].T
        cand_s = np.concatenate([best_s, scores], 1)
        cand_i = np.concatenate([best_i, np.broadcast_to(r, scores.shape)], 1)
        keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    return best_i


def measure(searcher: Searcher, q: np.ndarray, filters: Filters | None, truth: np.ndarray, k: int
            ) -> tuple[float, float, float, int]:
    """p50 ms, p99 ms, recall@k and the number of short result lists, over single-query searches."""
    times, got, short = [], [], 0
    searcher.search(q[0], k=k, filters=filters)  # warm caches (column conversion)
    for row in q:
        t0 = time.perf_counter()
        hits = searcher.search(row, k=k, filters=filters)
        times.append(time.perf_counter() - t0)
        got.append([h.id for h in hits])
        short += len(hits) < min(k, truth.shape[1])
    rec = float(np.mean([len(set(g) & set(t.tolist())) / len(t) for g, t in zip(got, truth, strict=True)]))
    return 1000 * float(np.percentile(times, 50)), 1000 * float(np.percentile(times, 99)), rec, short


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="vectors in the index")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--index", default="HNSW32", help="HNSW<M> (efConstruction 40), Flat or an IVF factory string")
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads (1 is fastest for batch-1)")
    ap.add_argument("--selectivity", default="0.5,0.1,0.01,0.001", help="shares of rows the filters match")
    ap.add_argument("--correlated", action="store_true", help="also filter on a cluster-correlated column")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    x, assign = clustered(args.n, args.dim, args.clusters, rng)
    qi = rng.integers(0, args.n, args.queries)
    q = x[qi] + 0.3 * rng.standard_normal((args.queries, args.dim)).astype(np.float32) / np.sqrt(args.dim)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    bucket = rng.integers(0, BUCKETS, args.n)
    region = (assign * 7919) % BUCKETS  # cluster-correlated: every vector of a cluster shares its region
    metadata = pa.table({"id": pa.array(np.arange(args.n), pa.int64()), "bucket": pa.array(bucket, pa.int64()),
                         "region": pa.array(region, pa.int64())})
    print(f"# data: {args.n} x {args.dim}, {args.clusters} clusters, {time.perf_counter() - t0:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build = write_index(folder, x, metadata, args.index, args.ef_search, args.nprobe)
        t0 = time.perf_counter()
        searcher = Searcher(folder)
        load = time.perf_counter() - t0
        print(f"# filtered search, {date.today()}, {platform.machine()}, faiss {faiss.__version__}, "
              f"{args.threads} thread(s); {args.index} build {build:.1f} s, Searcher load {load:.2f} s; "
              f"efSearch {args.ef_search}, nprobe {args.nprobe}; {args.queries} single queries, k={args.k}; "
              f"DEFAULT_EXACT_THRESHOLD {DEFAULT_EXACT_THRESHOLD}\n")
        print("| filter | matching rows | path | default | p50 ms | p99 ms | recall@10 | short lists |")
        print("|---|---|---|---|---|---|---|---|")
        truth = exact_truth(x, q, np.arange(args.n), args.k)
        p50, p99, rec, short = measure(searcher, q, None, truth, args.k)
        print(f"| none | {args.n} | unfiltered | yes | {p50:.2f} | {p99:.2f} | {rec:.3f} | {short} |")

        cases: list[tuple[str, Filters, np.ndarray]] = []
        for share in (float(s) for s in args.selectivity.split(",")):
            cut = max(1, round(share * BUCKETS))
            cases.append((f"{share:.1%} uniform", Filters(where={"bucket": (None, cut - 1)}), bucket < cut))
            if args.correlated:
                cases.append((f"{share:.1%} by cluster", Filters(where={"region": (None, cut - 1)}), region < cut))
        for name, filters, mask in cases:
            rows = np.flatnonzero(mask)
            truth = exact_truth(x, q, rows, args.k)
            default = searcher.plan(filters).path
            for path, threshold in (("exact", args.n), ("ann", 0)):
                searcher.exact_threshold = threshold
                p50, p99, rec, short = measure(searcher, q, filters, truth, args.k)
                mark = "yes" if path == default else ""
                print(f"| {name} | {rows.size} | {path} | {mark} | {p50:.2f} | {p99:.2f} | {rec:.3f} | {short} |")
            searcher.exact_threshold = DEFAULT_EXACT_THRESHOLD


if __name__ == "__main__":
    main()
