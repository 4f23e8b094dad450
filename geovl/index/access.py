"""What search needs from a loaded faiss index: its kind and defaults, id selectors, and exact scoring by row.

Rules: selectors and search parameters are built per call (the index's own fields are never changed), so concurrent
searches do not interfere; exact scoring ranks the stored vectors of the given rows by inner product (float storage
read in place, SQ / PQ codes decoded), so with float storage it equals brute force over those rows. A re-ranking
index (``params.rerank``) brings its float32 rows (``vectors.npy``, memory-mapped): ANN candidates are re-ranked
with them (:func:`geovl.index.rerank.rerank`) and exact scoring reads them, so both are exact whatever the codes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geovl.index.choose import IndexParams
from geovl.index.faiss_ops import search_parameters, unwrap_index
from geovl.index.metadata import rows_of_ids
from geovl.index.rerank import candidates_for, rank_one, rerank

#: Exact scoring over float storage gathers up to this many vectors; larger sets are scanned in place.
GATHER_MAX = 4096


class IndexAccess:
    """What search needs to know about a loaded faiss index: its kind, its default parameters, and how to read
    stored vectors by row for exact scoring."""

    def __init__(self, faiss: Any, index: Any, row_ids: np.ndarray, params: IndexParams,
                 vectors: np.ndarray | None = None) -> None:
        self.faiss = faiss
        self.index = index
        self.ntotal = int(index.ntotal)
        id_map_index, self.refine, core, transformed = unwrap_index(index)
        id_map: np.ndarray | None = None
        if id_map_index is not None:
            id_map = np.asarray(faiss.vector_to_array(id_map_index.id_map), np.int64)
        top = faiss.downcast_index(id_map_index.index) if id_map_index is not None else faiss.downcast_index(index)
        self.hnsw = core if isinstance(core, faiss.IndexHNSW) else None
        self.ivf = core if isinstance(core, faiss.IndexIVF) else None
        quantizer = faiss.downcast_index(self.ivf.quantizer) if self.ivf is not None else None
        self.nprobe = int(params.nprobe or (self.ivf.nprobe if self.ivf is not None else 1))
        self.ef_search = int(params.ef_search or (self.hnsw.hnsw.efSearch if self.hnsw is not None else 0)
                             or (quantizer.hnsw.efSearch if isinstance(quantizer, faiss.IndexHNSW) else 16))
        self.k_factor = float(params.k_factor or (self.refine.k_factor if self.refine is not None else 1))
        self._plain_params: dict[tuple[int, int, float], Any] = {}
        #: float32 rows in metadata order for re-ranking (``vectors.npy``), or None
        self.rerank_vectors = vectors
        if vectors is not None and vectors.shape != (row_ids.size, index.d):
            raise ValueError(f"vectors.npy holds {vectors.shape} but the index has {row_ids.size} rows of {index.d}-d; "
                             "rebuild the index")

        # Exact scoring reads vectors by internal position: a zero-copy view of float storage (which can also be
        # scanned in place with a position selector), or decoded codes (SQ / PQ storage, or through a
        # pre-transform). A refine stage stores every vector again (exactly for RFlat), by position. An IVF index
        # without one is scanned list by list with an id selector instead.
        self.scan_ivf = self.ivf is not None and self.refine is None and vectors is None
        self.flat: Any = None
        self.storage: Any = None
        self.vectors: np.ndarray | None = vectors
        self.ids_at_pos = id_map if id_map is not None else np.arange(self.ntotal, dtype=np.int64)
        self.pos_of_row: np.ndarray | None = None  # None: internal position == row
        if not self.scan_ivf and vectors is None:
            self._open_storage(top, transformed, row_ids)

        # Id selectors: a bitmap over ids when ids are small non-negative numbers, else a hashed id batch.
        self.row_ids = row_ids
        self.dense_ids = bool(row_ids.size == 0 or np.array_equal(row_ids, np.arange(row_ids.size)))
        self.max_id = int(row_ids.max()) if row_ids.size else 0
        self.bitmap_ok = bool(row_ids.size == 0 or (row_ids[0] >= 0 and self.max_id < 64 * row_ids.size + (1 << 20)))

    def _open_storage(self, top: Any, transformed: bool, row_ids: np.ndarray) -> None:
        """Find the stored vectors exact scoring reads (float storage as a view, else codes to decode) and map
        metadata rows to internal positions."""
        faiss = self.faiss
        if transformed:
            storage = top
        elif self.refine is not None:
            storage = faiss.downcast_index(self.refine.refine_index)
        elif self.hnsw is not None:
            storage = faiss.downcast_index(self.hnsw.storage)
        else:
            storage = top
        if isinstance(storage, faiss.IndexFlat) and storage.code_size == 4 * storage.d:
            self.flat = storage
            self.vectors = faiss.rev_swig_ptr(storage.get_xb(), self.ntotal * storage.d).reshape(
                self.ntotal, storage.d)
        else:
            self.storage = storage
        if not np.array_equal(self.ids_at_pos, row_ids):
            order = np.argsort(self.ids_at_pos, kind="stable")
            j = np.minimum(np.searchsorted(self.ids_at_pos[order], row_ids), self.ntotal - 1)
            if not np.array_equal(self.ids_at_pos[order][j], row_ids):
                raise ValueError("index.faiss and metadata.parquet hold different ids; rebuild the index")
            self.pos_of_row = order[j]

    # ---- selectors and parameters
    def selector(self, mask: np.ndarray) -> tuple[Any, list[Any]]:
        """A faiss id selector for the rows in ``mask``, plus objects that must outlive the search."""
        faiss = self.faiss
        if self.bitmap_ok:
            if self.dense_ids:
                bits = mask
            else:
                bits = np.zeros(self.max_id + 1, dtype=bool)
                bits[self.row_ids[mask]] = True
            packed = np.packbits(bits, bitorder="little")
            return faiss.IDSelectorBitmap(packed.size, faiss.swig_ptr(packed)), [packed]
        allowed = np.ascontiguousarray(self.row_ids[mask])
        return faiss.IDSelectorBatch(allowed.size, faiss.swig_ptr(allowed)), [allowed]

    def params(self, sel: Any, nprobe: int, ef_search: int, k_factor: float | None = None) -> Any:
        """Per-call search parameters (never the index's own fields, so concurrent searches do not interfere) that
        reach the IVF / HNSW index under any IDMap, pre-transform or refine wrapper
        (:func:`geovl.index.faiss_ops.search_parameters`); parameters that do not apply to the index are ignored.
        Without a selector they are built once per setting and shared (faiss only reads them)."""
        key = (nprobe, ef_search, k_factor or self.k_factor)
        if sel is None and key in self._plain_params:
            return self._plain_params[key]
        params = search_parameters(self.index, sel=sel, nprobe=nprobe, ef_search=ef_search,
                                   k_factor=k_factor or self.k_factor)
        if params is None and sel is not None:
            params = self.faiss.SearchParameters(sel=sel)
        if sel is None and len(self._plain_params) < 64:
            self._plain_params[key] = params
        return params

    def search(self, q: np.ndarray, k: int, params: Any, k_factor: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """ANN top-``k`` (scores, ids); a re-ranking index fetches ``k * k_factor`` candidates and re-ranks them."""
        fetch = k if self.rerank_vectors is None else candidates_for(k, k_factor or self.k_factor, self.ntotal)
        if params is None:
            d, i = self.index.search(q, fetch)
        else:
            d, i = self.index.search(q, fetch, params=params)
        if self.rerank_vectors is None:
            return np.asarray(d, np.float32), np.asarray(i, np.int64)
        ids = np.asarray(i, np.int64)
        return rerank(q, ids, self.rows_of(ids), self.rerank_vectors, k)

    def search_one(self, q: np.ndarray, k: int, params: Any, k_factor: float | None = None
                   ) -> tuple[list[float], list[int], np.ndarray] | None:
        """The ANN top-``k`` of one query ``q`` (shape (1, D)) as (scores, ids, metadata rows), in as few numpy calls
        as the hot path of an unfiltered search allows (each costs microseconds right after faiss has swept the
        caches); the same results as :meth:`search`. ``None`` when the index returned fewer candidates than asked
        or an id the metadata lacks: the caller then takes the general path."""
        fetch = k if self.rerank_vectors is None else candidates_for(k, k_factor or self.k_factor, self.ntotal)
        d, i = self.index.search(q, fetch) if params is None else self.index.search(q, fetch, params=params)
        ids = i[0]
        if ids[-1] < 0:  # faiss pads short results with -1 at the end
            return None
        if self.dense_ids:  # ids 0..N-1 are their own rows (checked against the metadata at load)
            rows = ids
        else:
            rows = rows_of_ids(self.row_ids, ids)
            if rows.min() < 0:
                return None
        if self.rerank_vectors is None:
            return d[0].tolist(), ids.tolist(), rows
        scores, order = rank_one(q[0], rows, self.rerank_vectors, k)
        return scores[order].tolist(), ids[order].tolist(), rows[order]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Metadata rows of ``ids`` (-1 for -1 or unknown ids)."""
        return rows_of_ids(self.row_ids, ids, dense=self.dense_ids)

    # ---- exact scoring over a subset of rows
    def exact(self, q: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` (scores, ids) of ``q`` over the vectors at ``rows``; -1 ids pad short results."""
        faiss = self.faiss
        if self.scan_ivf and self.ivf is not None:  # every list, scanning only the selected ids
            mask = np.zeros(self.row_ids.size, dtype=bool)
            mask[rows] = True
            sel, keep = self.selector(mask)
            out = self.search(q, k, self.params(sel, nprobe=int(self.ivf.nlist), ef_search=self.ef_search))
            del keep
            return out
        pos = rows if self.pos_of_row is None else self.pos_of_row[rows]
        if self.flat is not None and pos.size > GATHER_MAX:
            # Scattered gathers of many rows cost more than faiss scanning the storage with a position bitmap.
            bits = np.zeros(self.ntotal, dtype=bool)
            bits[pos] = True
            packed = np.packbits(bits, bitorder="little")
            sel = faiss.IDSelectorBitmap(packed.size, faiss.swig_ptr(packed))
            d, i = self.flat.search(q, k, params=faiss.SearchParameters(sel=sel))
            i = np.asarray(i, np.int64)
            return np.asarray(d, np.float32), np.where(i >= 0, self.ids_at_pos[np.maximum(i, 0)], -1)
        best_s = np.full((q.shape[0], 0), -np.inf, np.float32)
        best_i = np.zeros((q.shape[0], 0), np.int64)
        for start in range(0, pos.size, GATHER_MAX):
            block = pos[start:start + GATHER_MAX]
            vecs = self.vectors[block] if self.vectors is not None else self.storage.reconstruct_batch(block)
            # faiss rather than numpy for the products: one thread pool (faiss' OpenMP) instead of two BLAS pools
            # spinning against each other, which made single queries erratic.
            scores, local = faiss.knn(q, np.ascontiguousarray(vecs, np.float32), min(k, block.size),
                                      metric=faiss.METRIC_INNER_PRODUCT)
            ids = self.row_ids[rows[start:start + GATHER_MAX]][local]
            best_s, best_i = top_k(np.concatenate([best_s, scores], 1), np.concatenate([best_i, ids], 1), k)
        if best_s.shape[1] < k:
            pad = k - best_s.shape[1]
            best_s = np.pad(best_s, ((0, 0), (0, pad)), constant_values=-np.inf)
            best_i = np.pad(best_i, ((0, 0), (0, pad)), constant_values=-1)
        return best_s, best_i


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-``k`` of ``scores`` (best first) with the matching ``ids``."""
    if scores.shape[1] > k:
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores, ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
