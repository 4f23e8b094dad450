"""The index folder life cycle: build, add, remove and load (the sharded workflow is in :mod:`geovl.index.sharded`).

Rules:

* Every write replaces the index folder as a whole, copy-on-write and under a lock (:mod:`geovl.index.folder`): a
  crash or kill leaves the previous index (or none), never a half-written one.
* Vectors keep their global ids (the ``id`` column of the metadata) through every operation
  (:mod:`geovl.index.faiss_ops`); ids are unique within an index, and an id stays taken while tombstoned.
* Only embeddings of the model an index was built with (name, checkpoint sha256, dimension) can be added or
  queried.
* Removal deletes vectors where faiss can (Flat, in-RAM IVF); HNSW, on-disk and other indexes record tombstones in
  ``deleted.npy`` instead, which searches skip. ``metadata.parquet`` keeps one row per vector in ``index.faiss``.

The index folder layout is described in :class:`geovl.index.manifest.IndexManifest`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geovl.index.access import IndexAccess
from geovl.index.calibrate import RECALL_TARGET
from geovl.index.calibrate import calibrate as calibrate_index
from geovl.index.choose import RERANK_K_FACTOR, IndexChoice
from geovl.index.faiss_ops import (
    UseGpu,
    choose_for,
    empty_trained,
    faiss_module,
    fill_index,
    merge_on_disk,
    new_index,
    override_params,
    read_faiss,
    resolve_gpu,
    set_search_defaults,
)
from geovl.index.folder import (
    IndexUnchanged,
    finish_index_folder,
    link_or_copy,
    previous_version,
    read_deleted,
    rewrite_index_folder,
)
from geovl.index.loaded import LoadedIndex
from geovl.index.manifest import (
    BUILD_HINT,
    INDEX_FILE,
    IVFDATA_FILE,
    MANIFEST_FILE,
    METADATA_FILE,
    VECTORS_FILE,
    EmbeddingFolders,
    IndexManifest,
    check_same_model,
    open_embedding_sets,
    source_records,
)
from geovl.index.metadata import few_ids, merge_metadata, parquet_ids
from geovl.index.rerank import copy_rows, open_vectors, write_vectors

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def build_index(
    embeddings: EmbeddingFolders,
    out_dir: PathLike,
    *,
    factory: str = "auto",
    memory_budget_bytes: int | None = None,
    train_size: int | None = None,
    seed: int = 0,
    use_gpu: UseGpu = "auto",
    progress: bool = True,
    nprobe: int | None = None,
    ef_search: int | None = None,
    ef_construction: int | None = None,
    calibrate: bool = True,
    recall_target: float = RECALL_TARGET,
    rerank: bool | None = None,
) -> IndexManifest:
    """Build an index folder from one or more embeddings folders of the same model.

    The index is trained on a seeded random sample of all vectors, then every partition is added with its global
    ids (memory-mapped, chunk by chunk). The metadata of all partitions is merged into ``metadata.parquet``,
    sorted by id; a re-ranking index also gets ``vectors.npy`` in the same order. Then the index is calibrated
    (:func:`geovl.index.calibrate.calibrate`): recall and latency measured on a sample of the collection, and the
    default ``nprobe`` / ``efSearch`` widened to ``recall_target`` unless given. ``out_dir`` is replaced only once
    the new index is complete (see the module docstring).

    Args:
        embeddings: an embeddings folder or a list of them (same model and dimension).
        out_dir: the index folder to create or replace.
        factory: ``"auto"`` (:func:`geovl.index.choose.choose_index`) or a faiss ``index_factory`` string.
        memory_budget_bytes: RAM the filled index may use, in bytes, for ``"auto"`` (``None``: no limit).
        train_size: vectors in the training sample (default: ``64 * nlist``, at least 10,000, at most 1 GiB).
        seed: seed of the training sample and of k-means.
        use_gpu: train and add IVF indexes on a GPU (``"auto"``: when faiss sees one). The file is a CPU index.
        progress: show a progress bar while adding.
        nprobe: default IVF lists visited per query (default: ``clip(nlist // 128, 8, 128)``).
        ef_search: default HNSW search beam width (default 128).
        ef_construction: HNSW build beam width (default 40).
        calibrate: measure recall@10 and latency at build time (recorded as the manifest's ``expected``).
        recall_target: recall@10 the calibration widens the default search for.
        rerank: keep the float32 vectors in ``vectors.npy`` and re-rank ANN candidates with them exactly
            (:mod:`geovl.index.rerank`); ``None``: as :func:`~geovl.index.choose.choose_index` decides (on for the
            compressed indexes it picks), off for explicit factories. Not for Flat indexes, which are exact.

    Returns:
        The manifest written to ``out_dir/manifest.json``.

    Raises:
        ValueError: mixed models, duplicate ids, an invalid factory string, or no vectors.
        FileNotFoundError: an embeddings folder or partition file is missing.
    """
    sets = open_embedding_sets(embeddings)
    n, dim = sum(s.count for s in sets), sets[0].dim
    if n == 0:
        raise ValueError("the embeddings folders hold no vectors")
    choice = choose_for(factory, n, dim, memory_budget_bytes)
    override_params(choice, n, train_size=train_size, seed=seed, nprobe=nprobe, ef_search=ef_search,
                    ef_construction=ef_construction)
    if rerank is not None:
        if rerank and choice.kind == "flat":
            raise ValueError(f"rerank=True on {choice.factory!r}: a Flat index is exact already; re-ranking is for "
                             "compressed or graph indexes (IVF, HNSW, PQ)")
        if rerank and not choice.params.rerank:
            choice.params.k_factor = choice.params.k_factor or RERANK_K_FACTOR
        elif not rerank and choice.params.rerank:  # the automatic choice's re-ranking, turned off
            choice.params.k_factor = None
        choice.params.rerank = bool(rerank)
    if not 0 < recall_target <= 1:
        raise ValueError(f"recall_target must be in (0, 1], got {recall_target}")
    gpu = resolve_gpu(use_gpu)
    out = Path(out_dir)
    with rewrite_index_folder(out) as tmp:
        ids = merge_metadata([p.metadata for s in sets for p in s.partitions], tmp / METADATA_FILE)
        if ids.size != n:
            raise ValueError(f"{ids.size} metadata rows for {n} vectors")
        index, fingerprint, gpu_used = fill_index(new_index(choice, dim), choice, sets, gpu=gpu, progress=progress)
        manifest = IndexManifest.for_choice(choice, sets, fingerprint=fingerprint, gpu_used=gpu_used)
        manifest.count_at_training = n
        vectors = None
        if choice.params.rerank:
            write_vectors(sets, ids, tmp / VECTORS_FILE)
            vectors = np.load(tmp / VECTORS_FILE, mmap_mode="r")
        if calibrate:
            access = IndexAccess(faiss_module(), index, ids, choice.params, vectors=vectors)
            manifest.expected = calibrate_index(access, choice.params, sets, kind=choice.kind, target=recall_target,
                                                seed=seed, widen=nprobe is None and ef_search is None)
        set_search_defaults(index, manifest)
        faiss_module().write_index(index, str(tmp / INDEX_FILE))
        finish_index_folder(tmp, manifest, ids, np.zeros(0, np.int64))
    logger.info("built %s index of %d vectors at %s", choice.factory, n, out)
    return manifest


def add_to_index(index_dir: PathLike, embeddings: EmbeddingFolders, *, progress: bool = True) -> IndexManifest:
    """Add new embeddings folders to an index without rebuilding it.

    IVF indexes keep their trained quantizer; when more vectors have been added since training than the index was
    trained for, the manifest gets a "consider rebuild" note. On-disk indexes are re-merged into a new
    ``index.ivfdata``. The index folder is replaced atomically.

    Args:
        index_dir: an index folder.
        embeddings: embeddings folder(s) of the model the index was built with.
        progress: show a progress bar while adding.

    Raises:
        ValueError: another model ("index was built with model X (sha ...); got Y ..."), or ids already present.
    """
    sets = open_embedding_sets(embeddings)
    out = Path(index_dir)
    with rewrite_index_folder(out) as tmp:
        old = IndexManifest.load(out)
        for s in sets:
            check_same_model(old.model, s.model)
        new_parts = [p for s in sets for p in s.partitions if p.count]
        if not new_parts:
            raise ValueError("the embeddings folders hold no vectors to add")
        new_ids = np.concatenate([parquet_ids(p.metadata) for p in new_parts])
        tomb = read_deleted(out)
        clash = np.unique(new_ids[np.isin(new_ids, parquet_ids(out / METADATA_FILE))])
        if clash.size:
            dead = clash[np.isin(clash, tomb)]
            extra = f" ({few_ids(dead)} were removed but stay tombstoned until a rebuild)" if dead.size else ""
            raise ValueError(f"{clash.size} ids are already in the index {out}: {few_ids(clash)}{extra}")
        old_rows = parquet_ids(out / METADATA_FILE)
        ids = merge_metadata([out / METADATA_FILE] + [p.metadata for s in sets for p in s.partitions],
                             tmp / METADATA_FILE)
        if old.params.rerank:
            write_vectors(sets, ids, tmp / VECTORS_FILE, base=(np.load(out / VECTORS_FILE, mmap_mode="r"), old_rows))
        choice = IndexChoice(old.index_type, old.kind, old.params)
        if old.on_disk:
            shard, _, _ = fill_index(empty_trained(out, old), choice, sets, gpu=False, progress=progress)
            existing = read_faiss(out, old, faiss_module().IO_FLAG_READ_ONLY)
            index = empty_trained(out, old)
            merge_on_disk(index, [existing, shard], tmp / IVFDATA_FILE)
        else:
            index, _, _ = fill_index(read_faiss(out, old), choice, sets, gpu=False, progress=progress)
        faiss_module().write_index(index, str(tmp / INDEX_FILE))
        added = int(new_ids.size)
        old.sources += source_records(sets)
        old.added_since_training += added
        old.note_rebuild()
        finish_index_folder(tmp, old, ids, tomb)
    logger.info("added %d vectors to %s (%d live)", added, out, old.count)
    return old


def remove_from_index(index_dir: PathLike, ids: Sequence[int] | np.ndarray, *,
                      missing_ok: bool = False) -> IndexManifest:
    """Remove vectors by global id.

    Flat and IVF indexes delete the vectors (``remove_ids``) and their metadata rows. HNSW, on-disk and other
    indexes faiss cannot remove from keep both and record the ids in ``deleted.npy`` (tombstones, counted in
    ``manifest.deleted``), which searches skip. Either way ``metadata.parquet`` keeps one row per vector stored
    in ``index.faiss``. The index folder is replaced atomically.

    Args:
        index_dir: an index folder.
        ids: global ids to remove.
        missing_ok: ignore ids that are not in the index instead of raising ``ValueError``.
    """
    req = np.unique(np.asarray(ids, dtype=np.int64).ravel())
    out = Path(index_dir)
    try:
        with rewrite_index_folder(out) as tmp:
            old = IndexManifest.load(out)
            rows = parquet_ids(out / METADATA_FILE)
            tomb = read_deleted(out)
            present = req[np.isin(req, rows) & ~np.isin(req, tomb)]
            missing = np.setdiff1d(req, present)
            if missing.size and not missing_ok:
                raise ValueError(f"{missing.size} ids are not in the index {out} (or were removed already): "
                                 f"{few_ids(missing)}")
            if present.size == 0:
                raise IndexUnchanged
            if old.removal == "remove_ids" and not old.on_disk and _remove_ids(out, old, tmp, present):
                if old.params.rerank:
                    copy_rows(out / VECTORS_FILE, ~np.isin(np.sort(rows), present), tmp / VECTORS_FILE)
                rows = merge_metadata([out / METADATA_FILE], tmp / METADATA_FILE, drop=present)
            else:  # tombstones: index.faiss and metadata.parquet are unchanged, so the new folder shares them
                old.removal = "tombstones"
                shared = (INDEX_FILE, METADATA_FILE) + ((IVFDATA_FILE,) if old.on_disk else ()) + (
                    (VECTORS_FILE,) if old.params.rerank else ())
                for name in shared:
                    link_or_copy(out / name, tmp / name)
                rows = np.sort(rows)
                tomb = np.union1d(tomb, present)
            finish_index_folder(tmp, old, rows, tomb)
    except IndexUnchanged:
        logger.info("none of the %d ids are in %s; nothing to remove", req.size, out)
        return IndexManifest.load(out)
    logger.info("removed %d vectors from %s (%s)", present.size, out, old.removal)
    return old


def _remove_ids(out: Path, manifest: IndexManifest, tmp: Path, ids: np.ndarray) -> bool:
    """Write the index minus ``ids`` (faiss ``remove_ids``) into ``tmp``; ``False`` if faiss refuses."""
    faiss = faiss_module()
    index = read_faiss(out, manifest)
    try:
        removed = int(index.remove_ids(faiss.IDSelectorBatch(ids)))
    except RuntimeError as exc:
        logger.warning("%s cannot remove vectors (%s); recording tombstones instead", manifest.index_type, exc)
        return False
    if removed != ids.size:
        raise RuntimeError(f"faiss removed {removed} vectors for {ids.size} ids; the index and metadata disagree")
    faiss.write_index(index, str(tmp / INDEX_FILE))
    return True


def load_index(index_dir: PathLike, *, mmap: bool = False, use_gpu: UseGpu = "auto") -> LoadedIndex:
    """Load an index folder for search.

    Args:
        index_dir: the index folder. When a write was interrupted while swapping folders, the previous version it
            left aside is loaded (with a warning).
        mmap: memory-map instead of reading into RAM: IVF lists with ``IO_FLAG_MMAP``, flat codes (Flat, HNSW
            storage) with ``IO_FLAG_MMAP_IFC``, both read-only. Falls back to a full read (logged) where the
            index type does not support it. On-disk indexes are always memory-mapped.
        use_gpu: move Flat/IVF indexes to a GPU (``"auto"``: when faiss sees one and ``mmap`` is off).

    Raises:
        FileNotFoundError: no index there, with the command that builds one.
        ValueError: an unsupported metric, or an index file that disagrees with the manifest.
    """
    faiss = faiss_module()
    path = Path(index_dir)
    if not (path / MANIFEST_FILE).is_file():
        aside = None if path.exists() else previous_version(path)
        if aside is None:
            raise FileNotFoundError(f"no geovl index at {path} (missing {MANIFEST_FILE}); {BUILD_HINT}")
        logger.warning("%s is missing after an interrupted write; loading the previous index from %s", path, aside)
        path = aside
    manifest = IndexManifest.load(path)
    if manifest.metric != "ip":
        raise ValueError(f"{path / MANIFEST_FILE}: metric {manifest.metric!r} is not supported; geovl indexes use "
                         "'ip' (inner product of L2-normalised vectors)")
    if mmap and not manifest.on_disk:
        flags = faiss.IO_FLAG_READ_ONLY | (faiss.IO_FLAG_MMAP if manifest.kind == "ivf" else faiss.IO_FLAG_MMAP_IFC)
        try:
            index = read_faiss(path, manifest, flags)
        except RuntimeError as exc:
            logger.info("%s cannot be memory-mapped (%s); reading it into RAM", manifest.index_type, exc)
            index, mmap = read_faiss(path, manifest), False
    else:
        index = read_faiss(path, manifest, faiss.IO_FLAG_READ_ONLY if manifest.on_disk else 0)
    deleted = read_deleted(path)
    if index.ntotal != manifest.count + deleted.size:
        raise ValueError(f"{path}: index.faiss holds {index.ntotal} vectors but the manifest says {manifest.count} "
                         f"live + {deleted.size} deleted; rebuild it ({BUILD_HINT})")
    set_search_defaults(index, manifest)
    vectors = None
    if manifest.params.rerank:
        if not (path / VECTORS_FILE).is_file():
            raise FileNotFoundError(f"{path / VECTORS_FILE} not found: this re-ranking index is incomplete; "
                                    f"rebuild it ({BUILD_HINT})")
        vectors = open_vectors(path / VECTORS_FILE)
        if vectors.shape != (index.ntotal, manifest.dim) or vectors.dtype != np.float32:
            raise ValueError(f"{path / VECTORS_FILE} holds {vectors.dtype} {vectors.shape}, expected float32 "
                             f"({index.ntotal}, {manifest.dim}); rebuild the index ({BUILD_HINT})")
    loaded = LoadedIndex(index, manifest, path, deleted, mmap=mmap or manifest.on_disk, vectors=vectors)
    want_gpu = use_gpu is True or (use_gpu == "auto" and not loaded.mmap)
    if want_gpu and manifest.kind in ("flat", "ivf") and resolve_gpu(use_gpu):
        try:
            loaded.gpu_resources = faiss.StandardGpuResources()
            loaded.index, loaded.gpu = faiss.index_cpu_to_gpu(loaded.gpu_resources, 0, index), True
        except (RuntimeError, AttributeError) as exc:
            logger.info("keeping %s on the CPU: %s", manifest.index_type, exc)
    return loaded
