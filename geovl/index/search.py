"""Search a geovl index folder by text, image or vector, with metadata, footprint and time filters.

:class:`Searcher` loads an index folder once, through :func:`geovl.index.store.load_index` (``manifest.json``,
``index.faiss``, ``deleted.npy``) plus ``metadata.parquet``, and answers queries. A filtered search returns ``k``
hits whenever ``k`` rows match:

1. The filter becomes a row mask over the metadata (vectorised; :mod:`geovl.index.filters`), minus tombstoned
   (deleted) ids and ``exclude_ids``.
2. **Selective filters** (at most :attr:`Searcher.exact_threshold` matching rows; by default
   :data:`DEFAULT_EXACT_THRESHOLD` at 512-d) are scored exactly: the matching vectors are read straight from the
   index's float storage (Flat, HNSW-Flat, the ``RFlat`` refine stage; decoded codes for SQ/PQ storage) and ranked
   by inner product; an IVF index without a refine stage scans all of its lists with an id selector. With float
   vectors (any of these, IVF-Flat included) the result equals brute-force filtering then exact search; with
   SQ/PQ codes it ranks by the codes' approximations.
3. **Broad filters** take the ANN path, per query:

   a. *Post-filter*: one unfiltered ANN search for the top ``max(efSearch, 4k)``; when ``k`` of them are allowed,
      they are the answer (the common case for filters matching over ~10% of the rows).
   b. *Far from the filter*: when far fewer allowed rows sit near the query than the filter's overall share
      (under a quarter of it), the filter excludes the query's region (a bbox over one landscape, a label
      unlike the query). An ANN walk with a selector would stay in that region and return poor matches, so these
      queries are scored exactly.
   c. Otherwise: an ANN search with a faiss id selector (a bitmap over ids, or a hashed id set when ids are huge),
      with ``nprobe`` / ``efSearch`` widened by ``2 * sqrt(0.1 / share)`` (between 1x and 8x). Queries that
      come back with fewer than ``k`` hits are retried with 4x the ``nprobe`` / ``efSearch`` (up to twice;
      efSearch at most 4096), then scored exactly, so results are never short.

   Pass ``exact=True`` to score every allowed row exactly whatever the filter.

Tombstoned ids (``deleted.npy``) are excluded the same way. Unfiltered searches without tombstones are plain faiss
searches. Scores are inner products of L2-normalised vectors (cosine similarity).

Supported index types (as :func:`geovl.index.store.build_index` writes them): Flat and HNSW (any storage) wrapped in
``IndexIDMap``/``IndexIDMap2``; IVF (any codes, any coarse quantizer) with ``add_with_ids``, also under an OPQ/PCA
``IndexPreTransform`` (``"OPQ16,IVF256,PQ16"``); and IVF or HNSW under a refine stage (``"IVF256,PQ16,RFlat"``,
``"...,Refine(SQ8)"``), wrapped in ``IndexIDMap2``. ``nprobe`` / ``ef_search`` reach the IVF / HNSW index through
those wrappers as per-call faiss search parameters (:func:`geovl.index.faiss_ops.search_parameters`), and ``k_factor``
reaches the refine stage; a parameter that does not apply to the index type is ignored.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from geovl._optional import require
from geovl.index.access import IndexAccess
from geovl.index.faisslib import faiss_module
from geovl.index.filters import Filters, MetadataTable
from geovl.index.loaded import LoadedIndex
from geovl.index.manifest import INDEX_FILE, METADATA_FILE
from geovl.index.manifest import MANIFEST_FILE as MANIFEST
from geovl.index.store import load_index
from geovl.io.jsonable import to_jsonable

if TYPE_CHECKING:
    from geovl.models.backbone import Backbone

logger = logging.getLogger(__name__)


#: Filters matching at most this many rows of 512-d vectors are scored exactly over just those rows (the default
#: threshold scales as 512 / dim, since exact cost is rows x dim). Exact scoring gathers the rows (~0.7 us per
#: 1 KiB row from memory-mapped vectors) then ranks them: 10k rows of 256-d took 7.7 ms at 1M, against ~1-2 ms for
#: the ANN path with an id-selector bitmap, which a re-ranking index keeps at recall ~1 (docs/benchmarks.md). So only
#: very selective filters (4k rows at 256-d) are scored exactly.
DEFAULT_EXACT_THRESHOLD = 2_000

_PROBE_FACTOR = 4
_FAR_SHARE = 0.25
_FAR_MIN_EXPECTED = 4.0  # judge "far from the filter" only when the probe should hold at least this many allowed rows
_BOOST_BELOW_SHARE = 0.1
_BOOST_SCALE = 2.0
_MAX_BOOST = 8.0
_RETRIES = 2
_RETRY_FACTOR = 4
_MAX_RETRY_EF = 4096

Query = str | os.PathLike | bytes | Image.Image | np.ndarray
"""A text (``str``), an image (path-like, encoded bytes, PIL image, HxW[xC] array) or an embedding (1-D array of
length D, or shape (1, D)). A ``str`` is always text: pass ``Path("x.png")`` to search with an image file."""


@dataclass(slots=True)
class Hit:
    """One search result.

    Attributes:
        id: the vector's global int64 id.
        score: cosine similarity to the query (inner product of normalised vectors).
        rank: 0-based position in the result list.
        metadata: the row's metadata columns except ``id`` (``acquired`` as ``datetime``, ``geometry`` as WKB
            bytes).
    """

    id: int
    score: float
    rank: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: times as ISO strings, bytes (WKB geometry) as hex, NaN as ``None``."""
        return {"id": self.id, "score": self.score, "rank": self.rank, "metadata": to_jsonable(self.metadata)}


@dataclass
class SearchPlan:
    """How a search with given filters would run.

    Attributes:
        path: ``"unfiltered"`` (plain ANN search), ``"exact"`` (brute force over the allowed rows),
            ``"ann"`` (filtered ANN search, see the module docstring) or ``"empty"`` (nothing matches).
        allowed: number of rows the filters, tombstones and exclusions leave.
        total: number of rows in the index.
    """

    path: str
    allowed: int
    total: int


def _same_model(indexed: dict[str, Any], name: str, sha256: str | None) -> bool:
    """Same encoder: equal checkpoint digests when both are known, else equal names."""
    indexed_sha = indexed.get("checkpoint_sha256")
    if indexed_sha and sha256:
        return bool(indexed_sha == sha256)
    return bool(indexed.get("name") == name)


class Searcher:
    """Searches one geovl index folder; everything is loaded once, in the constructor.

    Thread safety: ``search`` / ``search_batch`` may be called from several threads at once. faiss searches are
    read-only and get per-call parameter objects; the lazy backbone load and the per-column filter caches are
    guarded by locks.

    Args:
        index_dir: the index folder (``manifest.json``, ``index.faiss``, ``metadata.parquet``, ``deleted.npy``).
        backbone: encoder for text and image queries. It must be the model the index was built with (same
            checkpoint digest, or same name when a digest is missing, and the same dimension).
        model: name or path to load the encoder from instead of the manifest's model name (e.g. a local copy of
            the checkpoint); the same identity check applies. Without ``backbone``, the encoder is loaded on the
            first text or image query.
        device, precision: for loading the encoder (see :func:`geovl.models.load_backbone`).
        mmap: memory-map the faiss index and the metadata instead of reading them into RAM.
        exact_threshold: filters leaving at most this many rows are scored exactly (default
            :data:`DEFAULT_EXACT_THRESHOLD` x 512 / dim).

    Attributes:
        loaded: the index as :func:`geovl.index.store.load_index` loaded it (always on the CPU: searches use id
            selectors and read stored vectors).
        manifest: the index manifest as a dict (``IndexManifest.to_dict()``).
        metadata: the metadata table, one row per stored vector.

    Raises:
        FileNotFoundError, ValueError: a missing or inconsistent index folder, or a mismatching ``backbone``.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike[str],
        *,
        backbone: Backbone | None = None,
        model: str | os.PathLike[str] | None = None,
        device: str = "auto",
        precision: str = "auto",
        mmap: bool = False,
        exact_threshold: int | None = None,
    ) -> None:
        faiss = faiss_module()
        pq = require("pyarrow.parquet", extra=None, feature="searching an index")
        self.index_dir = Path(index_dir)
        # The one loader of index folders (manifest checks, mmap, on-disk lists, tombstones). The index stays on the
        # CPU: searches use id selectors and read stored vectors, which GPU indexes do not offer.
        self.loaded: LoadedIndex = load_index(self.index_dir, mmap=mmap, use_gpu=False)
        self.manifest: dict[str, Any] = self.loaded.manifest.to_dict()
        self.dim = int(self.loaded.manifest.dim)
        folder = self.loaded.path  # the previous version of the folder when a write was interrupted mid-swap
        index = self.loaded.index
        if index.d != self.dim:
            raise ValueError(f"{folder / INDEX_FILE} holds {index.d}-d vectors but the manifest says dim {self.dim}")
        if not (folder / METADATA_FILE).is_file():
            raise FileNotFoundError(f"{folder / METADATA_FILE} not found; the index folder is incomplete")
        self.metadata = MetadataTable(pq.read_table(folder / METADATA_FILE, memory_map=mmap))
        self.metadata.records(np.zeros(min(1, len(self.metadata)), np.int64))  # build its reader now, not at query 1
        # what reading, sorting and packing the table left in pyarrow's pool (~120 MB at 1M rows) goes back to the OS
        require("pyarrow", extra=None).default_memory_pool().release_unused()
        if index.ntotal != len(self.metadata):
            raise ValueError(f"{folder}: index.faiss holds {index.ntotal} vectors but metadata.parquet has "
                             f"{len(self.metadata)} rows; rebuild the index")
        self._faiss = IndexAccess(faiss, index, self.metadata.ids, self.loaded.manifest.params,
                                  vectors=self.loaded.vectors)
        self._live: np.ndarray | None = None
        if self.loaded.deleted.size:
            self._live = ~np.isin(self.metadata.ids, self.loaded.deleted)
        self._live_selector: tuple[Any, list[Any]] | None = None
        self.exact_threshold = (max(1, DEFAULT_EXACT_THRESHOLD * 512 // self.dim) if exact_threshold is None
                                else int(exact_threshold))
        self._model_source = os.fspath(model) if model is not None else None
        self._device, self._precision = device, precision
        self._backbone_lock = threading.Lock()
        self._backbone: Backbone | None = None
        if backbone is not None:
            self._check_backbone(backbone)
            self._backbone = backbone

    # ---- properties
    def __len__(self) -> int:
        """Number of searchable (not deleted) vectors."""
        return len(self.metadata) if self._live is None else int(self._live.sum())

    @property
    def model(self) -> dict[str, Any]:
        """The manifest's record of the model the index was built with."""
        return dict(self.manifest["model"])

    def __repr__(self) -> str:
        return (f"Searcher({str(self.index_dir)!r}, count={len(self)}, dim={self.dim}, "
                f"index_type={self.manifest.get('index_type')!r}, model={self.model.get('name')!r})")

    # ---- encoder
    def _check_backbone(self, backbone: Backbone) -> None:
        indexed = self.model
        name, sha = backbone.info.name, backbone.info.checkpoint_sha256
        if backbone.embed_dim != self.dim or not _same_model(indexed, name, sha):
            raise ValueError(
                f"index built with model {indexed.get('name')} (dim {self.dim}, sha256 "
                f"{indexed.get('checkpoint_sha256') or 'unknown'}); query encoder is {name} (dim "
                f"{backbone.embed_dim}, sha256 {sha or 'unknown'}). Search with the model the index was built "
                "with, or rebuild the index"
            )

    @property
    def backbone(self) -> Backbone:
        """The query encoder, loaded on first use from the manifest's model (or ``model=``)."""
        if self._backbone is None:
            with self._backbone_lock:
                if self._backbone is None:
                    self._backbone = self._load_backbone()
        return self._backbone

    def _load_backbone(self) -> Backbone:
        from geovl.models.factory import load_backbone

        indexed = self.model
        source = self._model_source or indexed.get("name")
        if not source:
            raise ValueError(f"{self.index_dir / MANIFEST} names no model; pass backbone= to search by text/image")
        logger.info("loading query encoder %s for %s", source, self.index_dir)
        backbone = load_backbone(source, architecture=indexed.get("architecture"), device=self._device,
                                 precision=self._precision, sha256=indexed.get("checkpoint_sha256"))
        self._check_backbone(backbone)
        return backbone

    def encode(self, queries: Sequence[Query]) -> np.ndarray:
        """(N, D) float32 L2-normalised query embeddings; texts and images go through the backbone in batches."""
        if len(queries) == 1 and isinstance(queries[0], np.ndarray) and queries[0].size == self.dim and (
                queries[0].dtype == np.float32):  # one embedding: the hot path of vector search
            one = queries[0].reshape(1, self.dim)
            norm = math.sqrt(float(np.dot(one[0], one[0])))
            if norm == 0 or not math.isfinite(norm):
                raise ValueError("a query vector is zero or not finite; it cannot be compared by cosine similarity")
            return one / norm  # a new C-contiguous float32 array
        texts: list[tuple[int, str]] = []
        images: list[tuple[int, Any]] = []
        out = np.zeros((len(queries), self.dim), np.float32)
        for i, query in enumerate(queries):
            if isinstance(query, str):
                from geovl.data.sources import IMAGE_EXTENSIONS  # text queries load torch anyway

                if query.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(query):
                    logger.warning("searching for the text %r; pass pathlib.Path(%r) to search with the image",
                                   query, query)
                texts.append((i, query))
            elif isinstance(query, np.ndarray) and _is_vector(query, self.dim):
                vec = np.asarray(query, np.float32).reshape(-1)
                if vec.size != self.dim:
                    raise ValueError(f"query vector has {vec.size} dimensions; the index has {self.dim}")
                out[i] = vec
            elif isinstance(query, (os.PathLike, bytes, bytearray, Image.Image, np.ndarray)):
                images.append((i, query))
            else:
                raise ValueError(f"query {i}: {type(query).__name__} is not a text, image or vector query")
        if texts:
            out[[i for i, _ in texts]] = self.backbone.encode_texts([t for _, t in texts])
        if images:
            out[[i for i, _ in images]] = self.backbone.encode_images([img for _, img in images])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if np.any(norms == 0) or not np.all(np.isfinite(norms)):
            raise ValueError("a query vector is zero or not finite; it cannot be compared by cosine similarity")
        return np.ascontiguousarray(out / norms, dtype=np.float32)

    # ---- search
    def plan(self, filters: Filters | None = None, exclude_ids: Sequence[int] | np.ndarray | None = None,
             exact: bool | None = None) -> SearchPlan:
        """How a search with these arguments would run, without running it."""
        return self._plan(self._allowed_mask(filters, exclude_ids), exact)[0]

    def search(
        self,
        query: Query,
        k: int = 10,
        filters: Filters | None = None,
        *,
        exclude_ids: Sequence[int] | np.ndarray | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        exact: bool | None = None,
        k_factor: float | None = None,
    ) -> list[Hit]:
        """The ``k`` best matches of one query, best first.

        Args:
            query: text, image or vector (see :data:`Query`).
            k: number of hits; fewer only when fewer rows pass the filters.
            filters: metadata / bbox / time filters (:class:`~geovl.index.filters.Filters`).
            exclude_ids: ids never to return (e.g. the query image itself in image-to-image search).
            nprobe, ef_search: override the manifest's IVF ``nprobe`` / HNSW ``efSearch`` for this call. They
                reach the IVF or HNSW index under an OPQ/PCA pre-transform or a refine stage too; ``ef_search`` on
                an IVF index sets its HNSW coarse quantizer's ``efSearch`` (when it has one). A parameter that
                does not apply to the index type (``nprobe`` on HNSW or Flat, ``ef_search`` on IVF-Flat or Flat)
                is ignored.
            exact: ``True`` scores every allowed row exactly (slow on big unfiltered searches, never misses),
                ``False`` always uses the ANN index, ``None`` decides by :attr:`exact_threshold`.
            k_factor: for refine types (``...,RFlat``, ``...,Refine(...)``): candidates re-ranked per result
                (default: the manifest's); ignored by other types.
        """
        if (filters is None and exclude_ids is None and self._live is None and not exact
                and isinstance(query, np.ndarray) and isinstance(k, int) and not isinstance(k, bool)
                and 1 <= k <= len(self.metadata) and (k_factor is None or k_factor >= 1)):
            # the hot path of an unfiltered vector query: one ANN search, no masks or plans; a short answer (an
            # IVF probe that found fewer than k vectors) goes the general way, which widens the search
            q = self.encode([query])
            probe, ef, kf = self._knobs(k, nprobe, ef_search, k_factor)
            found = self._faiss.search_one(q, k, self._faiss.params(None, probe, ef, kf), kf)
            if found is not None:
                scores, ids, rows = found
                return [Hit(i, s, r, m) for r, (i, s, m) in enumerate(zip(ids, scores, self.metadata.records(rows),
                                                                              strict=True))]
        return self.search_batch([query], k, filters, exclude_ids=exclude_ids, nprobe=nprobe, ef_search=ef_search,
                                 exact=exact, k_factor=k_factor)[0]

    def search_batch(
        self,
        queries: Sequence[Query],
        k: int = 10,
        filters: Filters | None = None,
        *,
        exclude_ids: Sequence[int] | np.ndarray | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        exact: bool | None = None,
        k_factor: float | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for several queries at once (one encoder batch and one faiss call); the same filters
        and exclusions apply to every query. Returns one hit list per query."""
        if isinstance(queries, (str, bytes)) or (isinstance(queries, np.ndarray) and queries.ndim == 1):
            raise ValueError("search_batch takes a sequence of queries; use search() for one")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if filters is not None and not isinstance(filters, Filters):
            raise ValueError(f"filters must be a geovl.index.Filters, got {type(filters).__name__}")
        if k_factor is not None and not k_factor >= 1:
            raise ValueError(f"k_factor must be >= 1, got {k_factor!r}")
        if len(queries) == 0:
            return []
        k = int(k)
        mask = self._allowed_mask(filters, exclude_ids)  # before encoding: bad filters fail fast
        q = self.encode(queries)
        scores, ids = self._search_vectors(q, k, mask, nprobe, ef_search, exact, k_factor)
        return self._hits(scores, ids)

    def _allowed_mask(self, filters: Filters | None, exclude_ids: Sequence[int] | np.ndarray | None
                      ) -> np.ndarray | None:
        mask = self.metadata.mask(filters)
        if self._live is not None:
            mask = self._live.copy() if mask is None else mask & self._live
        if exclude_ids is not None and len(exclude_ids) > 0:
            rows = self.metadata.rows_of(np.asarray(exclude_ids, np.int64).ravel())
            rows = rows[rows >= 0]
            if rows.size:
                mask = np.ones(len(self.metadata), bool) if mask is None else mask.copy()
                mask[rows] = False
        return mask

    def _plan(self, mask: np.ndarray | None, exact: bool | None = None) -> tuple[SearchPlan, np.ndarray | None]:
        total = len(self.metadata)
        if mask is None and not exact:
            return SearchPlan("unfiltered", total, total), None  # no (N,) row array on the hot path
        rows = np.arange(total) if mask is None else np.flatnonzero(mask)
        if rows.size == 0:
            return SearchPlan("empty", 0, total), rows
        if exact:
            return SearchPlan("exact", int(rows.size), total), rows
        if rows.size == total:
            return SearchPlan("unfiltered", total, total), None
        if exact is None and rows.size <= self.exact_threshold:
            return SearchPlan("exact", int(rows.size), total), rows
        return SearchPlan("ann", int(rows.size), total), rows

    def _search_vectors(self, q: np.ndarray, k: int, mask: np.ndarray | None, nprobe: int | None,
                        ef_search: int | None, exact: bool | None, k_factor: float | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        fa = self._faiss
        nprobe, ef, kf = self._knobs(k, nprobe, ef_search, k_factor)
        plan, rows = self._plan(mask, exact)
        logger.debug("search plan %s for %d queries", plan, q.shape[0])
        if plan.path == "empty":
            return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
        total = len(self.metadata)
        need = min(k, total if rows is None else rows.size)
        if plan.path == "exact":
            if rows is None:
                raise RuntimeError("internal: an exact plan without rows")
            return fa.exact(q, rows, need)
        if plan.path == "unfiltered":
            return self._ann_search(q, need, None, nprobe, ef, None, kf)
        if mask is None or rows is None:
            raise RuntimeError("internal: a filtered plan without a mask")
        share = rows.size / total
        scores = np.full((q.shape[0], need), -np.inf, np.float32)
        ids = np.full((q.shape[0], need), -1, np.int64)
        todo = np.arange(q.shape[0])
        if fa.hnsw is not None or fa.ivf is not None:
            # Post-filter the query's unfiltered neighbourhood first (one ANN search; efSearch bounds HNSW's cost
            # whatever k): when k allowed rows are among its top results, they are the filtered top-k.
            probe_k = min(total, max(ef, _PROBE_FACTOR * need))
            probe_s, probe_i = fa.search(q, probe_k, fa.params(None, nprobe, ef, kf), kf)
            probe_rows = self.metadata.rows_of(probe_i)
            ok = (probe_rows >= 0) & mask[np.maximum(probe_rows, 0)]
            count = ok.sum(1)
            first = np.argsort(~ok, axis=1, kind="stable")[:, :need]
            done = count >= need
            scores[done] = np.take_along_axis(probe_s, first, 1)[done]
            ids[done] = np.take_along_axis(probe_i, first, 1)[done]
            # Far fewer allowed rows near the query than overall: the filter excludes the query's region, where an
            # ANN walk with a selector stays and returns poor matches (recall 0.3-0.5 on HNSW in the benchmark).
            expected = probe_k * share
            far = ~done & (count < expected * _FAR_SHARE) & (expected >= _FAR_MIN_EXPECTED)
            if far.any():
                scores[far], ids[far] = fa.exact(q[far], rows, need)
            todo = np.flatnonzero(~done & ~far)
            logger.debug("post-filtered %d, exact %d, selector %d of %d queries", done.sum(), far.sum(), todo.size,
                         q.shape[0])
        if todo.size:
            sel, keep = self._selector(mask, filtered_only_by_tombstones=self._is_live_mask(mask))
            # An ANN search with a selector only collects the allowed vectors it passes, so a narrower filter needs
            # a wider beam (HNSW) or more lists (IVF) for the same recall: 2 * sqrt(0.1 / share), 1x to 8x (at 1M,
            # 9% of the rows kept recall 0.89 with IVF's nprobe unchanged; docs/benchmarks.md).
            boost = min(_MAX_BOOST, max(1.0, (_BOOST_BELOW_SHARE / share) ** 0.5 * _BOOST_SCALE))
            scores[todo], ids[todo] = self._ann_search(q[todo], need, sel, int(nprobe * boost), int(ef * boost), rows,
                                                       kf)
            del keep
        return scores, ids

    def _knobs(self, k: int, nprobe: int | None, ef_search: int | None, k_factor: float | None
               ) -> tuple[int, int, float]:
        """This call's nprobe, efSearch (at least ``k``) and re-rank factor: the caller's, else the index's."""
        fa = self._faiss
        return int(nprobe or fa.nprobe), max(int(ef_search or fa.ef_search), k), float(k_factor or fa.k_factor)

    def _ann_search(self, q: np.ndarray, need: int, sel: Any, nprobe: int, ef: int, rows: np.ndarray | None,
                    k_factor: float) -> tuple[np.ndarray, np.ndarray]:
        """ANN search (with ``sel`` when given) that widens ``nprobe`` / ``efSearch`` for queries that come back
        with fewer than ``need`` hits, then scores what is still short exactly over ``rows`` (all when None)."""
        fa = self._faiss
        scores, ids = fa.search(q, need, fa.params(sel, nprobe, ef, k_factor), k_factor)
        for _ in range(_RETRIES):
            short = np.flatnonzero((ids >= 0).sum(1) < need)
            can_widen = (fa.hnsw is not None and ef * _RETRY_FACTOR <= _MAX_RETRY_EF) or (
                fa.ivf is not None and nprobe < fa.ivf.nlist)
            if short.size == 0 or not can_widen:
                break
            nprobe, ef = nprobe * _RETRY_FACTOR, ef * _RETRY_FACTOR
            scores[short], ids[short] = fa.search(q[short], need, fa.params(sel, nprobe, ef, k_factor), k_factor)
        short = np.flatnonzero((ids >= 0).sum(1) < need)
        if short.size:
            logger.debug("%d queries still short after retries; scoring them exactly", short.size)
            all_rows = rows if rows is not None else np.arange(len(self.metadata))
            scores[short], ids[short] = fa.exact(q[short], all_rows, need)
        return scores, ids

    def _is_live_mask(self, mask: np.ndarray) -> bool:
        return self._live is not None and mask is not self._live and np.array_equal(mask, self._live)

    def _selector(self, mask: np.ndarray, filtered_only_by_tombstones: bool) -> tuple[Any, list[Any]]:
        # The tombstone-only selector is the same for every unfiltered search: build it once.
        if filtered_only_by_tombstones:
            if self._live_selector is None:
                self._live_selector = self._faiss.selector(mask)
            return self._live_selector
        return self._faiss.selector(mask)

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
        valid = ids >= 0
        rows = self.metadata.rows_of(ids[valid])
        known = rows >= 0  # an id the metadata does not know is never expected in a consistent folder
        records = iter(self.metadata.records(rows[known]))
        known_of = iter(known.tolist())
        out: list[list[Hit]] = []
        for qi in range(ids.shape[0]):
            cols = np.flatnonzero(valid[qi])
            hits: list[Hit] = []
            for hit_id, score in zip(ids[qi, cols].tolist(), scores[qi, cols].tolist(), strict=True):
                if next(known_of):
                    hits.append(Hit(hit_id, score, len(hits), next(records)))
            out.append(hits)
        return out


def _is_vector(array: np.ndarray, dim: int) -> bool:
    """A 1-D array, or a (1, D) float array, is an embedding; anything else is an image."""
    if array.ndim == 1:
        return True
    return array.ndim == 2 and array.shape[0] == 1 and array.shape[1] == dim and np.issubdtype(array.dtype,
                                                                                                np.floating)
