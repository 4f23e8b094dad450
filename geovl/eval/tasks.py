"""Evaluation tasks that score files rather than run the backbone over a dataset: index quality, predicted
captions and generated images. Each returns an :class:`~geovl.eval.report.EvalReport`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from geovl.eval.index_quality import evaluate_faiss_index
from geovl.eval.report import EvalReport, dataset_fingerprint

PathLike = str | os.PathLike[str]

INDEX_PROTOCOL = (
    "{queries} embeddings are held out at random (seed {seed}) as queries; the index is built on the other {base}. "
    "Recall@k is the share of the exact top-k (inner product on L2-normalised rows, computed in blocks) that the "
    "index returns in its top k. Latency is single-query (batch 1), p50/p99 over {timed} queries, timed side by "
    "side with exact search (IndexFlatIP) in the same run."
)


def load_embeddings(path: PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Rows of a ``geovl embed --out`` folder (with its manifest) or of an ``.npy`` file."""
    p = Path(path)
    manifest: dict[str, Any] = {}
    if p.is_dir():
        if not (p / "embeddings.npy").is_file():
            raise FileNotFoundError(f"{p}: no embeddings.npy (make one with `geovl embed ... --out {p}`)")
        if (p / "manifest.json").is_file():
            manifest = json.loads((p / "manifest.json").read_text())
        p = p / "embeddings.npy"
    elif not p.is_file():
        raise FileNotFoundError(f"{p}: no such file or folder")
    emb = np.load(p, mmap_mode="r")
    if emb.ndim != 2:
        raise ValueError(f"{p}: expected a 2-D array of embeddings, got shape {emb.shape}")
    return np.asarray(emb, np.float32), manifest


def eval_index(
    embeddings: PathLike,
    factory: str = "HNSW32",
    *,
    queries: int = 1000,
    nprobe: int | None = None,
    ef_search: int | None = None,
    seed: int = 0,
) -> EvalReport:
    """Recall@1/10/100 and latency of a faiss index against exact search on the same embeddings."""
    start = time.perf_counter()
    emb, manifest = load_embeddings(embeddings)
    if not 1 <= queries < emb.shape[0] - 100:
        raise ValueError(f"queries must be in [1, {emb.shape[0] - 101}] for {emb.shape[0]} embeddings")
    order = np.random.default_rng(seed).permutation(emb.shape[0])
    q, base = emb[order[:queries]], emb[order[queries:]]
    ks = (1, 10, 100)
    result = evaluate_faiss_index(base, q, factory, ks=ks, nprobe=nprobe, ef_search=ef_search)
    figures: dict[str, float | int | None] = {f"recall@{k}": 100 * v for k, v in result.recall.items()}
    figures |= {"build_seconds": result.build_seconds, "query_ms_p50": result.query_ms_p50,
                "query_ms_p99": result.query_ms_p99, "exact_ms_p50": result.exact_ms_p50,
                "speedup_vs_exact": result.exact_ms_p50 / result.query_ms_p50 if result.query_ms_p50 else None}
    return EvalReport(
        task="index",
        figures=figures,
        model=manifest.get("model", {}),
        dataset={"name": Path(embeddings).name, "path": str(Path(embeddings).resolve()), "format": "embeddings",
                 "counts": {"vectors": int(emb.shape[0]), "dim": int(emb.shape[1])},
                 "fingerprint": dataset_fingerprint(Path(embeddings))},
        details={"curves": {"ANN vs exact": {k: 100 * v for k, v in result.recall.items()}}},
        protocol=INDEX_PROTOCOL.format(queries=queries, seed=seed, base=base.shape[0], timed=min(200, queries)),
        settings={"factory": factory, **result.params},
        units={"build_seconds": "s", "query_ms_p50": "ms", "query_ms_p99": "ms", "exact_ms_p50": "ms",
               "speedup_vs_exact": "x"},
        seconds=time.perf_counter() - start,
    )
