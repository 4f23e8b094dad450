"""Index quality: recall@k of an approximate (ANN) index against exact search on the same embeddings.

Exact ground truth is computed in blocks (inner product on L2-normalised vectors, i.e. cosine), the way faiss'
``contrib.exhaustive_search`` does it, so memory stays bounded at any collection size.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geovl.index.faisslib import faiss_module


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, block: int = 4096) -> np.ndarray:
    """(N_q, k) ids of the k highest inner products per query, best first (exact; blocked over the base)."""
    b, q = np.asarray(base, np.float32), np.asarray(queries, np.float32)
    if b.ndim != 2 or q.ndim != 2 or b.shape[1] != q.shape[1]:
        raise ValueError(f"base and queries must be (N, D) with equal D, got {b.shape} and {q.shape}")
    if not 1 <= k <= b.shape[0]:
        raise ValueError(f"k must be in [1, {b.shape[0]}], got {k}")
    best_s = np.full((q.shape[0], k), -np.inf, np.float32)
    best_i = np.zeros((q.shape[0], k), np.int64)
    for start in range(0, b.shape[0], block):
        s = q @ b[start:start + block].T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.arange(start, start + s.shape[1])[None, :].repeat(q.shape[0], 0)], axis=1)
        keep = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, keep, axis=1)
        best_i = np.take_along_axis(cand_i, keep, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, axis=1)


def recall_at_k(exact_ids: np.ndarray, ann_ids: np.ndarray, k: int) -> float:
    """Mean share of the exact top-k that the ANN top-k found (``|ANN_k ∩ exact_k| / k``), in [0, 1]."""
    e, a = np.asarray(exact_ids), np.asarray(ann_ids)
    if e.shape[0] != a.shape[0] or e.shape[1] < k or a.shape[1] < k:
        raise ValueError(f"need at least {k} ids per query from both, got {e.shape} and {a.shape}")
    hits = [len(set(e[i, :k].tolist()) & set(a[i, :k].tolist())) for i in range(e.shape[0])]
    return float(np.mean(hits)) / k


@dataclass
class IndexQuality:
    """Recall and speed of one faiss index against exact search."""

    factory: str
    recall: dict[int, float]
    build_seconds: float
    query_ms_p50: float
    query_ms_p99: float
    exact_ms_p50: float
    params: dict[str, float | int]


def evaluate_faiss_index(
    base: np.ndarray,
    queries: np.ndarray,
    factory: str,
    *,
    ks: Sequence[int] = (1, 10, 100),
    nprobe: int | None = None,
    ef_search: int | None = None,
    timed_queries: int = 200,
) -> IndexQuality:
    """Build ``factory`` (a faiss ``index_factory`` string, inner-product metric) on ``base`` and measure it.

    Latencies are single-query (batch 1) percentiles over ``timed_queries`` queries, measured side by side with
    exact search (``IndexFlatIP``) in the same run.
    """
    faiss = faiss_module()
    b, q = np.ascontiguousarray(base, np.float32), np.ascontiguousarray(queries, np.float32)
    kmax = max(ks)
    truth = exact_topk(b, q, kmax)
    start = time.perf_counter()
    try:
        index = faiss.index_factory(b.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"faiss could not parse the index factory string '{factory}': {exc}") from exc
    if not index.is_trained:
        index.train(b)
    index.add(b)
    build = time.perf_counter() - start
    params: dict[str, float | int] = {}
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and nprobe is not None:
        ivf.nprobe = nprobe
        params["nprobe"] = nprobe
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = ef_search
        params["efSearch"] = ef_search
    _, ids = index.search(q, kmax)
    flat = faiss.IndexFlatIP(b.shape[1])
    flat.add(b)
    n = min(timed_queries, q.shape[0])
    ann_t, exact_t = [], []
    for i in range(n):
        row = q[i:i + 1]
        t0 = time.perf_counter()
        index.search(row, 10)
        t1 = time.perf_counter()
        flat.search(row, 10)
        exact_t.append(time.perf_counter() - t1)
        ann_t.append(t1 - t0)
    return IndexQuality(
        factory=factory,
        recall={k: recall_at_k(truth, ids, k) for k in ks},
        build_seconds=build,
        query_ms_p50=1000 * float(np.percentile(ann_t, 50)),
        query_ms_p99=1000 * float(np.percentile(ann_t, 99)),
        exact_ms_p50=1000 * float(np.percentile(exact_t, 50)),
        params=params,
    )
