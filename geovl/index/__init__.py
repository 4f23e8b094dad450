"""Embedding collections and searching them.

* Embedding pipeline: :func:`run_embed` (reader -> decode/preprocess in workers -> model -> partitioned writer,
  resumable), sources in :mod:`geovl.index.sources`, a Ray runner in :mod:`geovl.index.ray_runner`, and the
  in-memory :func:`embed_images` / :func:`embed_sources`.
* Index life cycle: :func:`build_index`, :func:`add_to_index`, :func:`remove_from_index`, :func:`load_index`,
  the shard workflow (:func:`train_ivf_quantizer`, :func:`build_shard`, :func:`merge_shards`), and
  :func:`choose_index`.
* Search: :class:`Searcher` with :class:`Filters` (bbox, time range, metadata conditions).

Submodules are imported on first use, so ``import geovl.index`` does not load faiss or pyarrow.
"""

from __future__ import annotations

from geovl._lazy import lazy_getattr

_EXPORTS = {
    "EmbedResult": "geovl.index.embed",
    "embed_images": "geovl.index.embed",
    "embed_sources": "geovl.index.embed",
    "list_images": "geovl.index.embed",
    "EmbedConfig": "geovl.index.pipeline",
    "run_embed": "geovl.index.pipeline",
    "read_embeddings": "geovl.index.pipeline",
    "FolderSource": "geovl.index.sources",
    "SceneSource": "geovl.index.sources",
    "DatasetSource": "geovl.index.sources",
    "sources_for": "geovl.index.sources",
    "build_index": "geovl.index.store",
    "add_to_index": "geovl.index.store",
    "remove_from_index": "geovl.index.store",
    "load_index": "geovl.index.store",
    "LoadedIndex": "geovl.index.store",
    "train_ivf_quantizer": "geovl.index.store",
    "build_shard": "geovl.index.store",
    "merge_shards": "geovl.index.store",
    "IndexManifest": "geovl.index.manifest",
    "choose_index": "geovl.index.choose",
    "Searcher": "geovl.index.search",
    "Hit": "geovl.index.search",
    "Filters": "geovl.index.filters",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
