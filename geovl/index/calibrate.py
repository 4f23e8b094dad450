"""Measure an index's recall and latency at build time, and pick the search width that reaches a recall target.

:func:`calibrate` draws a seeded sample of the collection's own vectors as queries, finds their exact top-``k``
neighbours by brute force over every vector (each query's own id excluded, so a query does not find itself: the
sample stands in for new, held-out queries), then searches the built index at widening settings (IVF ``nprobe``
4, 8, 16, ...; HNSW ``efSearch`` 16, 32, ...) until recall@k reaches the target, and times single queries at the
chosen setting. The result goes into the manifest's ``expected`` record and the chosen setting becomes the index's
default; ``geovl index info`` prints both.

Rules: the figures are measured on this machine at build time and say so (``measured``); image-like queries from
the collection are in distribution, while text queries sit elsewhere in the joint space and can need a wider
search (docs/benchmarks.md compares both on the default model).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from geovl.index.access import IndexAccess, top_k
from geovl.index.choose import IndexParams
from geovl.index.faiss_ops import sample_with_ids
from geovl.index.manifest import EmbeddingSet, utc_now
from geovl.index.metadata import parquet_ids

__all__ = ["CALIBRATION_QUERIES", "RECALL_TARGET", "calibrate"]

logger = logging.getLogger(__name__)

RECALL_TARGET = 0.99
"""Default recall@10 the calibration widens the search for (on in-collection queries; text queries lose a little)."""
CALIBRATION_QUERIES = 200
"""Queries drawn from the collection to measure recall."""
TIMED_QUERIES = 100
"""Single queries timed at the chosen setting."""
_NPROBE_LADDER = (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
_EF_LADDER = (16, 32, 64, 128, 256, 512, 1024)


def exact_neighbours(faiss: Any, q: np.ndarray, q_ids: np.ndarray, sets: Sequence[EmbeddingSet], k: int
                     ) -> np.ndarray:
    """(Q, k) ids of the exact top-``k`` inner-product neighbours of ``q`` over every vector in ``sets``, each
    query's own id excluded; streamed partition by partition."""
    best_s = np.full((q.shape[0], 0), -np.inf, np.float32)
    best_i = np.zeros((q.shape[0], 0), np.int64)
    for s in sets:
        for part in s.partitions:
            if not part.count:
                continue
            x = np.load(part.vectors, mmap_mode="r")
            ids = parquet_ids(part.metadata)
            for start in range(0, part.count, 262_144):
                block = np.ascontiguousarray(x[start:start + 262_144], np.float32)
                d, i = faiss.knn(q, block, min(k + 1, block.shape[0]), metric=faiss.METRIC_INNER_PRODUCT)
                found = ids[start:start + 262_144][i]
                d = np.where(found == q_ids[:, None], -np.inf, d).astype(np.float32)
                best_s, best_i = top_k(np.concatenate([best_s, d], 1), np.concatenate([best_i, found], 1), k)
    return best_i


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist()) - {-1}) for f, t in zip(found, truth, strict=True))
    return hits / (k * truth.shape[0])


def _search_excluding(access: IndexAccess, q: np.ndarray, q_ids: np.ndarray, k: int, params: Any) -> np.ndarray:
    _, ids = access.search(q, k + 1, params)
    out = np.full((q.shape[0], k), -1, np.int64)
    for r in range(q.shape[0]):
        row = ids[r][ids[r] != q_ids[r]][:k]
        out[r, :row.size] = row
    return out


def calibrate(access: IndexAccess, params: IndexParams, sets: Sequence[EmbeddingSet], *, kind: str,
              target: float = RECALL_TARGET, k: int = 10, queries: int = CALIBRATION_QUERIES,
              seed: int = 0, widen: bool = True) -> dict[str, Any]:
    """Measure recall@``k`` and single-query latency of a built index; widen its default search to ``target``.

    Args:
        access: the built index (:class:`~geovl.index.access.IndexAccess`, with its re-ranking vectors if any).
        params: the index's parameters; ``nprobe`` / ``ef_search`` are set to the chosen setting (in place).
        sets: the embeddings the index was built from (queries and exact neighbours come from them).
        kind: ``"ivf"``, ``"hnsw"``, ``"flat"`` or ``"other"``.
        target: recall@k to reach; the widest setting is kept when none does (said in the record).
        k: neighbours per query.
        queries: queries drawn from the collection.
        seed: seed of the query sample.
        widen: try wider settings until ``target``; ``False`` measures the current default only (it was given).

    Returns:
        The manifest's ``expected`` record.
    """
    faiss = access.faiss
    total = sum(s.count for s in sets)
    if total <= k + 1:
        return {}
    q, q_ids = sample_with_ids(sets, queries, seed + 7919)
    t0 = time.perf_counter()
    truth = exact_neighbours(faiss, q, q_ids, sets, k)
    if kind == "ivf" and access.ivf is not None:
        knob, ladder = "nprobe", [p for p in _NPROBE_LADDER if p < access.ivf.nlist] + [int(access.ivf.nlist)]
    elif kind == "hnsw" and access.hnsw is not None:
        knob, ladder = "efSearch", list(_EF_LADDER)
    else:
        knob, ladder = "", [0]
    if not widen and knob:
        ladder = [access.nprobe if knob == "nprobe" else access.ef_search]
    sweep: list[dict[str, Any]] = []
    chosen = ladder[-1]
    for value in ladder:
        p = access.params(None, nprobe=value if knob == "nprobe" else access.nprobe,
                          ef_search=value if knob == "efSearch" else access.ef_search)
        recall = _recall(_search_excluding(access, q, q_ids, k, p), truth, k)
        sweep.append({knob or "setting": value, "recall_at_k": round(recall, 4)})
        if recall >= target:
            chosen = value
            break
    reached = sweep[-1]["recall_at_k"] >= target
    if knob == "nprobe":
        params.nprobe = chosen
    elif knob == "efSearch":
        params.ef_search = chosen
    p = access.params(None, nprobe=chosen if knob == "nprobe" else access.nprobe,
                      ef_search=chosen if knob == "efSearch" else access.ef_search)
    times = []
    for i in range(min(TIMED_QUERIES, q.shape[0])):
        start = time.perf_counter()
        access.search(q[i:i + 1], k, p)
        times.append(time.perf_counter() - start)
    record: dict[str, Any] = {
        "queries": int(q.shape[0]), "k": k, "target": target, "reached": bool(reached),
        "recall_at_k": sweep[-1]["recall_at_k"], "p50_ms": round(1000 * float(np.percentile(times, 50)), 3),
        "p99_ms": round(1000 * float(np.percentile(times, 99)), 3), "sweep": sweep,
        "measured": f"{utc_now()}, at build time, on {faiss.omp_get_max_threads()} threads; queries are vectors of "
                    "the collection, their own ids excluded",
    }
    if knob:
        record[knob] = chosen
    logger.info("calibrated in %.1f s: recall@%d %.3f at %s, p50 %.2f ms", time.perf_counter() - t0, k,
                record["recall_at_k"], f"{knob}={chosen}" if knob else "exact", record["p50_ms"])
    if not reached:
        logger.warning("recall@%d stays at %.3f below the %.2f target at the widest setting", k,
                       record["recall_at_k"], target)
    return record
