"""The faiss side of index folders: creating, training, filling, reading and merging faiss indexes.

Rules:

* Vectors keep their global ids (the ``id`` column of the metadata) as faiss labels: IVF indexes store them in the
  inverted lists, every other type is wrapped in ``IndexIDMap2``.
* Training uses a seeded uniform sample of all vectors, so the same data, factory and seed give the same trained
  quantizer (and fingerprint; shards merge only when fingerprints match).
* Vectors are added from the memory-mapped partitions in chunks of :data:`ADD_CHUNK_BYTES`.
* A GPU only trains and fills IVF indexes; what is written is always a CPU index.
* Searches pass per-call parameters (:func:`search_parameters`) rather than setting the index's fields, so
  concurrent searches with different parameters do not interfere; the manifest's defaults are stored in the index.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geovl.index.choose import IndexChoice, choose_index, describe_factory
from geovl.index.faisslib import faiss_module
from geovl.index.manifest import BUILD_HINT, INDEX_FILE, EmbeddingSet, IndexManifest
from geovl.index.metadata import parquet_ids

logger = logging.getLogger(__name__)

UseGpu = bool | Literal["auto"]

ADD_CHUNK_BYTES = 64 * 2**20
"""Vectors are copied out of the memory-mapped partitions and added in chunks of this many bytes."""


def resolve_gpu(use_gpu: UseGpu) -> bool:
    """Whether to use a GPU: ``"auto"`` when faiss sees one; ``True`` refuses (``RuntimeError``) when it sees none."""
    if use_gpu == "auto":
        return bool(faiss_module().get_num_gpus() > 0)
    if use_gpu:
        if faiss_module().get_num_gpus() < 1:
            raise RuntimeError("use_gpu=True but faiss sees no GPU; install faiss with GPU support "
                               "(pip install 'geovl[gpu]') or pass use_gpu='auto'")
        return True
    return False


def choose_for(factory: str, n: int, dim: int, budget: int | None, *, ivf_only: bool = False) -> IndexChoice:
    """The index for ``n`` vectors: :func:`~geovl.index.choose.choose_index` for ``"auto"``, else ``factory``
    described (``ValueError`` for a non-IVF type when ``ivf_only``)."""
    if factory == "auto":
        return choose_index(n, dim, budget, ivf_only=ivf_only)
    choice = describe_factory(factory, n, dim)
    if ivf_only and choice.kind != "ivf":
        raise ValueError(f"sharded builds need an IVF index (they merge inverted lists); {factory!r} is "
                         f"{choice.kind}. Use e.g. 'IVF1024,Flat'")
    return choice


def override_params(choice: IndexChoice, n: int, *, train_size: int | None, seed: int, nprobe: int | None,
                    ef_search: int | None, ef_construction: int | None) -> None:
    """Apply the caller's parameters to ``choice.params`` (``train_size`` and ``nprobe`` clipped to what exists)."""
    p = choice.params
    p.seed = int(seed)
    if train_size is not None and p.train_size:
        if train_size < 1:
            raise ValueError(f"train_size must be >= 1, got {train_size}")
        p.train_size = int(min(train_size, n))
    if nprobe is not None:
        if p.nlist is None:
            logger.warning("nprobe=%d ignored: %s is not an IVF index", nprobe, choice.factory)
        else:
            p.nprobe = int(min(nprobe, p.nlist))
    if ef_search is not None:
        p.ef_search = int(ef_search)
    if ef_construction is not None:
        p.ef_construction = int(ef_construction)


def new_index(choice: IndexChoice, dim: int) -> Any:
    """An empty, untrained inner-product index for ``choice`` (``IDMap2``-wrapped unless IVF), seeded."""
    faiss = faiss_module()
    index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
    if choice.kind != "ivf":
        index = faiss.index_factory(dim, "IDMap2," + choice.factory, faiss.METRIC_INNER_PRODUCT)
    hnsw = _hnsw_of(index)
    if hnsw is not None and choice.params.ef_construction:
        hnsw.efConstruction = int(choice.params.ef_construction)
    ivf = unwrap_index(index)[2]  # the IVF index under any IDMap2 / pre-transform / refine wrapper
    if isinstance(ivf, faiss.IndexIVF):
        ivf.cp.seed = int(choice.params.seed)
    if isinstance(ivf, faiss.IndexIVFPQ):
        # index_factory turns on polysemous training for PQ codes: a simulated annealing that reorders every
        # codebook (training IVF16,PQ8 on 2k x 32-d took 12.9 s with it, 0.24 s without, on one core) and only
        # serves polysemous (Hamming-filtered) search, which geovl never enables. Distances are the same without.
        ivf.do_polysemous_training = False
    return index


def _hnsw_of(index: Any) -> Any:
    """The ``HNSW`` graph struct of an (ID-mapped) HNSW index, else ``None``."""
    faiss = faiss_module()
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return inner.hnsw if isinstance(inner, faiss.IndexHNSW) else None


def set_search_defaults(index: Any, manifest: IndexManifest) -> None:
    """Store the manifest's default nprobe / efSearch / refine k_factor in the index (faiss serialises them)."""
    faiss = faiss_module()
    space = faiss.ParameterSpace()
    p = manifest.params
    for name, value in (("nprobe", p.nprobe), ("efSearch", p.ef_search if manifest.kind == "hnsw" else None),
                        ("quantizer_efSearch", p.ef_search if p.nlist else None), ("k_factor_rf", p.k_factor)):
        if value:
            try:
                space.set_index_parameter(index, name, int(value))
            except RuntimeError as exc:
                logger.debug("cannot set %s on %s: %s", name, manifest.index_type, exc)


def _fingerprint(index: Any) -> str:
    """sha256 of a serialised (trained, empty) index: shards merge only with equal fingerprints."""
    return hashlib.sha256(faiss_module().serialize_index(index).tobytes()).hexdigest()


def sample_vectors(sets: Sequence[EmbeddingSet], size: int, seed: int) -> np.ndarray:
    """``size`` vectors drawn uniformly without replacement across all partitions (seeded), as (size, D) float32."""
    return sample_with_ids(sets, size, seed, with_ids=False)[0]


def sample_with_ids(sets: Sequence[EmbeddingSet], size: int, seed: int, *, with_ids: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sample_vectors` (at most ``size``, all when fewer) plus the vectors' ids (empty unless ``with_ids``)."""
    total = sum(s.count for s in sets)
    size = min(size, total)
    pos = np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))
    out = np.empty((size, sets[0].dim), np.float32)
    ids = np.empty(size if with_ids else 0, np.int64)
    filled = offset = 0
    for s in sets:
        for part in s.partitions:
            sel = pos[(pos >= offset) & (pos < offset + part.count)] - offset
            if sel.size:
                out[filled:filled + sel.size] = np.load(part.vectors, mmap_mode="r")[sel]
                if with_ids:
                    ids[filled:filled + sel.size] = parquet_ids(part.metadata)[sel]
                filled += sel.size
            offset += part.count
    return out, ids


def _add_sets(index: Any, sets: Sequence[EmbeddingSet], *, progress: bool) -> int:
    """Add every partition with its global ids, one memory-mapped chunk at a time; return vectors added."""
    from tqdm.auto import tqdm

    total = sum(s.count for s in sets)
    added = 0
    with tqdm(total=total, unit="vec", desc="index add", disable=not progress, dynamic_ncols=True) as bar:
        for s in sets:
            chunk = max(1024, ADD_CHUNK_BYTES // (4 * s.dim))
            for part in s.partitions:
                ids = parquet_ids(part.metadata)
                if ids.size != part.count:
                    raise ValueError(f"{part.metadata}: {ids.size} metadata rows for {part.count} vectors")
                vecs = np.load(part.vectors, mmap_mode="r")
                for start in range(0, part.count, chunk):
                    x = np.ascontiguousarray(vecs[start:start + chunk], dtype=np.float32)
                    index.add_with_ids(x, np.ascontiguousarray(ids[start:start + chunk]))
                    bar.update(x.shape[0])
                    added += x.shape[0]
    return added


def fill_index(index: Any, choice: IndexChoice, sets: Sequence[EmbeddingSet], *, gpu: bool, progress: bool,
               add: bool = True) -> tuple[Any, str | None, bool]:
    """Train ``index`` if needed (on a seeded sample of ``sets``) and add ``sets`` (when ``add``).

    With ``gpu``, IVF indexes are trained and filled on GPU 0 and copied back to the CPU; types the GPU cloner
    does not support fall back to the CPU with a logged warning.

    Returns:
        ``(cpu_index, fingerprint of the trained empty index or None, whether a GPU was used)``.
    """
    faiss = faiss_module()
    work, resources = index, None
    if gpu and choice.kind == "ivf":
        try:
            resources = faiss.StandardGpuResources()
            work = faiss.index_cpu_to_gpu(resources, 0, index)
        except (RuntimeError, AttributeError) as exc:
            logger.warning("GPU build not possible for %s (%s); building on the CPU", choice.factory, exc)
            work = index
    fingerprint = None
    if not work.is_trained:
        p = choice.params
        logger.info("training %s on %d sampled vectors (seed %d)", choice.factory, p.train_size, p.seed)
        work.train(sample_vectors(sets, p.train_size, p.seed))
        fingerprint = _fingerprint(faiss.index_gpu_to_cpu(work) if work is not index else work)
    if add:
        _add_sets(work, sets, progress=progress)
    used_gpu = work is not index
    if used_gpu:
        index = faiss.index_gpu_to_cpu(work)
    del work, resources  # the GPU index before the resources it uses
    return index, fingerprint, used_gpu


def read_faiss(index_dir: Path, manifest: IndexManifest, flags: int = 0) -> Any:
    """Read ``index.faiss`` of an index folder (on-disk lists from the same folder)."""
    faiss = faiss_module()
    path = index_dir / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the index folder is incomplete); {BUILD_HINT}")
    if manifest.on_disk:
        flags |= faiss.IO_FLAG_ONDISK_SAME_DIR
    return faiss.read_index(str(path), flags)


def empty_trained(index_dir: Path, manifest: IndexManifest) -> Any:
    """A trained, empty copy of an IVF index (its lists are memory-mapped while reading, never loaded)."""
    faiss = faiss_module()
    index = read_faiss(index_dir, manifest, faiss.IO_FLAG_READ_ONLY | (0 if manifest.on_disk else faiss.IO_FLAG_MMAP))
    ivf = faiss.extract_index_ivf(index)
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)
    empty.this.disown()  # the index owns it now; Python must not free it
    ivf.ntotal = index.ntotal = 0
    return index


def merge_on_disk(trained: Any, parts: Sequence[Any], ivfdata: Path) -> None:
    """Merge the inverted lists of ``parts`` into ``trained`` (empty) as OnDiskInvertedLists in ``ivfdata``.

    Same steps as ``faiss.contrib.ondisk.merge_ondisk``, but on already-opened indexes: the contrib function reads
    its inputs without ``IO_FLAG_ONDISK_SAME_DIR``, so it cannot take an on-disk index that was moved (every
    geovl index is, from its temporary folder), which adding to an on-disk index needs.
    """
    faiss = faiss_module()
    ivf = faiss.extract_index_ivf(trained)
    if trained.ntotal != 0:
        raise ValueError("on-disk merge needs an empty trained index")
    invlists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(ivfdata))
    sources = faiss.InvertedListsPtrVector()
    for part in parts:
        sources.push_back(faiss.extract_index_ivf(part).invlists)
    ntotal = invlists.merge_from_multiple(sources.data(), sources.size(), False)
    ivf.replace_invlists(invlists, True)
    invlists.this.disown()
    trained.ntotal = ivf.ntotal = ntotal


def unwrap_index(index: Any) -> tuple[Any, Any, Any, bool]:
    """Walk the wrappers geovl writes around a faiss index.

    Returns:
        ``(id_map, refine, core, transformed)``: the outer ``IndexIDMap``/``IndexIDMap2`` (or ``None``), the
        ``IndexRefine``/``IndexRefineFlat`` stage (or ``None``), the index doing the ANN work (IVF, HNSW, flat
        codes, ...) under any ``IndexPreTransform`` (OPQ, PCA, ...), and whether a pre-transform sits between the
        id map and the refine stage or core (then stored vectors are in the transformed space).
    """
    faiss = faiss_module()
    node = faiss.downcast_index(index)
    id_map = refine = None
    transformed = False
    if isinstance(node, faiss.IndexIDMap):  # IndexIDMap2 too (a subclass)
        id_map, node = node, faiss.downcast_index(node.index)
    while True:
        if isinstance(node, faiss.IndexPreTransform):
            transformed = transformed or refine is None
            node = faiss.downcast_index(node.index)
        elif isinstance(node, faiss.IndexRefine) and refine is None:
            refine, node = node, faiss.downcast_index(node.base_index)
        else:
            return id_map, refine, node, transformed


def search_parameters(index: Any, *, sel: Any = None, nprobe: int | None = None, ef_search: int | None = None,
                      k_factor: float | None = None) -> Any:
    """Per-call faiss search parameters for ``index`` that reach the index doing the work.

    faiss' wrappers pass parameters on differently: ``IndexIDMap``/``IndexIDMap2`` translate ``sel`` from ids to
    positions and pass the rest on, ``IndexPreTransform`` passes non-pre-transform parameters to its index, and
    ``IndexRefine`` takes only ``IndexRefineSearchParameters`` (whose ``base_index_params`` go to its base index;
    a ``sel`` at its top level is ignored). So: an IVF index anywhere in the chain gets ``nprobe`` (clipped to
    ``nlist``) and, with an HNSW coarse quantizer, ``ef_search`` as the quantizer's ``efSearch``; an HNSW index gets
    ``ef_search``; a refine stage gets ``k_factor`` and carries the core's parameters, with ``sel`` translated to
    the positions its base index labels vectors with. Parameters that do not apply to the index type (``nprobe``
    on HNSW or Flat, ``ef_search`` on IVF-Flat or Flat, ``k_factor`` without a refine stage) are ignored, as
    :func:`geovl.index.store.build_index` ignores them. Per-call parameters leave the index's own fields alone, so
    concurrent searches with different parameters do not interfere.

    Args:
        index: a CPU faiss index as geovl writes it (:func:`geovl.index.store.load_index`).
        sel: a faiss ``IDSelector`` over the index's labels (global ids); the caller keeps it alive.
        nprobe, ef_search, k_factor: ``None`` or 0 keeps the index's own value (the manifest's defaults, set by
            :func:`geovl.index.store.load_index`).

    Returns:
        The parameters (they hold references to the parameter and selector objects they point to; keep them alive
        during the search), or ``None`` where the core index type takes no parameters faiss knows of.
    """
    faiss = faiss_module()
    id_map, refine, core, _ = unwrap_index(index)
    kwargs: dict[str, Any] = {}
    if sel is not None:
        if refine is not None and id_map is not None:  # the base index labels vectors by position in the id map
            translated = faiss.IDSelectorTranslated(id_map.id_map, sel)
            translated.referenced_objects = [sel]
            kwargs["sel"] = translated
        else:
            kwargs["sel"] = sel
    params: Any
    if isinstance(core, faiss.IndexIVF):
        kwargs["nprobe"] = int(min(int(nprobe or core.nprobe), int(core.nlist)))
        quantizer = faiss.downcast_index(core.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            kwargs["quantizer_params"] = faiss.SearchParametersHNSW(
                efSearch=int(ef_search or quantizer.hnsw.efSearch))
        params = faiss.SearchParametersIVF(**kwargs)
    elif isinstance(core, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=int(ef_search or core.hnsw.efSearch), **kwargs)
    elif isinstance(core, faiss.IndexFlatCodes) or refine is not None:
        params = faiss.SearchParameters(**kwargs)
    else:
        return None
    if refine is None:
        return params
    factor = float(k_factor or refine.k_factor)
    if factor < 1:
        raise ValueError(f"k_factor must be >= 1, got {factor}")
    return faiss.IndexRefineSearchParameters(k_factor=factor, base_index_params=params)
