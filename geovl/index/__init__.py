"""Embedding collections and searching them.

* Embedding pipeline: :func:`run_embed` (reader -> decode/preprocess in workers -> model -> partitioned writer,
  resumable) over the sources of :mod:`geovl.data.sources`, decoded by :mod:`geovl.tasks.embedding`, and a Ray
  runner in :mod:`geovl.index.ray_runner`.
* Index life cycle (:mod:`geovl.index.store`): :func:`build_index`, :func:`add_to_index`,
  :func:`remove_from_index`, :func:`load_index`; the shard workflow (:mod:`geovl.index.sharded`:
  :func:`train_ivf_quantizer`, :func:`build_shard`, :func:`merge_shards`); :func:`choose_index`. Beneath them:
  folder writes (:mod:`geovl.index.folder`), manifests (:mod:`geovl.index.manifest`), metadata parquet
  (:mod:`geovl.index.metadata`) and faiss operations (:mod:`geovl.index.faiss_ops`).
* Search: :class:`Searcher` with :class:`Filters` (bbox, time range, metadata conditions), over a
  :class:`LoadedIndex`.

Submodules are imported on first use, so ``import geovl.index`` does not load faiss or pyarrow.
"""

from __future__ import annotations

from geovl._lazy import lazy_getattr

_EXPORTS = {
    "EmbedConfig": "geovl.index.pipeline",
    "run_embed": "geovl.index.pipeline",
    "read_embeddings": "geovl.index.pipeline",
    "build_index": "geovl.index.store",
    "add_to_index": "geovl.index.store",
    "remove_from_index": "geovl.index.store",
    "load_index": "geovl.index.store",
    "LoadedIndex": "geovl.index.loaded",
    "train_ivf_quantizer": "geovl.index.sharded",
    "build_shard": "geovl.index.sharded",
    "merge_shards": "geovl.index.sharded",
    "IndexManifest": "geovl.index.manifest",
    "choose_index": "geovl.index.choose",
    "Searcher": "geovl.index.search",
    "Hit": "geovl.index.search",
    "Filters": "geovl.index.filters",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
