"""An index folder loaded for search: the faiss index, its manifest and its tombstones.

Rules: searches return global ids and cosine similarities (inner products of L2-normalised vectors), best first;
tombstoned ids (``deleted.npy``) are never returned; ``-1`` ids / ``-inf`` scores pad results shorter than ``k``; a
re-ranking index (``params.rerank``) re-ranks its ANN candidates with the exact vectors of ``vectors.npy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geovl.index.faiss_ops import faiss_module, search_parameters
from geovl.index.manifest import METADATA_FILE, IndexManifest
from geovl.index.metadata import parquet_ids, rows_of_ids
from geovl.index.rerank import candidates_for, rerank


@dataclass
class LoadedIndex:
    """An index folder loaded for search (:func:`geovl.index.store.load_index`).

    Attributes:
        index: the faiss index (labels are global ids), with the manifest's default nprobe / efSearch set.
        manifest: the index manifest.
        path: the folder it was loaded from.
        deleted: sorted int64 tombstoned ids that searches must skip (empty for most indexes).
        mmap: whether the vectors/lists are memory-mapped rather than loaded.
        gpu: whether the index was moved to a GPU.
        gpu_resources: the faiss GPU resources a GPU index uses (kept alive with it).
        vectors: for a re-ranking index, its float32 rows (``vectors.npy``, memory-mapped), in metadata order.
    """

    index: Any
    manifest: IndexManifest
    path: Path
    deleted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mmap: bool = False
    gpu: bool = False
    gpu_resources: Any = None
    vectors: np.ndarray | None = None
    _row_ids: np.ndarray | None = None

    def check_model(self, model: dict[str, Any]) -> None:
        """Raise ``ValueError`` unless queries from ``model`` (a model record) match the index's model."""
        self.manifest.check_model(model)

    def search(self, queries: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None,
               k_factor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner-product search, skipping tombstoned ids.

        Parameters reach the index doing the work through the IDMap / pre-transform / refine wrappers (see
        :func:`geovl.index.faiss_ops.search_parameters`); those that do not apply to the index type are ignored.

        Args:
            queries: (N_q, D) or (D,) float32 L2-normalised query vectors.
            k: results per query.
            nprobe: IVF lists to visit (default: the manifest's).
            ef_search: HNSW beam width, or that of an IVF index's HNSW coarse quantizer (default: the manifest's).
            k_factor: for refine types, candidates re-ranked per result (default: the manifest's).

        Returns:
            ``(scores, ids)``, each (N_q, k): cosine similarities (best first) and global ids, ``-1`` / ``-inf``
            where fewer than ``k`` results exist.
        """
        q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.manifest.dim:
            raise ValueError(f"queries are {q.shape[1]}-d, the index is {self.manifest.dim}-d")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        refs = self._params(nprobe, ef_search, k_factor)
        fetch = k
        if self.vectors is not None:
            fetch = candidates_for(k, float(k_factor or self.manifest.params.k_factor or 1), int(self.index.ntotal))
        if refs is not None:
            scores, ids = self.index.search(q, fetch, params=refs[0])
        else:  # selectors unsupported here: over-fetch and drop tombstones afterwards
            kk = int(min(self.index.ntotal, fetch + self.deleted.size)) or 1
            scores, ids = self.index.search(q, kk)
            scores, ids = _drop_tombstones(scores, ids, self.deleted, fetch)
        ids = np.asarray(ids, np.int64)
        if self.vectors is not None:
            scores, ids = rerank(q, ids, self._rows_of(ids), self.vectors, k)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        if self._row_ids is None:
            self._row_ids = parquet_ids(self.path / METADATA_FILE)
        return rows_of_ids(self._row_ids, ids)

    def _params(self, nprobe: int | None, ef_search: int | None,
                k_factor: float | None) -> tuple[Any, ...] | None:
        """faiss SearchParameters (plus the objects they point to, kept alive) or ``None`` where unsupported."""
        faiss = faiss_module()
        if self.gpu:
            return None
        keep: list[Any] = []
        sel = None
        if self.deleted.size:
            batch = faiss.IDSelectorBatch(self.deleted)
            sel = faiss.IDSelectorNot(batch)
            keep += [batch, sel]
        params = search_parameters(self.index, sel=sel, nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
        return None if params is None else (params, *keep)


def _drop_tombstones(scores: np.ndarray, ids: np.ndarray, deleted: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = (ids >= 0) & ~np.isin(ids, deleted)
    out_s = np.full((ids.shape[0], k), -np.inf, np.float32)
    out_i = np.full((ids.shape[0], k), -1, np.int64)
    for r in range(ids.shape[0]):
        row = np.flatnonzero(keep[r])[:k]
        out_s[r, :row.size], out_i[r, :row.size] = scores[r, row], ids[r, row]
    return out_s, out_i
