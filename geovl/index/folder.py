"""Writing index folders safely: one writer at a time, and a new version built beside the old one and swapped in.

Rules every writer of an index folder ``NAME`` follows (through :func:`rewrite_index_folder`):

* It holds the lock ``.NAME.lock`` next to the folder (:func:`geovl.io.fs.file_lock`) from start to end.
* It writes copy-on-write: the new version goes into an empty temporary sibling folder
  (:func:`geovl.io.fs.atomic_folder`), whose files are fsynced and which then replaces ``NAME``
  (:func:`geovl.io.fs.swap_in_folder`). A crash or kill at any point leaves the previous version (or none) in
  place, never a half-written one.
* The swap sets the previous version aside as ``.NAME.old`` before the new one takes its place. When the swap fails
  in process, the previous version is put back at once; when the writer is killed in between, readers load
  ``.NAME.old`` (:func:`previous_version`) and the next writer restores it. The next writer also deletes the
  temporary folders killed writers of ``NAME`` left behind.
* Files in an index folder are never modified in place, so a new version may hard-link unchanged files of the
  previous one (:func:`link_or_copy`). The manifest is written last (:func:`finish_index_folder`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from geovl.index.choose import estimate_memory
from geovl.index.manifest import (
    DELETED_FILE,
    INDEX_FILE,
    INDEX_FORMAT,
    IVFDATA_FILE,
    MANIFEST_FILE,
    METADATA_FILE,
    VECTORS_FILE,
    IndexManifest,
    utc_now,
)
from geovl.io.fs import atomic_folder, file_lock

logger = logging.getLogger(__name__)

_TEMP_FOLDER_SUFFIX = ".tmpdir"
"""The suffix :func:`geovl.io.fs.atomic_folder` gives its temporary folders (``.NAME.<random>.tmpdir``)."""


class IndexUnchanged(Exception):
    """Raised inside :func:`rewrite_index_folder` to drop the new version and keep the index folder as it is."""


def previous_version(path: Path) -> Path | None:
    """The previous version of the index folder ``path`` that an interrupted swap left aside, if there is one."""
    aside = path.with_name(f".{path.name}.old")
    return aside if (aside / MANIFEST_FILE).is_file() else None


def _stale_temps(out: Path) -> list[Path]:
    """Temporary folders of writers of ``out`` (``.NAME.<random>.tmpdir``), not those of other folders."""
    prefix = f".{out.name}."
    found = [Path(p) for p in glob.glob(str(out.parent / f"{glob.escape(prefix)}*{_TEMP_FOLDER_SUFFIX}"))]
    # the random part has no dot: ".a.<random>.tmpdir" is a writer's of "a", ".a.b.<random>.tmpdir" one of "a.b"
    return [p for p in found if "." not in p.name[len(prefix):-len(_TEMP_FOLDER_SUFFIX)] and p.is_dir()]


def _recover(out: Path) -> None:
    """Undo what an interrupted writer left (call with the lock held: every leftover is then stale)."""
    aside = out.with_name(f".{out.name}.old")
    if not out.exists() and aside.is_dir():
        logger.warning("restoring %s from %s (a write was interrupted while swapping folders)", out, aside)
        os.replace(aside, out)
    for leftover in [*_stale_temps(out), *([aside] if aside.is_dir() else [])]:
        logger.info("removing %s left by an interrupted index write", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


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


@contextmanager
def rewrite_index_folder(out: Path) -> Iterator[Path]:
    """Lock ``out``, recover from interrupted writers, and yield an empty temporary sibling folder.

    When the block completes, the folder's files are fsynced and it replaces ``out``. On any error (including
    KeyboardInterrupt, and :class:`IndexUnchanged`) it is deleted and ``out`` is left as it was. A symlink ``out``
    keeps pointing where it did: the folder it points to is replaced.

    Raises:
        FileExistsError: ``out`` exists and is not an index folder (an empty folder may be replaced).
    """
    if out.is_symlink():
        out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out.parent / f".{out.name}.lock"):
        _recover(out)
        _check_replaceable(out)
        try:
            with atomic_folder(out) as tmp:
                yield tmp
                _fsync_tree(tmp)
        except BaseException:
            _recover(out)  # a swap that failed half-way: put the previous version back
            raise
        _fsync_dir(out.parent)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (files are never modified in place, so versions can share them), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def read_deleted(index_dir: Path) -> np.ndarray:
    """The tombstoned ids of an index folder (``deleted.npy``) as int64, empty when it has none."""
    path = index_dir / DELETED_FILE
    return np.load(path).astype(np.int64) if path.is_file() else np.zeros(0, np.int64)


def finish_index_folder(tmp: Path, manifest: IndexManifest, row_ids: np.ndarray,
                        deleted: np.ndarray) -> IndexManifest:
    """Write deleted.npy and the manifest (last) into ``tmp``; fill count, id range, files, memory and timestamps.

    Args:
        tmp: the new version's folder, holding ``index.faiss`` and ``metadata.parquet`` (and ``vectors.npy`` for a
            re-ranking index) already.
        manifest: the manifest to complete and write (changed in place and returned).
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
    manifest.files = {"index": INDEX_FILE, "metadata": METADATA_FILE,
                      "deleted": DELETED_FILE if deleted.size else None,
                      "ivfdata": IVFDATA_FILE if manifest.on_disk else None,
                      "vectors": VECTORS_FILE if manifest.params.rerank else None}
    manifest.geovl_version = __version__
    manifest.updated = utc_now()
    manifest.created = manifest.created or manifest.updated
    manifest.save(tmp)
    return manifest
