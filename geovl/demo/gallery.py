"""The demo's gallery: image collections embedded and indexed once, cached under ``$GEOVL_HOME/demo``, reused.

A gallery is a list of collections (image folders, caption datasets such as UCM-Captions' ``dataset.json``, ImageFolder
trees, GeoTIFF scenes). Its cache key is a fingerprint of the model's identity (name and weights sha256) and of every
input file (path, size, modification time), so the cache is rebuilt exactly when the images or the model change.
The embedding run is the resumable ``geovl embed`` pipeline: a start that is killed half-way resumes where it
stopped, and the index folder is swapped in only when complete.

Without any collection, the default gallery is the real images of ``../shared/data`` (UCM, the RSICD sample,
EuroSAT) when that folder exists, else synthetic scenes generated once into the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geovl.data.sources import Source, sources_for
from geovl.io.fs import atomic_write_json, file_lock
from geovl.models.backbone import Backbone
from geovl.models.record import model_record
from geovl.models.weights import geovl_home

__all__ = [
    "GALLERY_FILE",
    "SYNTHETIC_TILES",
    "Gallery",
    "default_collections",
    "gallery_key",
    "open_gallery",
    "shared_data_dir",
    "synthetic_collection",
]

logger = logging.getLogger(__name__)

#: The file that marks a finished cache entry (written last, atomically).
GALLERY_FILE = "gallery.json"
#: Synthetic scenes generated when no real images are available.
SYNTHETIC_TILES = 600

#: The real collections of ``../shared/data`` used by default, as (relative path, dataset format).
SHARED_COLLECTIONS: tuple[tuple[str, str], ...] = (
    ("ucm_captions/dataset.json", "karpathy"),
    ("rsicd_train/dataset.json", "karpathy"),
    ("eurosat_rgb", "imagefolder"),
)


@dataclass
class Gallery:
    """An embedded, indexed collection ready to search.

    Attributes:
        key: the cache key (model + inputs fingerprint).
        index_dir: the index folder searched.
        embeddings_dirs: the embeddings folders it was built from ("more like this" reads their vectors).
        collections: what it was built from (paths as given).
        count: images indexed.
        failed: inputs that could not be read (recorded in the embeddings folder, never fatal).
        built: whether this call embedded anything (False: reused from the cache).
        seconds: time to prepare it (listing, embedding, indexing).
    """

    key: str
    index_dir: Path
    embeddings_dirs: list[Path]
    collections: list[str]
    count: int
    failed: int
    built: bool
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_index(cls, index_dir: str | os.PathLike[str]) -> Gallery:
        """A gallery over an existing ``geovl index`` folder (built with the same model as the demo's)."""
        from geovl.index.manifest import IndexManifest

        folder = Path(index_dir)
        manifest = IndexManifest.load(folder)
        sources = [Path(s.path) for s in manifest.sources]
        return cls(key=f"index:{folder.resolve()}", index_dir=folder, embeddings_dirs=sources,
                   collections=[str(s) for s in sources], count=manifest.count, failed=0, built=False, seconds=0.0)


def shared_data_dir() -> Path | None:
    """``$GEOVL_SHARED_DATA``, else ``../shared/data`` from the working folder or from the source checkout."""
    candidates = [os.environ.get("GEOVL_SHARED_DATA"), Path.cwd().parent / "shared" / "data",
                  Path(__file__).resolve().parents[3] / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def default_collections(shared: Path | None = None) -> list[str]:
    """The real collections of the shared data folder that exist (as ``format:path`` strings), or []."""
    shared = shared if shared is not None else shared_data_dir()
    if shared is None:
        return []
    return [f"{fmt}:{shared / rel}" for rel, fmt in SHARED_COLLECTIONS if (shared / rel).exists()]


def synthetic_collection(home: Path | None = None, n: int = SYNTHETIC_TILES, progress: bool = True) -> str:
    """Synthetic captioned scenes (15 land-cover classes, 128 px), written once under ``<home>/demo/synthetic``;
    returns the collection string of their ``dataset.json``. A killed run resumes."""
    from geovl.data.synthetic import SceneConfig, write_caption_dataset

    out = (home or geovl_home()) / "demo" / f"synthetic-{n}"
    done = out / "dataset.json"
    if not done.is_file():
        logger.info("generating %d synthetic scenes into %s", n, out)
        write_caption_dataset(out, n=n, seed=0, config=SceneConfig(size=128), progress=progress)
    return f"karpathy:{done}"


def _split(collection: str) -> tuple[str | None, Path]:
    fmt, sep, rest = collection.partition(":")
    if sep and fmt.isidentifier() and not Path(collection).exists():
        return fmt, Path(rest)
    return None, Path(collection)


_DATASET_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".tar")


def _tree_stats(root: Path) -> list[str]:
    """``path, size, mtime`` of every file under ``root`` (one ``scandir`` walk: fast enough to run on every start)."""
    out: list[str] = []
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                elif not entry.name.startswith("."):
                    st = entry.stat()
                    out.append(f"{entry.path}\t{st.st_size}\t{st.st_mtime_ns}")
    return sorted(out)


def gallery_key(backbone: Backbone, collections: Sequence[str]) -> str:
    """sha256 of the model's identity and of every file's path, size and modification time under each collection's
    folder (a dataset file's own folder).

    Raises:
        FileNotFoundError: a collection that does not exist.
    """
    record = model_record(backbone)
    digest = hashlib.sha256(json.dumps({k: record.get(k) for k in ("name", "architecture", "checkpoint_sha256",
                                                                    "dim")}, sort_keys=True).encode())
    for collection in collections:
        fmt, path = _split(collection)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such image folder or dataset file")
        digest.update(f"{fmt}:{path.resolve()}\n".encode())
        if path.is_dir() or fmt or path.suffix.lower() in _DATASET_SUFFIXES:  # a dataset's images sit beside it
            stats = _tree_stats((path if path.is_dir() else path.parent).resolve())
        else:  # one image or GeoTIFF scene
            st = path.stat()
            stats = [f"{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}"]
        digest.update("\n".join(stats).encode())
    return digest.hexdigest()


def _sources(collections: Sequence[str]) -> list[Source]:
    sources: list[Source] = []
    for collection in collections:
        fmt, path = _split(collection)
        sources += sources_for([path], dataset_format=fmt)
    return sources


def open_gallery(
    backbone: Backbone,
    collections: Sequence[str],
    *,
    cache_root: Path | None = None,
    progress: bool = True,
    batch_size: int = 64,
) -> Gallery:
    """Embed and index ``collections`` with ``backbone``, or reuse the cached result of an earlier start.

    Args:
        backbone: the model (the same one the demo answers queries with).
        collections: image folders, GeoTIFF scenes or dataset files; ``format:path`` forces a dataset format
            (``karpathy:data/dataset.json``, ``imagefolder:data/eurosat``).
        cache_root: where caches live (default ``$GEOVL_HOME/demo/cache``).
        progress: show progress bars while embedding.
        batch_size: images per forward pass.

    Raises:
        ValueError: no collections, or nothing readable in them.
        FileNotFoundError: a collection that does not exist.
    """
    from geovl.index.pipeline import EmbedConfig, run_embed
    from geovl.index.store import build_index

    if not collections:
        raise ValueError("the gallery is empty: give image folders or dataset files")
    start = time.perf_counter()
    key = gallery_key(backbone, collections)
    root = (cache_root or geovl_home() / "demo" / "cache") / key[:16]
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".lock"):  # two demos starting at once build the cache once
        marker = root / GALLERY_FILE
        if marker.is_file():
            info = json.loads(marker.read_text(encoding="utf-8"))
            if info.get("key") == key:
                return Gallery(key=key, index_dir=root / "index", embeddings_dirs=[root / "embeddings"],
                               collections=list(collections), count=info["count"], failed=info["failed"],
                               built=False, seconds=time.perf_counter() - start, info=info)
        summary = run_embed(backbone, _sources(collections), root / "embeddings",
                            EmbedConfig(batch_size=batch_size, progress=progress))
        count = summary.embedded + summary.resumed
        if summary.total == 0:
            raise ValueError(f"no images found in {', '.join(collections)}")
        if count == 0:
            raise ValueError(f"none of the {summary.total} images in {', '.join(collections)} could be read")
        build_index(root / "embeddings", root / "index", progress=progress)
        info = {"key": key, "collections": list(collections), "count": count, "failed": summary.failed,
                "model": model_record(backbone).get("name"), "built_seconds": round(time.perf_counter() - start, 2)}
        atomic_write_json(marker, info)
    return Gallery(key=key, index_dir=root / "index", embeddings_dirs=[root / "embeddings"],
                   collections=list(collections), count=count, failed=summary.failed, built=True,
                   seconds=time.perf_counter() - start, info=info)


def load_vectors(gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, vectors)`` of every embedded image, for "more like this" (vectors L2-normalised, ids sorted)."""
    from geovl.index.pipeline import read_embeddings

    all_ids, all_vectors = [], []
    for folder in gallery.embeddings_dirs:
        if not folder.is_dir():
            continue  # "more like this" then says the image is unknown; search itself does not need them
        vectors, table, _ = read_embeddings(folder, with_metadata=True)
        all_ids.append(np.asarray(table.column("id").to_numpy(), np.int64))
        all_vectors.append(vectors)
    if not all_ids:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    ids, vectors = np.concatenate(all_ids), np.concatenate(all_vectors)
    order = np.argsort(ids, kind="stable")
    return ids[order], np.ascontiguousarray(vectors[order], np.float32)
