"""Sharded builds of IVF indexes: train once, fill shards anywhere, merge.

Rules: every shard is filled from the one trained, empty index :func:`train_ivf_quantizer` writes, so the shards
share a quantizer (same fingerprint, ``trained_sha256``) and their inverted lists can be merged; shards of
different models, types or trainings are refused, as are overlapping ids. The merged index lives in RAM, or with
``on_disk`` in ``index.ivfdata`` (memory-mapped at search time; removals then record tombstones). Every folder is
written as :mod:`geovl.index.folder` describes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geovl.index.choose import IndexChoice
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
from geovl.index.folder import finish_index_folder, read_deleted, rewrite_index_folder
from geovl.index.manifest import (
    INDEX_FILE,
    IVFDATA_FILE,
    METADATA_FILE,
    EmbeddingFolders,
    IndexManifest,
    check_same_model,
    open_embedding_sets,
    source_records,
)
from geovl.index.metadata import merge_metadata

PathLike = str | os.PathLike[str]


def train_ivf_quantizer(
    embeddings: EmbeddingFolders,
    out_dir: PathLike,
    *,
    factory: str = "auto",
    expected_count: int | None = None,
    memory_budget_bytes: int | None = None,
    train_size: int | None = None,
    seed: int = 0,
    use_gpu: UseGpu = "auto",
    nprobe: int | None = None,
) -> IndexManifest:
    """Step 1 of a sharded build: train an IVF index on a seeded sample and save it, empty, as an index folder.

    Then :func:`build_shard` fills copies of it (on any machine) and :func:`merge_shards` merges the shards.

    Args:
        embeddings: embeddings folder(s) to sample the training vectors from.
        out_dir: the folder for the trained, empty index.
        factory: ``"auto"`` (an IVF type for ``expected_count`` vectors) or an IVF ``index_factory`` string.
        expected_count: vectors the full index will hold (default: those in ``embeddings``).
        memory_budget_bytes, train_size, seed, use_gpu, nprobe: as in :func:`geovl.index.store.build_index`.
    """
    sets = open_embedding_sets(embeddings)
    n, dim = sum(s.count for s in sets), sets[0].dim
    planned = int(expected_count or n)
    choice = choose_for(factory, planned, dim, memory_budget_bytes, ivf_only=True)
    override_params(choice, n, train_size=train_size, seed=seed, nprobe=nprobe, ef_search=None,
                    ef_construction=None)
    choice.params.train_size = min(choice.params.train_size or n, n)
    gpu = resolve_gpu(use_gpu)
    with rewrite_index_folder(Path(out_dir)) as tmp:
        index, fingerprint, gpu_used = fill_index(new_index(choice, dim), choice, sets, gpu=gpu, progress=False,
                                                  add=False)
        manifest = IndexManifest.for_choice(choice, sets, fingerprint=fingerprint, gpu_used=gpu_used)
        manifest.sources = []
        manifest.count_at_training = planned
        merge_metadata([], tmp / METADATA_FILE)
        set_search_defaults(index, manifest)
        faiss_module().write_index(index, str(tmp / INDEX_FILE))
        finish_index_folder(tmp, manifest, np.zeros(0, np.int64), np.zeros(0, np.int64))
    return manifest


def build_shard(trained_dir: PathLike, embeddings: EmbeddingFolders, out_dir: PathLike, *,
                use_gpu: UseGpu = "auto", progress: bool = True) -> IndexManifest:
    """Step 2 of a sharded build: add embeddings to a copy of the trained index from :func:`train_ivf_quantizer`.

    Args:
        trained_dir: the trained, empty index folder.
        embeddings: this shard's embeddings folder(s); ids must not overlap other shards'.
        out_dir: the shard's index folder.
        use_gpu: add on a GPU (``"auto"``: when faiss sees one).
        progress: show a progress bar while adding.
    """
    trained_path = Path(trained_dir)
    trained = IndexManifest.load(trained_path)
    if trained.kind != "ivf" or trained.count or trained.deleted or trained.on_disk:
        raise ValueError(f"{trained_path} is not an empty trained IVF index; create one with train_ivf_quantizer()")
    sets = open_embedding_sets(embeddings)
    for s in sets:
        check_same_model(trained.model, s.model, what=f"trained index {trained_path}")
    gpu = resolve_gpu(use_gpu)
    with rewrite_index_folder(Path(out_dir)) as tmp:
        ids = merge_metadata([p.metadata for s in sets for p in s.partitions], tmp / METADATA_FILE)
        choice = IndexChoice(trained.index_type, trained.kind, trained.params)
        index, _, gpu_used = fill_index(read_faiss(trained_path, trained), choice, sets, gpu=gpu,
                                        progress=progress)
        faiss_module().write_index(index, str(tmp / INDEX_FILE))
        trained.sources = source_records(sets)
        trained.gpu_used = gpu_used
        trained.created = ""
        finish_index_folder(tmp, trained, ids, np.zeros(0, np.int64))
    return trained


def _check_shards(paths: Sequence[Path], manifests: Sequence[IndexManifest]) -> None:
    """``ValueError`` unless every shard is an IVF index of one model, type and trained quantizer."""
    first = manifests[0]
    for p, m in zip(paths, manifests, strict=True):
        check_same_model(first.model, m.model, what=f"shard {paths[0]}")
        if m.kind != "ivf" or m.index_type != first.index_type:
            raise ValueError(f"shards must all be the same IVF type: {paths[0]} is {first.index_type!r}, {p} is "
                             f"{m.index_type!r}")
        if m.trained_sha256 is None or m.trained_sha256 != first.trained_sha256:
            raise ValueError(f"shard {p} was trained separately from {paths[0]} (trained quantizer fingerprints "
                             "differ); build every shard from one train_ivf_quantizer() output")


def _merge_lists(paths: Sequence[Path], manifests: Sequence[IndexManifest], *, on_disk: bool, ivfdata: Path) -> Any:
    """One index holding the inverted lists of every shard: on disk in ``ivfdata``, or merged in RAM."""
    faiss = faiss_module()
    if on_disk:
        parts = [read_faiss(p, m, faiss.IO_FLAG_READ_ONLY | (0 if m.on_disk else faiss.IO_FLAG_MMAP))
                 for p, m in zip(paths, manifests, strict=True)]
        index = empty_trained(paths[0], manifests[0])
        merge_on_disk(index, parts, ivfdata)
        del parts
        return index
    on_disk_shards = [str(p) for p, m in zip(paths, manifests, strict=True) if m.on_disk]
    if on_disk_shards:  # faiss' merge_from empties its source lists: never point it at shared files
        raise ValueError(f"shards {', '.join(on_disk_shards)} are on disk; merge them with on_disk=True")
    index = read_faiss(paths[0], manifests[0])
    ivf = faiss.extract_index_ivf(index)
    for p, m in zip(paths[1:], manifests[1:], strict=True):
        other = read_faiss(p, m)  # keep a reference: the extracted IVF belongs to it
        ivf.merge_from(faiss.extract_index_ivf(other), 0)
        del other
    index.ntotal = ivf.ntotal
    return index


def merge_shards(shard_dirs: Sequence[PathLike], out_dir: PathLike, *, on_disk: bool = False) -> IndexManifest:
    """Step 3 of a sharded build: merge IVF shards built from the same trained index into one index folder.

    Args:
        shard_dirs: shard index folders (from :func:`build_shard`, or any IVF indexes with the same trained
            quantizer, including on-disk ones).
        out_dir: the merged index folder (created or replaced atomically; must not be one of the shards).
        on_disk: write the inverted lists to ``index.ivfdata`` as faiss OnDiskInvertedLists (memory-mapped at
            search time, so the index need not fit in RAM) instead of merging them in RAM.

    Raises:
        ValueError: shards of different models, index types or trained quantizers, or overlapping ids.
    """
    paths = [Path(d) for d in shard_dirs]
    out = Path(out_dir)
    if not paths:
        raise ValueError("no shards given")
    if out.resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"the merged index {out} must not be one of the shards")
    mans = [IndexManifest.load(p) for p in paths]
    _check_shards(paths, mans)
    first = mans[0]
    with rewrite_index_folder(out) as tmp:
        ids = merge_metadata([p / METADATA_FILE for p in paths], tmp / METADATA_FILE)
        tomb = np.unique(np.concatenate([read_deleted(p) for p in paths]))
        index = _merge_lists(paths, mans, on_disk=on_disk, ivfdata=tmp / IVFDATA_FILE)
        faiss_module().write_index(index, str(tmp / INDEX_FILE))
        merged = IndexManifest.from_dict(first.to_dict())
        merged.sources = [s for m in mans for s in m.sources]
        merged.added_since_training = sum(m.added_since_training for m in mans)
        merged.gpu_used = any(m.gpu_used for m in mans)
        merged.on_disk = on_disk
        merged.removal = "tombstones" if on_disk else first.removal
        merged.reason = f"{first.reason}; merged from {len(paths)} shards" + (" on disk" if on_disk else "")
        merged.created = ""
        merged.note_rebuild()
        finish_index_folder(tmp, merged, ids, tomb)
    return merged
