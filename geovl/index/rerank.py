"""Exact re-ranking from memory-mapped float vectors: compressed codes in RAM, exact scores from disk.

An index with ``params.rerank`` keeps every vector again, as float32, in ``vectors.npy`` in its folder (one row
per ``metadata.parquet`` row, in the same order: sorted by id). Searches ask the compressed ANN index (IVF-SQ8,
IVF-PQ) for ``ceil(k * k_factor)`` candidates and re-rank them by exact inner product with rows read from that file,
memory-mapped: RAM holds only the codes (1 byte per dimension for SQ8) while the scores that order the results are
exact, which gives back the recall quantisation loses on near-duplicates (overlapping chips, re-acquisitions). The
same rows serve exact scoring of selective filters.

The file is plain ``.npy`` (``numpy.load(path, mmap_mode="r")``); the OS page cache keeps the rows hot searches
touch, and a cold row costs one 4 KiB page read.

Rules: the file is written inside the new index folder before it is swapped in (:mod:`geovl.index.folder`), so it
always matches ``metadata.parquet`` row for row; every index write (build, add, remove) rewrites or links it.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geovl.index.manifest import VECTORS_FILE, EmbeddingSet
from geovl.index.metadata import parquet_ids

__all__ = ["VECTORS_FILE", "candidates_for", "copy_rows", "open_vectors", "rerank", "write_vectors"]

_CHUNK_BYTES = 64 * 2**20

POPULATE_MAX_BYTES = 8 * 2**30
"""Larger vector files are mapped lazily: populating them would read them whole at every load."""


def open_vectors(path: Path) -> np.ndarray:
    """``vectors.npy`` as a read-only ndarray over a memory map whose pages are mapped up front (``MAP_POPULATE``).

    Searches touch ~30 scattered rows per query. With a lazily mapped file each first touch of a page is a page
    fault: at 1M rows the 30-row gather took 23 us against 10 us with the mapping populated, for the first few
    hundred thousand queries. Populating costs ~0.1 s at load when the file is in the page cache, and reads it in
    when it is not (a cold file otherwise cost a disk read per row: p50 2.7-6 ms per query). Where ``MAP_POPULATE``
    does not exist (not Linux), for files over :data:`POPULATE_MAX_BYTES` and for a Fortran-ordered file, this is
    ``numpy.load(mmap_mode="r")``.
    """
    flags = getattr(mmap, "MAP_POPULATE", None)
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
        big = path.stat().st_size > POPULATE_MAX_BYTES
        if flags is None or big or fortran or not shape or shape[0] == 0:
            return np.load(path, mmap_mode="r").view(np.ndarray)
        mapped = mmap.mmap(fh.fileno(), 0, flags=mmap.MAP_SHARED | flags, prot=mmap.PROT_READ)
    return np.ndarray(shape, dtype, buffer=mapped, offset=offset)  # keeps the map alive


def candidates_for(k: int, k_factor: float, total: int) -> int:
    """ANN candidates to re-rank for ``k`` results: ``ceil(k * k_factor)``, at least ``k``, at most ``total``."""
    return int(min(total, max(k, math.ceil(k * k_factor))))


def write_vectors(sets: Sequence[EmbeddingSet], row_ids: np.ndarray, path: Path, *,
                  base: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Write ``path`` (N, D) float32 with the vector of ``row_ids[i]`` at row ``i``.

    Args:
        sets: embeddings folders whose vectors (with the ids in their metadata) go in.
        row_ids: sorted ids of every row the file must hold.
        path: the ``.npy`` file to write (inside a folder not yet swapped in).
        base: ``(vectors, ids)`` of an existing file whose rows go in too (adding to an index).

    Raises:
        ValueError: a row id without a vector.
    """
    dim = sets[0].dim if sets else int(base[0].shape[1]) if base is not None else 0
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(int(row_ids.size), dim))
    written = np.zeros(row_ids.size, bool)

    def put(vectors: np.ndarray, ids: np.ndarray, out: np.ndarray = out) -> None:
        rows = np.searchsorted(row_ids, ids)
        if rows.size and (rows.max() >= row_ids.size or not np.array_equal(row_ids[rows], ids)):
            raise ValueError("an embedding id is missing from the index metadata; rebuild the index")
        chunk = max(1, _CHUNK_BYTES // max(1, 4 * dim))
        for start in range(0, ids.size, chunk):
            block = rows[start:start + chunk]
            out[block] = np.asarray(vectors[start:start + chunk], np.float32)
        written[rows] = True

    if base is not None:
        put(*base)
    for s in sets:
        for part in s.partitions:
            if part.count:
                put(np.load(part.vectors, mmap_mode="r"), parquet_ids(part.metadata))
    if not written.all():
        raise ValueError(f"{int((~written).sum())} index rows have no vector for {path.name}; rebuild the index")
    out.flush()


def copy_rows(source: Path, keep: np.ndarray, path: Path) -> None:
    """Write ``path`` with the rows of ``source`` where ``keep`` is true (removing vectors from an index)."""
    old = np.load(source, mmap_mode="r")
    rows = np.flatnonzero(keep)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(int(rows.size), old.shape[1]))
    chunk = max(1, _CHUNK_BYTES // max(1, 4 * old.shape[1]))
    for start in range(0, rows.size, chunk):
        out[start:start + chunk] = old[rows[start:start + chunk]]
    out.flush()


def rank_one(q: np.ndarray, rows: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of one query ``q`` (D,) against ``vectors[rows]`` and the positions of the best ``k``, best
    first (ties in candidate order)."""
    scores = np.asarray(vectors[rows] @ q, np.float32)
    return scores, np.argsort(-scores, kind="stable")[:k]


def rerank(q: np.ndarray, ids: np.ndarray, rows: np.ndarray, vectors: np.ndarray, k: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of candidate ``ids`` (at metadata ``rows``; -1 where absent) for queries ``q``.

    Args:
        q: (Q, D) float32 queries.
        ids: (Q, C) candidate ids from the ANN search (-1: none).
        rows: (Q, C) their rows in ``vectors`` (-1: none).
        vectors: (N, D) float32 rows (memory-mapped).
        k: results per query.

    Returns:
        ``(scores, ids)`` of shape (Q, k), best first; -inf / -1 pad queries with fewer than ``k`` candidates.
    """
    if q.shape[0] == 1:  # the common single query: a few vectorised steps over C candidates
        ok = rows[0] >= 0
        cand, at = (ids[0], rows[0]) if ok.all() else (ids[0][ok], rows[0][ok])
        one, order = rank_one(q[0], at, vectors, k)
        s1, i1 = one[order][None, :], np.asarray(cand[order], np.int64)[None, :]
        if s1.shape[1] < k:
            s1 = np.pad(s1, ((0, 0), (0, k - s1.shape[1])), constant_values=-np.inf)
            i1 = np.pad(i1, ((0, 0), (0, k - i1.shape[1])), constant_values=-1)
        return s1, i1
    valid = rows >= 0
    # rows are gathered in sorted order (sequential page access on a cold file), then put back in place
    flat = np.where(valid, rows, 0).ravel()
    order = np.argsort(flat, kind="stable")
    gathered = np.empty((flat.size, vectors.shape[1]), np.float32)
    gathered[order] = vectors[flat[order]]
    scores = np.einsum("qcd,qd->qc", gathered.reshape(*rows.shape, -1), q, optimize=False)
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    keep = min(k, scores.shape[1])
    top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep] if scores.shape[1] > keep else (
        np.broadcast_to(np.arange(keep), (scores.shape[0], keep)))
    picked = np.arange(scores.shape[0])[:, None]
    top = top[picked, np.argsort(-scores[picked, top], axis=1, kind="stable")]
    out_s = scores[picked, top]
    out_i = np.where(np.isfinite(out_s), ids[picked, top], -1)
    if keep < k:
        out_s = np.pad(out_s, ((0, 0), (0, k - keep)), constant_values=-np.inf)
        out_i = np.pad(out_i, ((0, 0), (0, k - keep)), constant_values=-1)
    return out_s, out_i.astype(np.int64)
