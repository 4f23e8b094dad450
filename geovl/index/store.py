"""The FAISS index life cycle: build, add, remove, load, and the sharded train -> build shards -> merge workflow.

Every write is copy-on-write: the new index is written into a temporary sibling folder
(``.NAME.tmp-PID-XXXX``) and swapped in at the end (an atomic ``renameat2(RENAME_EXCHANGE)`` on Linux, else
rename the old folder aside, rename the new one in, delete the old). A crash or kill at any point leaves the
previous index (or none) in place, never a half-written one; leftovers are cleaned up, and an index left renamed
aside is restored, by the next writer. Writers of one index folder are serialised with an advisory lock file
``.NAME.lock`` next to it.

The index folder layout is described in :class:`geovl.index.manifest.IndexManifest`. Vectors keep their global
ids (the ``id`` column of the metadata): IVF indexes store them in the inverted lists, other types are wrapped in
``IndexIDMap2``. HNSW (and other types faiss cannot remove from) record removals as tombstones in ``deleted.npy``.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import json
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geovl._optional import require
from geovl.index.choose import IndexChoice, choose_index, describe_factory, estimate_memory
from geovl.index.manifest import (
    BUILD_HINT,
    DELETED_FILE,
    INDEX_FILE,
    INDEX_FORMAT,
    IVFDATA_FILE,
    MANIFEST_FILE,
    METADATA_FILE,
    EmbeddingSet,
    IndexManifest,
    SourceRecord,
    check_same_model,
    describe_model,
    model_identity,
    utc_now,
)

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Embeddings = PathLike | Sequence[PathLike]
UseGpu = bool | Literal["auto"]

ADD_CHUNK_BYTES = 64 * 2**20
"""Vectors are copied out of the memory-mapped partitions and added in chunks of this many bytes."""


def _faiss() -> Any:
    return require("faiss", "index", "building and searching faiss indexes")


def _pq() -> Any:
    return require("pyarrow.parquet", "index", "reading and writing index metadata")


# ----------------------------------------------------------------------------------------------- atomic folders


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; ``False`` where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return int(fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)) == 0


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def _siblings(out: Path, kind: str) -> list[Path]:
    """Leftover ``.NAME.tmp-*`` or ``.NAME.old-*`` folders of ``out``, oldest first."""
    found = [Path(p) for p in glob.glob(str(out.parent / f".{glob.escape(out.name)}.{kind}-*"))]
    return sorted((p for p in found if p.is_dir()), key=lambda p: p.stat().st_mtime)


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``.NAME.lock`` next to ``out`` (no-op where ``fcntl`` is missing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: concurrent writers are not supported there
        yield
        return
    with open(out.parent / f".{out.name}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _recover(out: Path) -> None:
    """Undo what an interrupted writer left (call with the lock held: every leftover is then stale)."""
    olds = _siblings(out, "old")
    if not out.exists() and olds:
        logger.warning("restoring %s from %s (a previous write was interrupted while swapping folders)", out, olds[-1])
        os.rename(olds.pop(), out)
    for d in _siblings(out, "tmp") + olds:
        logger.info("removing %s left by an interrupted index write", d)
        shutil.rmtree(d, ignore_errors=True)


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another index folder")
    mpath = out / MANIFEST_FILE
    if mpath.is_file():
        try:
            fmt = json.loads(mpath.read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError):
            fmt = None
        if fmt == INDEX_FORMAT:
            return
    if any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a geovl index folder; refusing to replace it")


def _swap_in(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous index
    else:
        old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            if not out.exists():
                os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out.parent)


class _Unchanged(Exception):
    """Raised inside :func:`_rewrite` to drop the temporary folder and keep the index as it is."""


@contextmanager
def _rewrite(out: Path) -> Iterator[Path]:
    """Lock ``out``, recover from interrupted writers, and yield an empty temporary sibling folder.

    When the block completes, the folder's files are fsynced and it replaces ``out`` atomically. On any error
    (including KeyboardInterrupt) it is deleted and ``out`` is untouched.
    """
    if out.is_symlink():  # replace the folder it points to and keep the link
        out = out.resolve()
    with _locked(out):
        _recover(out)
        _check_replaceable(out)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            yield tmp
            _fsync_tree(tmp)
            _swap_in(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (files are never modified in place, so versions can share them), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ----------------------------------------------------------------------------------------------- metadata


def _parquet_ids(path: Path) -> np.ndarray:
    """The ``id`` column of a metadata parquet file as int64 (in file order)."""
    pq = _pq()
    if "id" not in pq.read_schema(path).names:
        raise ValueError(f"{path}: metadata has no 'id' column")
    col = pq.read_table(path, columns=["id"]).column("id")
    if col.null_count:
        raise ValueError(f"{path}: {col.null_count} rows have a null id")
    return np.asarray(col.to_numpy(), dtype=np.int64)


def _few(ids: np.ndarray, n: int = 5) -> str:
    head = ", ".join(str(int(i)) for i in ids[:n])
    return head + (f", ... ({ids.size} in all)" if ids.size > n else "")


def _unified_schema(paths: Sequence[Path]) -> Any:
    import pyarrow as pa

    pq = _pq()
    if not paths:
        return pa.schema([pa.field("id", pa.int64())])
    schemas = [pq.read_schema(p) for p in paths]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"metadata columns of {', '.join(map(str, paths))} have incompatible types: {exc}") from exc
    schema = schema.set(schema.get_field_index("id"), pa.field("id", pa.int64()))
    meta: dict[bytes, bytes] = {}
    for s in schemas:  # keep GeoParquet's "geo" key (minus per-column bboxes, which the merge invalidates)
        if s.metadata and b"geo" in s.metadata:
            geo = json.loads(s.metadata[b"geo"])
            for col in geo.get("columns", {}).values():
                col.pop("bbox", None)
            meta[b"geo"] = json.dumps(geo).encode()
            break
    return schema.with_metadata(meta or None)


def _conform(table: Any, schema: Any) -> Any:
    import pyarrow as pa

    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _drop_rows(table: Any, drop: np.ndarray | None) -> Any:
    if drop is None or drop.size == 0:
        return table
    import pyarrow as pa
    import pyarrow.compute as pc

    return table.filter(pc.invert(pc.is_in(table.column("id"), value_set=pa.array(drop))))


def _merge_metadata(inputs: Sequence[Path], out: Path, *, drop: np.ndarray | None = None) -> np.ndarray:
    """Write the rows of ``inputs`` (minus ids in ``drop``) to ``out``, sorted by id; return the sorted ids.

    Files are streamed one at a time (already sorted files in batches) when their id ranges do not interleave;
    interleaving ranges (e.g. added ids filling gaps) are sorted in memory.

    Raises:
        ValueError: an id appears twice, or a file lacks the ``id`` column.
    """
    import pyarrow as pa

    pq = _pq()
    ids_per = [_parquet_ids(p) for p in inputs]
    kept = [ids if drop is None else ids[~np.isin(ids, drop)] for ids in ids_per]
    all_ids = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
    dup = np.unique(all_ids[1:][all_ids[1:] == all_ids[:-1]])
    if dup.size:
        where = [str(p) for p, ids in zip(inputs, ids_per, strict=True) if np.isin(dup[0], ids)]
        raise ValueError(f"duplicate ids in the metadata: {_few(dup)} (id {int(dup[0])} is in {', '.join(where)}); "
                         "ids must be unique across all embeddings folders")
    schema = _unified_schema(inputs)
    order = sorted((i for i in range(len(inputs)) if kept[i].size), key=lambda i: int(kept[i].min()))
    spans = [(int(kept[i].min()), int(kept[i].max())) for i in order]
    interleaved = any(spans[j + 1][0] <= spans[j][1] for j in range(len(spans) - 1))
    batch_rows = 65_536
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        if not order:
            writer.write_table(schema.empty_table())
        elif interleaved:
            logger.info("metadata id ranges interleave: sorting %d rows in memory", all_ids.size)
            table = pa.concat_tables([_conform(_drop_rows(pq.read_table(inputs[i]), drop), schema) for i in order])
            writer.write_table(table.sort_by("id"), row_group_size=batch_rows)
        else:
            for i in order:
                ids = ids_per[i]
                if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):  # already sorted: stream it
                    for batch in pq.ParquetFile(inputs[i]).iter_batches(batch_size=batch_rows):
                        writer.write_table(_conform(_drop_rows(pa.Table.from_batches([batch]), drop), schema))
                else:
                    table = _drop_rows(pq.read_table(inputs[i]), drop).sort_by("id")
                    writer.write_table(_conform(table, schema), row_group_size=batch_rows)
    return all_ids


# ----------------------------------------------------------------------------------------------- faiss helpers


def _open_sets(embeddings: Embeddings) -> list[EmbeddingSet]:
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


def _resolve_gpu(use_gpu: UseGpu) -> bool:
    if use_gpu == "auto":
        faiss = _faiss()
        return bool(faiss.get_num_gpus() > 0)
    if use_gpu:
        faiss = _faiss()
        if faiss.get_num_gpus() < 1:
            raise RuntimeError("use_gpu=True but faiss sees no GPU; install faiss with GPU support "
                               "(pip install 'geovl[gpu]') or pass use_gpu='auto'")
        return True
    return False


def _choice(factory: str, n: int, dim: int, budget: int | None, *, ivf_only: bool = False) -> IndexChoice:
    if factory == "auto":
        return choose_index(n, dim, budget, ivf_only=ivf_only)
    choice = describe_factory(factory, n, dim)
    if ivf_only and choice.kind != "ivf":
        raise ValueError(f"sharded builds need an IVF index (they merge inverted lists); {factory!r} is "
                         f"{choice.kind}. Use e.g. 'IVF1024,Flat'")
    return choice


def _new_index(choice: IndexChoice, dim: int) -> Any:
    faiss = _faiss()
    index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
    if choice.kind != "ivf":
        index = faiss.index_factory(dim, "IDMap2," + choice.factory, faiss.METRIC_INNER_PRODUCT)
    hnsw = _hnsw_of(index)
    if hnsw is not None and choice.params.ef_construction:
        hnsw.efConstruction = int(choice.params.ef_construction)
    ivf = _unwrap(index)[2]  # the IVF index under any IDMap2 / pre-transform / refine wrapper
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
    faiss = _faiss()
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return inner.hnsw if isinstance(inner, faiss.IndexHNSW) else None


def _set_search_defaults(index: Any, manifest: IndexManifest) -> None:
    """Store the manifest's default nprobe / efSearch / refine k_factor in the index (faiss serialises them)."""
    faiss = _faiss()
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
    faiss = _faiss()
    return hashlib.sha256(faiss.serialize_index(index).tobytes()).hexdigest()


def _sample(sets: Sequence[EmbeddingSet], size: int, seed: int) -> np.ndarray:
    """``size`` vectors drawn uniformly without replacement across all partitions (seeded), as (size, D) float32."""
    total = sum(s.count for s in sets)
    pos = np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))
    out = np.empty((size, sets[0].dim), np.float32)
    filled = offset = 0
    for s in sets:
        for part in s.partitions:
            sel = pos[(pos >= offset) & (pos < offset + part.count)] - offset
            if sel.size:
                out[filled:filled + sel.size] = np.load(part.vectors, mmap_mode="r")[sel]
                filled += sel.size
            offset += part.count
    return out


def _add_sets(index: Any, sets: Sequence[EmbeddingSet], *, progress: bool) -> int:
    """Add every partition with its global ids, one memory-mapped chunk at a time; return vectors added."""
    from tqdm.auto import tqdm

    total = sum(s.count for s in sets)
    added = 0
    with tqdm(total=total, unit="vec", desc="index add", disable=not progress, dynamic_ncols=True) as bar:
        for s in sets:
            chunk = max(1024, ADD_CHUNK_BYTES // (4 * s.dim))
            for part in s.partitions:
                ids = _parquet_ids(part.metadata)
                if ids.size != part.count:
                    raise ValueError(f"{part.metadata}: {ids.size} metadata rows for {part.count} vectors")
                vecs = np.load(part.vectors, mmap_mode="r")
                for start in range(0, part.count, chunk):
                    x = np.ascontiguousarray(vecs[start:start + chunk], dtype=np.float32)
                    index.add_with_ids(x, np.ascontiguousarray(ids[start:start + chunk]))
                    bar.update(x.shape[0])
                    added += x.shape[0]
    return added


def _fill(index: Any, choice: IndexChoice, sets: Sequence[EmbeddingSet], *, gpu: bool, progress: bool,
          add: bool = True) -> tuple[Any, str | None, bool]:
    """Train ``index`` if needed (on a seeded sample of ``sets``) and add ``sets`` (when ``add``).

    With ``gpu``, IVF indexes are trained and filled on GPU 0 and copied back to the CPU; types the GPU cloner
    does not support fall back to the CPU with a logged warning.

    Returns:
        ``(cpu_index, fingerprint of the trained empty index or None, whether a GPU was used)``.
    """
    faiss = _faiss()
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
        work.train(_sample(sets, p.train_size, p.seed))
        fingerprint = _fingerprint(faiss.index_gpu_to_cpu(work) if work is not index else work)
    if add:
        _add_sets(work, sets, progress=progress)
    used_gpu = work is not index
    if used_gpu:
        index = faiss.index_gpu_to_cpu(work)
    del work, resources  # the GPU index before the resources it uses
    return index, fingerprint, used_gpu


def _read_faiss(index_dir: Path, manifest: IndexManifest, flags: int = 0) -> Any:
    faiss = _faiss()
    path = index_dir / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the index folder is incomplete); {BUILD_HINT}")
    if manifest.on_disk:
        flags |= faiss.IO_FLAG_ONDISK_SAME_DIR
    return faiss.read_index(str(path), flags)


def _read_deleted(index_dir: Path) -> np.ndarray:
    path = index_dir / DELETED_FILE
    return np.load(path).astype(np.int64) if path.is_file() else np.zeros(0, np.int64)


def _empty_trained(index_dir: Path, manifest: IndexManifest) -> Any:
    """A trained, empty copy of an IVF index (its lists are memory-mapped while reading, never loaded)."""
    faiss = _faiss()
    index = _read_faiss(index_dir, manifest,
                        faiss.IO_FLAG_READ_ONLY | (0 if manifest.on_disk else faiss.IO_FLAG_MMAP))
    ivf = faiss.extract_index_ivf(index)
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)
    empty.this.disown()  # the index owns it now; Python must not free it
    ivf.ntotal = index.ntotal = 0
    return index


def _merge_on_disk(trained: Any, parts: Sequence[Any], ivfdata: Path) -> None:
    """Merge the inverted lists of ``parts`` into ``trained`` (empty) as OnDiskInvertedLists in ``ivfdata``.

    Same steps as ``faiss.contrib.ondisk.merge_ondisk``, but on already-opened indexes: the contrib function reads
    its inputs without ``IO_FLAG_ONDISK_SAME_DIR``, so it cannot take an on-disk index that was moved (every
    geovl index is, from its temporary folder), which adding to an on-disk index needs.
    """
    faiss = _faiss()
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


def _files(manifest: IndexManifest, deleted: np.ndarray) -> dict[str, str | None]:
    return {"index": INDEX_FILE, "metadata": METADATA_FILE, "deleted": DELETED_FILE if deleted.size else None,
            "ivfdata": IVFDATA_FILE if manifest.on_disk else None}


def _finish(tmp: Path, manifest: IndexManifest, row_ids: np.ndarray, deleted: np.ndarray) -> IndexManifest:
    """Write deleted.npy and the manifest (last) into ``tmp``; fill count, id range, memory and timestamps.

    Args:
        row_ids: sorted ids of all metadata rows (one per vector in index.faiss, tombstoned ones included).
        deleted: tombstoned ids (a subset of ``row_ids``).
    """
    from geovl import __version__

    if deleted.size:
        np.save(tmp / DELETED_FILE, np.sort(deleted).astype(np.int64))
    live = row_ids[~np.isin(row_ids, deleted)] if deleted.size else row_ids
    manifest.count = int(live.size)
    manifest.deleted = int(deleted.size)
    manifest.id_min = int(live[0]) if live.size else None
    manifest.id_max = int(live[-1]) if live.size else None
    manifest.memory_bytes = estimate_memory(manifest.index_type, int(row_ids.size), manifest.dim)
    manifest.files = _files(manifest, deleted)
    manifest.geovl_version = __version__
    manifest.updated = utc_now()
    manifest.created = manifest.created or manifest.updated
    manifest.save(tmp)
    return manifest


def _sources(sets: Sequence[EmbeddingSet]) -> list[SourceRecord]:
    now = utc_now()
    return [SourceRecord(str(s.path.resolve()), s.count, now) for s in sets]


def _new_manifest(choice: IndexChoice, sets: Sequence[EmbeddingSet], fingerprint: str | None,
                  gpu_used: bool) -> IndexManifest:
    return IndexManifest(
        model={**sets[0].model, **model_identity(sets[0].model)}, dim=sets[0].dim, index_type=choice.factory,
        kind=choice.kind,
        id_map=choice.kind != "ivf", removal="tombstones" if choice.kind in ("hnsw", "other") else "remove_ids",
        params=choice.params, sources=_sources(sets), gpu_used=gpu_used, trained_sha256=fingerprint,
        reason=choice.reason,
    )


# ----------------------------------------------------------------------------------------------- public API


def build_index(
    embeddings: Embeddings,
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
) -> IndexManifest:
    """Build an index folder from one or more embeddings folders of the same model.

    The index is trained on a seeded random sample of all vectors, then every partition is added with its global
    ids (memory-mapped, chunk by chunk). The metadata of all partitions is merged into ``metadata.parquet``,
    sorted by id. ``out_dir`` is replaced only once the new index is complete (see the module docstring).

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

    Returns:
        The manifest written to ``out_dir/manifest.json``.

    Raises:
        ValueError: mixed models, duplicate ids, an invalid factory string, or no vectors.
        FileNotFoundError: an embeddings folder or partition file is missing.
    """
    sets = _open_sets(embeddings)
    n, dim = sum(s.count for s in sets), sets[0].dim
    if n == 0:
        raise ValueError("the embeddings folders hold no vectors")
    choice = _choice(factory, n, dim, memory_budget_bytes)
    _override(choice, n, train_size=train_size, seed=seed, nprobe=nprobe, ef_search=ef_search,
              ef_construction=ef_construction)
    gpu = _resolve_gpu(use_gpu)
    out = Path(out_dir)
    with _rewrite(out) as tmp:
        ids = _merge_metadata([p.metadata for s in sets for p in s.partitions], tmp / METADATA_FILE)
        if ids.size != n:
            raise ValueError(f"{ids.size} metadata rows for {n} vectors")
        index, fingerprint, gpu_used = _fill(_new_index(choice, dim), choice, sets, gpu=gpu, progress=progress)
        manifest = _new_manifest(choice, sets, fingerprint, gpu_used)
        manifest.count_at_training = n
        _set_search_defaults(index, manifest)
        _faiss().write_index(index, str(tmp / INDEX_FILE))
        _finish(tmp, manifest, ids, np.zeros(0, np.int64))
    logger.info("built %s index of %d vectors at %s", choice.factory, n, out)
    return manifest


def _override(choice: IndexChoice, n: int, *, train_size: int | None, seed: int, nprobe: int | None,
              ef_search: int | None, ef_construction: int | None) -> None:
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


def add_to_index(index_dir: PathLike, embeddings: Embeddings, *, progress: bool = True) -> IndexManifest:
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
    sets = _open_sets(embeddings)
    out = Path(index_dir)
    with _rewrite(out) as tmp:
        old = IndexManifest.load(out)
        for s in sets:
            check_same_model(old.model, s.model)
        new_parts = [p for s in sets for p in s.partitions if p.count]
        if not new_parts:
            raise ValueError("the embeddings folders hold no vectors to add")
        new_ids = np.concatenate([_parquet_ids(p.metadata) for p in new_parts])
        tomb = _read_deleted(out)
        clash = np.unique(new_ids[np.isin(new_ids, _parquet_ids(out / METADATA_FILE))])
        if clash.size:
            dead = clash[np.isin(clash, tomb)]
            extra = f" ({_few(dead)} were removed but stay tombstoned until a rebuild)" if dead.size else ""
            raise ValueError(f"{clash.size} ids are already in the index {out}: {_few(clash)}{extra}")
        ids = _merge_metadata([out / METADATA_FILE] + [p.metadata for s in sets for p in s.partitions],
                              tmp / METADATA_FILE)
        faiss = _faiss()
        choice = IndexChoice(old.index_type, old.kind, old.params)
        if old.on_disk:
            shard, _, _ = _fill(_empty_trained(out, old), choice, sets, gpu=False, progress=progress)
            existing = _read_faiss(out, old, faiss.IO_FLAG_READ_ONLY)
            index = _empty_trained(out, old)
            _merge_on_disk(index, [existing, shard], tmp / IVFDATA_FILE)
        else:
            index, _, _ = _fill(_read_faiss(out, old), choice, sets, gpu=False, progress=progress)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        added = int(new_ids.size)
        old.sources += _sources(sets)
        old.added_since_training += added
        _rebuild_note(old)
        _finish(tmp, old, ids, tomb)
    logger.info("added %d vectors to %s (%d live)", added, out, old.count)
    return old


def _rebuild_note(manifest: IndexManifest) -> None:
    manifest.notes = [n for n in manifest.notes if not n.startswith("consider rebuild")]
    if manifest.kind == "ivf" and manifest.added_since_training > manifest.count_at_training:
        manifest.notes.append(
            f"consider rebuild: {manifest.added_since_training:,} vectors were added after the IVF quantizer was "
            f"trained for {manifest.count_at_training:,} (sample of {manifest.params.train_size:,}); a rebuild "
            "re-centres the lists on the current data")


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
        with _rewrite(out) as tmp:
            old = IndexManifest.load(out)
            rows = _parquet_ids(out / METADATA_FILE)
            tomb = _read_deleted(out)
            present = req[np.isin(req, rows) & ~np.isin(req, tomb)]
            missing = np.setdiff1d(req, present)
            if missing.size and not missing_ok:
                raise ValueError(f"{missing.size} ids are not in the index {out} (or were removed already): "
                                 f"{_few(missing)}")
            if present.size == 0:
                raise _Unchanged
            if old.removal == "remove_ids" and not old.on_disk and _remove_ids(out, old, tmp, present):
                rows = _merge_metadata([out / METADATA_FILE], tmp / METADATA_FILE, drop=present)
            else:  # tombstones: index.faiss and metadata.parquet are unchanged, so the new folder shares them
                old.removal = "tombstones"
                for name in (INDEX_FILE, METADATA_FILE) + ((IVFDATA_FILE,) if old.on_disk else ()):
                    _link_or_copy(out / name, tmp / name)
                rows = np.sort(rows)
                tomb = np.union1d(tomb, present)
            _finish(tmp, old, rows, tomb)
    except _Unchanged:
        logger.info("none of the %d ids are in %s; nothing to remove", req.size, out)
        return IndexManifest.load(out)
    logger.info("removed %d vectors from %s (%s)", present.size, out, old.removal)
    return old


def _remove_ids(out: Path, manifest: IndexManifest, tmp: Path, ids: np.ndarray) -> bool:
    """Write the index minus ``ids`` (faiss ``remove_ids``) into ``tmp``; ``False`` if faiss refuses."""
    faiss = _faiss()
    index = _read_faiss(out, manifest)
    try:
        removed = int(index.remove_ids(faiss.IDSelectorBatch(ids)))
    except RuntimeError as exc:
        logger.warning("%s cannot remove vectors (%s); recording tombstones instead", manifest.index_type, exc)
        return False
    if removed != ids.size:
        raise RuntimeError(f"faiss removed {removed} vectors for {ids.size} ids; the index and metadata disagree")
    faiss.write_index(index, str(tmp / INDEX_FILE))
    return True


def _unwrap(index: Any) -> tuple[Any, Any, Any, bool]:
    """Walk the wrappers geovl writes around a faiss index.

    Returns:
        ``(id_map, refine, core, transformed)``: the outer ``IndexIDMap``/``IndexIDMap2`` (or ``None``), the
        ``IndexRefine``/``IndexRefineFlat`` stage (or ``None``), the index doing the ANN work (IVF, HNSW, flat
        codes, ...) under any ``IndexPreTransform`` (OPQ, PCA, ...), and whether a pre-transform sits between the
        id map and the refine stage or core (then stored vectors are in the transformed space).
    """
    faiss = _faiss()
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
    :func:`build_index` ignores them. Per-call parameters leave the index's own fields alone, so concurrent searches
    with different parameters do not interfere.

    Args:
        index: a CPU faiss index as geovl writes it (:func:`load_index`).
        sel: a faiss ``IDSelector`` over the index's labels (global ids); the caller keeps it alive.
        nprobe, ef_search, k_factor: ``None`` or 0 keeps the index's own value (the manifest's defaults, set by
            :func:`load_index`).

    Returns:
        The parameters (they hold references to the parameter and selector objects they point to; keep them alive
        during the search), or ``None`` where the core index type takes no parameters faiss knows of.
    """
    faiss = _faiss()
    id_map, refine, core, _ = _unwrap(index)
    kwargs: dict[str, Any] = {}
    if sel is not None:
        if refine is None:
            kwargs["sel"] = sel
        elif id_map is not None:  # the base index labels vectors by position in the id map
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


@dataclass
class LoadedIndex:
    """An index folder loaded for search.

    Attributes:
        index: the faiss index (labels are global ids), with the manifest's default nprobe / efSearch set.
        manifest: the index manifest.
        path: the folder it was loaded from.
        deleted: sorted int64 tombstoned ids that searches must skip (empty for most indexes).
        mmap: whether the vectors/lists are memory-mapped rather than loaded.
        gpu: whether the index was moved to a GPU.
    """

    index: Any
    manifest: IndexManifest
    path: Path
    deleted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mmap: bool = False
    gpu: bool = False
    gpu_resources: Any = None

    def check_model(self, model: dict[str, Any]) -> None:
        """Raise ``ValueError`` unless queries from ``model`` (a model record) match the index's model."""
        self.manifest.check_model(model)

    def search(self, queries: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None,
               k_factor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner-product search, skipping tombstoned ids.

        Parameters reach the index doing the work through the IDMap / pre-transform / refine wrappers (see
        :func:`search_parameters`); those that do not apply to the index type are ignored.

        Args:
            queries: (N_q, D) or (D,) float32 L2-normalised query vectors.
            k: results per query.
            nprobe: IVF lists to visit (default: the manifest's).
            ef_search: HNSW beam width, or that of an IVF index's HNSW coarse quantizer (default: the manifest's).
            k_factor: for refine types, candidates re-ranked per result (default: the manifest's).

        Returns:
            ``(scores, ids)``, each (N_q, k): cosine similarities (best first) and global ids, ``-1`` / ``-inf``
            where fewer than ``k`` results exist.
        """
        q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.manifest.dim:
            raise ValueError(f"queries are {q.shape[1]}-d, the index is {self.manifest.dim}-d")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        refs = self._params(nprobe, ef_search, k_factor)
        if refs is not None:
            scores, ids = self.index.search(q, k, params=refs[0])
        else:  # selectors unsupported here: over-fetch and drop tombstones afterwards
            kk = int(min(self.index.ntotal, k + self.deleted.size)) or 1
            scores, ids = self.index.search(q, kk)
            scores, ids = _drop_tombstones(scores, ids, self.deleted, k)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def _params(self, nprobe: int | None, ef_search: int | None,
                k_factor: float | None) -> tuple[Any, ...] | None:
        """faiss SearchParameters (plus the objects they point to, kept alive) or ``None`` where unsupported."""
        faiss = _faiss()
        if self.gpu:
            return None
        keep: list[Any] = []
        sel = None
        if self.deleted.size:
            batch = faiss.IDSelectorBatch(self.deleted)
            sel = faiss.IDSelectorNot(batch)
            keep += [batch, sel]
        params = search_parameters(self.index, sel=sel, nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
        return None if params is None else (params, *keep)


def _drop_tombstones(scores: np.ndarray, ids: np.ndarray, deleted: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = (ids >= 0) & ~np.isin(ids, deleted)
    out_s = np.full((ids.shape[0], k), -np.inf, np.float32)
    out_i = np.full((ids.shape[0], k), -1, np.int64)
    for r in range(ids.shape[0]):
        row = np.flatnonzero(keep[r])[:k]
        out_s[r, :row.size], out_i[r, :row.size] = scores[r, row], ids[r, row]
    return out_s, out_i


def load_index(index_dir: PathLike, *, mmap: bool = False, use_gpu: UseGpu = "auto") -> LoadedIndex:
    """Load an index folder for search.

    Args:
        index_dir: the index folder.
        mmap: memory-map instead of reading into RAM: IVF lists with ``IO_FLAG_MMAP``, flat codes (Flat, HNSW
            storage) with ``IO_FLAG_MMAP_IFC``, both read-only. Falls back to a full read (logged) where the
            index type does not support it. On-disk indexes are always memory-mapped.
        use_gpu: move Flat/IVF indexes to a GPU (``"auto"``: when faiss sees one and ``mmap`` is off).

    Raises:
        FileNotFoundError: no index there, with the command that builds one.
    """
    faiss = _faiss()
    path = Path(index_dir)
    if not (path / MANIFEST_FILE).is_file():
        olds = [d for d in _siblings(path, "old") if (d / MANIFEST_FILE).is_file()]
        if path.exists() or not olds:
            raise FileNotFoundError(f"no geovl index at {path} (missing {MANIFEST_FILE}); {BUILD_HINT}")
        logger.warning("%s is missing after an interrupted write; loading the previous index from %s", path, olds[-1])
        path = olds[-1]
    manifest = IndexManifest.load(path)
    if manifest.metric != "ip":
        raise ValueError(f"{path / MANIFEST_FILE}: metric {manifest.metric!r} is not supported; geovl indexes use "
                         "'ip' (inner product of L2-normalised vectors)")
    if mmap and not manifest.on_disk:
        flags = faiss.IO_FLAG_READ_ONLY | (faiss.IO_FLAG_MMAP if manifest.kind == "ivf" else faiss.IO_FLAG_MMAP_IFC)
        try:
            index = _read_faiss(path, manifest, flags)
        except RuntimeError as exc:
            logger.info("%s cannot be memory-mapped (%s); reading it into RAM", manifest.index_type, exc)
            index, mmap = _read_faiss(path, manifest), False
    else:
        index = _read_faiss(path, manifest, faiss.IO_FLAG_READ_ONLY if manifest.on_disk else 0)
    deleted = _read_deleted(path)
    if index.ntotal != manifest.count + deleted.size:
        raise ValueError(f"{path}: index.faiss holds {index.ntotal} vectors but the manifest says {manifest.count} "
                         f"live + {deleted.size} deleted; rebuild it ({BUILD_HINT})")
    _set_search_defaults(index, manifest)
    loaded = LoadedIndex(index, manifest, path, deleted, mmap=mmap or manifest.on_disk)
    want_gpu = use_gpu is True or (use_gpu == "auto" and not loaded.mmap)
    if want_gpu and manifest.kind in ("flat", "ivf") and _resolve_gpu(use_gpu):
        try:
            loaded.gpu_resources = faiss.StandardGpuResources()
            loaded.index, loaded.gpu = faiss.index_cpu_to_gpu(loaded.gpu_resources, 0, index), True
        except (RuntimeError, AttributeError) as exc:
            logger.info("keeping %s on the CPU: %s", manifest.index_type, exc)
    return loaded


# ----------------------------------------------------------------------------------------------- shards


def train_ivf_quantizer(
    embeddings: Embeddings,
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
        memory_budget_bytes, train_size, seed, use_gpu, nprobe: as in :func:`build_index`.
    """
    sets = _open_sets(embeddings)
    n, dim = sum(s.count for s in sets), sets[0].dim
    planned = int(expected_count or n)
    choice = _choice(factory, planned, dim, memory_budget_bytes, ivf_only=True)
    _override(choice, n, train_size=train_size, seed=seed, nprobe=nprobe, ef_search=None, ef_construction=None)
    choice.params.train_size = min(choice.params.train_size or n, n)
    gpu = _resolve_gpu(use_gpu)
    out = Path(out_dir)
    with _rewrite(out) as tmp:
        faiss = _faiss()
        index, fingerprint, gpu_used = _fill(_new_index(choice, dim), choice, sets, gpu=gpu, progress=False,
                                             add=False)
        manifest = _new_manifest(choice, sets, fingerprint, gpu_used)
        manifest.sources = []
        manifest.count_at_training = planned
        _merge_metadata([], tmp / METADATA_FILE)
        _set_search_defaults(index, manifest)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        _finish(tmp, manifest, np.zeros(0, np.int64), np.zeros(0, np.int64))
    return manifest


def build_shard(trained_dir: PathLike, embeddings: Embeddings, out_dir: PathLike, *, use_gpu: UseGpu = "auto",
                progress: bool = True) -> IndexManifest:
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
    sets = _open_sets(embeddings)
    for s in sets:
        check_same_model(trained.model, s.model, what=f"trained index {trained_path}")
    gpu = _resolve_gpu(use_gpu)
    with _rewrite(Path(out_dir)) as tmp:
        ids = _merge_metadata([p.metadata for s in sets for p in s.partitions], tmp / METADATA_FILE)
        choice = IndexChoice(trained.index_type, trained.kind, trained.params)
        index, _, gpu_used = _fill(_read_faiss(trained_path, trained), choice, sets, gpu=gpu, progress=progress)
        _faiss().write_index(index, str(tmp / INDEX_FILE))
        trained.sources = _sources(sets)
        trained.gpu_used = gpu_used
        trained.created = ""
        _finish(tmp, trained, ids, np.zeros(0, np.int64))
    return trained


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
    faiss = _faiss()
    paths = [Path(d) for d in shard_dirs]
    out = Path(out_dir)
    if not paths:
        raise ValueError("no shards given")
    if out.resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"the merged index {out} must not be one of the shards")
    mans = [IndexManifest.load(p) for p in paths]
    first = mans[0]
    for p, m in zip(paths, mans, strict=True):
        check_same_model(first.model, m.model, what=f"shard {paths[0]}")
        if m.kind != "ivf" or m.index_type != first.index_type:
            raise ValueError(f"shards must all be the same IVF type: {paths[0]} is {first.index_type!r}, {p} is "
                             f"{m.index_type!r}")
        if m.trained_sha256 is None or m.trained_sha256 != first.trained_sha256:
            raise ValueError(f"shard {p} was trained separately from {paths[0]} (trained quantizer fingerprints "
                             "differ); build every shard from one train_ivf_quantizer() output")
    with _rewrite(out) as tmp:
        ids = _merge_metadata([p / METADATA_FILE for p in paths], tmp / METADATA_FILE)
        tomb = np.unique(np.concatenate([_read_deleted(p) for p in paths]))
        if on_disk:
            parts = [_read_faiss(p, m, faiss.IO_FLAG_READ_ONLY | (0 if m.on_disk else faiss.IO_FLAG_MMAP))
                     for p, m in zip(paths, mans, strict=True)]
            index = _empty_trained(paths[0], first)
            _merge_on_disk(index, parts, tmp / IVFDATA_FILE)
            del parts
        else:
            on_disk_shards = [str(p) for p, m in zip(paths, mans, strict=True) if m.on_disk]
            if on_disk_shards:  # faiss' merge_from empties its source lists: never point it at shared files
                raise ValueError(f"shards {', '.join(on_disk_shards)} are on disk; merge them with on_disk=True")
            index = _read_faiss(paths[0], first)
            ivf = faiss.extract_index_ivf(index)
            for p, m in zip(paths[1:], mans[1:], strict=True):
                other = _read_faiss(p, m)  # keep a reference: the extracted IVF belongs to it
                ivf.merge_from(faiss.extract_index_ivf(other), 0)
                del other
            index.ntotal = ivf.ntotal
        faiss.write_index(index, str(tmp / INDEX_FILE))
        merged = IndexManifest.from_dict(first.to_dict())
        merged.sources = [s for m in mans for s in m.sources]
        merged.added_since_training = sum(m.added_since_training for m in mans)
        merged.gpu_used = any(m.gpu_used for m in mans)
        merged.on_disk = on_disk
        merged.removal = "tombstones" if on_disk else first.removal
        merged.reason = f"{first.reason}; merged from {len(paths)} shards" + (" on disk" if on_disk else "")
        merged.created = ""
        _rebuild_note(merged)
        _finish(tmp, merged, ids, tomb)
    return merged
