"""Manifests of embedding folders (input) and index folders (output), and the model identity check.

An embeddings folder (written by the embedding pipeline)::

    manifest.json       {"format": "geovl-embeddings", "format_version": 1, "model": {...}, "dim": D, "metric": "ip",
                         "normalized": true, "count": N, "partitions": [{"name": "part-00000", "count": n}, ...],
                         "complete": true, ...}
    part-00000.npy      float32 (n, D), L2-normalised rows
    part-00000.parquet  one metadata row per vector, same order, with an int64 "id" column (global, unique)

An index folder: see :class:`IndexManifest`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from geovl.index.choose import IndexChoice, IndexParams
from geovl.io.fs import atomic_write_json

EMBEDDINGS_FORMAT = "geovl-embeddings"
INDEX_FORMAT = "geovl-index"
INDEX_FORMAT_VERSION = 1
INDEX_MODEL_KEYS = ("name", "architecture", "checkpoint_sha256", "dim")
"""The model fields an index keeps; ``name``, ``checkpoint_sha256`` and ``dim`` must match to add or query."""

INDEX_FILE = "index.faiss"
IVFDATA_FILE = "index.ivfdata"
METADATA_FILE = "metadata.parquet"
DELETED_FILE = "deleted.npy"
VECTORS_FILE = "vectors.npy"
MANIFEST_FILE = "manifest.json"

_PARAM_KEYS = {"hnsw_m": "M", "ef_construction": "efConstruction", "ef_search": "efSearch"}
_PARAM_ATTRS = {v: k for k, v in _PARAM_KEYS.items()}

BUILD_HINT = "build one with `geovl index build EMBEDDINGS_DIR INDEX_DIR`"


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def model_identity(model: Mapping[str, Any]) -> dict[str, Any]:
    """The identity fields of a model record (:data:`INDEX_MODEL_KEYS`), missing ones as ``None``."""
    return {k: model.get(k) for k in INDEX_MODEL_KEYS}


def describe_model(model: Mapping[str, Any]) -> str:
    """``name (sha abcdef123456, 512-d)`` for error messages."""
    sha = model.get("checkpoint_sha256")
    return f"{model.get('name')} (sha {str(sha)[:12] if sha else 'none'}, {model.get('dim')}-d)"


def check_same_model(expected: Mapping[str, Any], got: Mapping[str, Any], *, what: str = "index") -> None:
    """Raise ``ValueError`` unless ``got`` is the same model as ``expected`` (name, checkpoint sha256, dim).

    Args:
        expected: the model record the ``what`` was built with.
        got: the model record of the new embeddings or queries.
        what: the thing built with ``expected``, for the message (``"index"``, ``"shard ..."``).
    """
    if any(expected.get(k) != got.get(k) for k in ("name", "checkpoint_sha256", "dim")):
        raise ValueError(f"{what} was built with model {describe_model(expected)}; got {describe_model(got)}. "
                         "Vectors from different models are not comparable: embed with the same model, or build a "
                         "separate index")


@dataclass(frozen=True)
class EmbeddingPartition:
    """One partition of an embeddings folder: ``count`` vectors in ``vectors`` and their rows in ``metadata``."""

    name: str
    count: int
    vectors: Path
    metadata: Path


@dataclass
class EmbeddingSet:
    """An embeddings folder, validated (see the module docstring for the layout).

    Attributes:
        path: the folder.
        model: the model record from its manifest.
        dim: vector dimension.
        count: vectors in all partitions.
        partitions: the partitions in manifest order.
    """

    path: Path
    model: dict[str, Any]
    dim: int
    count: int
    partitions: list[EmbeddingPartition]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EmbeddingSet:
        """Read and check an embeddings folder's manifest and the shapes of its partition files.

        Raises:
            FileNotFoundError: the folder, its manifest or a partition file is missing.
            ValueError: the manifest is not a complete ``geovl-embeddings`` one, or shapes disagree.
        """
        import numpy as np

        root = Path(path)
        mpath = root / MANIFEST_FILE
        if not mpath.is_file():
            raise FileNotFoundError(f"{root}: not an embeddings folder (no {MANIFEST_FILE}); create one with "
                                    "`geovl embed IMAGES --out EMBEDDINGS_DIR`")
        raw = json.loads(mpath.read_text(encoding="utf-8"))
        if raw.get("format") != EMBEDDINGS_FORMAT:
            raise ValueError(f"{mpath}: format is {raw.get('format')!r}, expected {EMBEDDINGS_FORMAT!r}")
        if not raw.get("complete", False):
            raise ValueError(f"{root}: the embedding run is incomplete (complete: false); finish or rerun it first")
        if raw.get("metric", "ip") != "ip" or not raw.get("normalized", False):
            raise ValueError(f"{root}: geovl indexes need L2-normalised vectors for inner product (cosine); the "
                             f"manifest says metric={raw.get('metric')!r}, normalized={raw.get('normalized')!r}")
        dim = int(raw["dim"])
        model = dict(raw.get("model") or {})
        if model.get("dim") is not None and int(model["dim"]) != dim:
            raise ValueError(f"{mpath}: model dim {model['dim']} != dim {dim}")
        model.setdefault("dim", dim)
        parts: list[EmbeddingPartition] = []
        for p in raw.get("partitions", []):
            part = EmbeddingPartition(p["name"], int(p["count"]), root / f"{p['name']}.npy",
                                      root / f"{p['name']}.parquet")
            for f in (part.vectors, part.metadata):
                if not f.is_file():
                    raise FileNotFoundError(f"{f}: partition file listed in {mpath} is missing; rerun the embedding")
            shape = np.load(part.vectors, mmap_mode="r").shape
            if shape != (part.count, dim):
                raise ValueError(f"{part.vectors}: shape {shape}, manifest says ({part.count}, {dim})")
            parts.append(part)
        count = sum(p.count for p in parts)
        if int(raw.get("count", count)) != count:
            raise ValueError(f"{mpath}: count {raw['count']} != sum of partition counts {count}")
        return cls(root, model, dim, count, parts)


EmbeddingFolders = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""One embeddings folder or several (of one model)."""


def open_embedding_sets(embeddings: EmbeddingFolders) -> list[EmbeddingSet]:
    """Open embeddings folders that go into one index (:meth:`EmbeddingSet.open`).

    Raises:
        ValueError: no folders, one given twice, or folders of different models or dimensions.
    """
    paths = [embeddings] if isinstance(embeddings, (str, os.PathLike)) else list(embeddings)
    if not paths:
        raise ValueError("no embeddings folders given")
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ValueError("the same embeddings folder is given twice")
    sets = [EmbeddingSet.open(p) for p in paths]
    first = sets[0]
    for s in sets[1:]:
        if model_identity(s.model) != model_identity(first.model) or s.dim != first.dim:
            raise ValueError(f"cannot mix embeddings of different models: {first.path} has "
                             f"{describe_model(first.model)}, {s.path} has {describe_model(s.model)}")
    return sets


@dataclass
class SourceRecord:
    """An embeddings folder that went into the index: its path, vectors taken and when."""

    path: str
    count: int
    added: str


def source_records(sets: Sequence[EmbeddingSet]) -> list[SourceRecord]:
    """The manifest's records of embeddings folders added now."""
    now = utc_now()
    return [SourceRecord(str(s.path.resolve()), s.count, now) for s in sets]


@dataclass
class IndexManifest:
    """``manifest.json`` of an index folder. The folder holds::

        manifest.json     this record
        index.faiss       the faiss index; its labels are the global ids of the metadata
        index.ivfdata     (on-disk indexes only) the inverted lists, memory-mapped
        metadata.parquet  one row per vector in index.faiss (tombstoned ones included), sorted by "id"
        deleted.npy       (only with tombstones) sorted int64 ids still in index.faiss and metadata.parquet that
                          searches must skip
        vectors.npy       (only with ``params.rerank``) float32 vectors, one row per metadata row, memory-mapped to
                          re-rank ANN candidates exactly (:mod:`geovl.index.rerank`)

    Attributes:
        model: the embedding model's record from the embeddings manifest; its identity (name, architecture,
            checkpoint_sha256, dim) is always present, and name + checkpoint_sha256 + dim must match to add or query.
        dim: vector dimension.
        index_type: the faiss ``index_factory`` string (without the ``IDMap2`` wrapper).
        kind: ``"flat"``, ``"hnsw"``, ``"ivf"`` or ``"other"``.
        id_map: whether ``index.faiss`` is wrapped in ``IndexIDMap2`` (types that do not store ids).
        removal: ``"remove_ids"`` (vectors are deleted from the index) or ``"tombstones"`` (ids in deleted.npy).
        count: live vectors (searchable).
        deleted: tombstoned vectors still stored in ``index.faiss`` and ``metadata.parquet``.
        params: build and default search parameters; in JSON ``nlist``, ``nprobe``, ``M``, ``efConstruction``,
            ``efSearch``, ``train_size``, ``seed``, ``k_factor``, ``rerank``.
        sources: embeddings folders added, in order.
        id_min, id_max: range of live ids (``None`` when empty).
        memory_bytes: estimated RAM of the index when loaded without mmap, in bytes.
        gpu_used: whether training/adding ran on a GPU.
        on_disk: whether the inverted lists live in ``index.ivfdata`` (merged on disk).
        trained_sha256: fingerprint of the trained, empty index; shards merge only when it matches.
        count_at_training: vectors in the index right after the build that trained it.
        added_since_training: vectors added afterwards with ``add_to_index``/``merge_shards``.
        reason: why this index type was chosen.
        notes: advice gathered along the way (e.g. "consider rebuild").
        expected: recall and latency measured at build time on a sample of the collection
            (:func:`geovl.index.calibrate.calibrate`): ``{"queries", "k", "target", "recall_at_k", "p50_ms",
            "p99_ms", "nprobe" or "efSearch", "sweep", "measured"}``; empty when not measured.
        captions: metadata columns that hold generated captions (:func:`geovl.index.captions.attach_captions`), each
            with where its captions came from: ``{column: {"run", "model", "decoding", "attached", "matched"}}``.
    """

    model: dict[str, Any]
    dim: int
    index_type: str
    kind: str
    id_map: bool
    removal: str
    count: int = 0
    deleted: int = 0
    metric: str = "ip"
    normalized: bool = True
    params: IndexParams = field(default_factory=IndexParams)
    sources: list[SourceRecord] = field(default_factory=list)
    id_min: int | None = None
    id_max: int | None = None
    memory_bytes: int = 0
    gpu_used: bool = False
    on_disk: bool = False
    trained_sha256: str | None = None
    count_at_training: int = 0
    added_since_training: int = 0
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    expected: dict[str, Any] = field(default_factory=dict)
    captions: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str | None] = field(default_factory=dict)
    geovl_version: str = ""
    created: str = ""
    updated: str = ""
    format: str = INDEX_FORMAT
    format_version: int = INDEX_FORMAT_VERSION

    @classmethod
    def for_choice(cls, choice: IndexChoice, sets: Sequence[EmbeddingSet], *, fingerprint: str | None,
                   gpu_used: bool) -> IndexManifest:
        """The manifest of a new index of type ``choice`` over ``sets`` (counts and files are filled on writing).

        Types faiss stores without ids (all but IVF) are wrapped in ``IndexIDMap2``; HNSW and other types faiss
        cannot remove from record removals as tombstones.
        """
        return cls(
            model={**sets[0].model, **model_identity(sets[0].model)}, dim=sets[0].dim, index_type=choice.factory,
            kind=choice.kind, id_map=choice.kind != "ivf",
            removal="tombstones" if choice.kind in ("hnsw", "other") else "remove_ids",
            params=choice.params, sources=source_records(sets), gpu_used=gpu_used, trained_sha256=fingerprint,
            reason=choice.reason,
        )

    def note_rebuild(self) -> None:
        """Refresh the "consider rebuild" note: an IVF index with more vectors added since training than it was
        trained for gets one (a rebuild re-centres the lists on the current data)."""
        self.notes = [n for n in self.notes if not n.startswith("consider rebuild")]
        if self.kind == "ivf" and self.added_since_training > self.count_at_training:
            self.notes.append(
                f"consider rebuild: {self.added_since_training:,} vectors were added after the IVF quantizer was "
                f"trained for {self.count_at_training:,} (sample of {self.params.train_size:,}); a rebuild "
                "re-centres the lists on the current data")

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (``params`` keys as faiss names them: ``M``, ``efSearch``, ...)."""
        data = dataclasses.asdict(self)
        data["params"] = {_PARAM_KEYS.get(k, k): v for k, v in data["params"].items()}
        return data

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> IndexManifest:
        """Parse a manifest dict; unknown keys (from newer minor versions) are ignored."""
        if raw.get("format") != INDEX_FORMAT:
            raise ValueError(f"not a geovl index manifest (format {raw.get('format')!r}, expected {INDEX_FORMAT!r})")
        if int(raw.get("format_version", 0)) > INDEX_FORMAT_VERSION:
            raise ValueError(f"index format_version {raw['format_version']} is newer than this geovl supports "
                             f"({INDEX_FORMAT_VERSION}); upgrade geovl")
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in raw.items() if k in names}
        attrs = {_PARAM_ATTRS.get(k, k): v for k, v in dict(raw.get("params") or {}).items()}
        data["params"] = IndexParams(**{k: v for k, v in attrs.items()
                                        if k in {f.name for f in dataclasses.fields(IndexParams)}})
        data["sources"] = [SourceRecord(**s) for s in raw.get("sources", [])]
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"index manifest is missing {', '.join(repr(m) for m in missing)}; {BUILD_HINT}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IndexManifest:
        """Read ``manifest.json`` from an index folder (or the file itself).

        Raises:
            FileNotFoundError: no manifest there, with the command that builds one.
        """
        p = Path(path)
        mpath = p if p.suffix == ".json" else p / MANIFEST_FILE
        if not mpath.is_file():
            raise FileNotFoundError(f"no geovl index at {mpath.parent} (missing {MANIFEST_FILE}); {BUILD_HINT}")
        return cls.from_dict(json.loads(mpath.read_text(encoding="utf-8")))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest atomically (temporary file, fsync, rename) into a folder (or to a ``.json`` path)."""
        p = Path(path)
        mpath = p if p.suffix == ".json" else p / MANIFEST_FILE
        atomic_write_json(mpath, self.to_dict())
        return mpath

    def check_model(self, model: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` ("index was built with model X (sha ...); got Y ...") unless ``model`` matches."""
        check_same_model(self.model, model)
