"""Dataset fingerprints: one sha256 that identifies a dataset on disk, stored in every evaluation report.

A fingerprint covers each file's path relative to its root, its size, and the full content of annotation files
(:data:`ANNOTATION_SUFFIXES`); it never covers absolute locations, modification times, permissions or listing
order, so a copy of a dataset elsewhere has the same fingerprint. The exact hashed text is documented in
:func:`dataset_fingerprint` and must not change: reports written earlier keep their fingerprints comparable.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from geovl.io.fs import sha256_file

__all__ = ["ANNOTATION_SUFFIXES", "dataset_fingerprint"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

ANNOTATION_SUFFIXES: frozenset[str] = frozenset(
    {".json", ".jsonl", ".csv", ".tsv", ".txt", ".yaml", ".yml", ".xml", ".geojson"}
)
"""Files whose full content :func:`dataset_fingerprint` hashes; every other file counts by path and size."""

_HEADER = b"geovl-dataset-fingerprint/1\n"


def dataset_fingerprint(
    path_or_paths: PathLike | Sequence[PathLike],
    *,
    files: Sequence[PathLike] | None = None,
    max_bytes_per_file: int | None = None,
) -> str:
    """A sha256 (hex) that identifies a dataset on disk, cheap enough for folders of 10k+ images.

    What it covers, for every file found (see below), keyed by its POSIX path relative to its root:

    - annotation files (suffix in :data:`ANNOTATION_SUFFIXES`: JSON, JSONL, CSV, TSV, TXT, YAML, XML,
      GeoJSON): the sha256 of their full content;
    - every other file (images, GeoTIFFs, tars, parquet, ...): its size in bytes, plus the sha256 of its first
      ``max_bytes_per_file`` bytes when that is given. Images are not read by default, so re-encoding an image
      to the very same size goes unnoticed; pass ``max_bytes_per_file`` for a stronger check.

    It does not cover absolute locations, modification times, permissions, or the order in which the
    file system lists a folder, so a copy of the dataset elsewhere has the same fingerprint. Which files:

    - a folder root: every file below it, recursively, skipping names that start with ``.`` (``.DS_Store``,
      ``.git``, ``.ipynb_checkpoints``) and not following symlinked folders;
    - a file root: that file, keyed by its name;
    - ``files=``: exactly these files (relative to the single folder root, or absolute paths inside it), e.g. the
      images and annotation file of one split when the folder holds more.

    Several roots are pooled: all entries are sorted by key, so the order of the roots does not matter.

    Exactly: each file gives the line ``"<key>\\t<content|size>\\t<bytes>\\t<sha256 of content or head, or ->\\n"``;
    the fingerprint is the sha256 of ``"geovl-dataset-fingerprint/1\\n"``, then ``"head=<N>\\n"`` when
    ``max_bytes_per_file`` is given, then the sorted lines.

    Args:
        path_or_paths: a dataset folder or file, or several.
        files: restrict the fingerprint to these files under the single folder ``path_or_paths``.
        max_bytes_per_file: also hash the first this many bytes of each non-annotation file.

    Raises:
        FileNotFoundError: a root or a listed file does not exist.
        ValueError: no root, a negative ``max_bytes_per_file``, or ``files=`` outside a single folder root.
    """
    roots = _roots(path_or_paths)
    if max_bytes_per_file is not None and max_bytes_per_file < 0:
        raise ValueError(f"max_bytes_per_file must be >= 0, got {max_bytes_per_file}")
    entries = _listed(roots, files) if files is not None else [entry for root in roots for entry in _walk(root)]

    digest = hashlib.sha256(_HEADER)
    if max_bytes_per_file:
        digest.update(f"head={max_bytes_per_file}\n".encode())
    n_content = 0
    for line in sorted(_entry_line(key, path, max_bytes_per_file) for key, path in entries):
        digest.update(line.encode("utf-8"))
        n_content += line.split("\t", 2)[1] == "content"
    logger.debug(
        "fingerprinted %d files (%d annotation files by content) under %s",
        len(entries),
        n_content,
        ", ".join(map(str, roots)),
    )
    return digest.hexdigest()


def _roots(path_or_paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """The dataset roots as paths, each checked to exist."""
    if isinstance(path_or_paths, (str, os.PathLike)):
        path_or_paths = [path_or_paths]
    roots = [Path(p) for p in path_or_paths]
    if not roots:
        raise ValueError("dataset_fingerprint needs at least one path")
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"dataset path {root} does not exist")
    return roots


def _listed(roots: list[Path], files: Sequence[PathLike]) -> list[tuple[str, Path]]:
    """``(key, path)`` of each of ``files``, keyed relative to the single folder root."""
    if len(roots) != 1 or not roots[0].is_dir():
        raise ValueError("files= needs exactly one dataset folder as path_or_paths (the files' common root)")
    root = roots[0]
    entries = []
    for f in files:
        path = Path(f) if Path(f).is_absolute() else root / f
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {path} does not exist")
        try:
            key = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise ValueError(f"{path} is not inside the dataset folder {root}") from None
        entries.append((key, path))
    return entries


def _walk(root: Path) -> list[tuple[str, Path]]:
    if root.is_file():
        return [(root.name, root)]
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                path = Path(folder, name)
                found.append((path.relative_to(root).as_posix(), path))
    return found


def _entry_line(key: str, path: Path, head: int | None) -> str:
    size = path.stat().st_size
    if path.suffix.lower() in ANNOTATION_SUFFIXES:
        return f"{key}\tcontent\t{size}\t{sha256_file(path)}\n"
    head_hash = "-"
    if head:
        with open(path, "rb") as fh:
            head_hash = hashlib.sha256(fh.read(head)).hexdigest()
    return f"{key}\tsize\t{size}\t{head_hash}\n"
