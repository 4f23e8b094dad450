"""Filesystem helpers every writer in geovl uses: atomic file and folder writes, locks, sha256, JSONL.

The rule: a file or folder geovl writes is built under a temporary name next to its destination and renamed over
it only when complete, so a reader (or a resumed run after a crash) sees the old version or the new one, never half
of one. Temporary names share one scheme, ``.<name>.<random>.tmp`` (folders: ``.<name>.<random>.tmpdir``), so
:func:`remove_stale_temps` can clear what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TEMP_SUFFIX",
    "atomic_folder",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_lock",
    "iter_jsonl",
    "remove_stale_temps",
    "sha256_file",
    "swap_in_folder",
    "temp_sibling",
]

PathLike = str | os.PathLike[str]

TEMP_SUFFIX = ".tmp"
_TEMP_DIR_SUFFIX = ".tmpdir"


def temp_sibling(target: PathLike, *, suffix: str = TEMP_SUFFIX, create: bool = True) -> Path:
    """A new, uniquely named hidden path next to ``target``: ``.<name>.<random><suffix>``.

    With ``create`` the empty file is created (``O_EXCL``, mode 0666 less the umask, unlike :func:`tempfile.mkstemp`'s
    0600, so written files stay readable by others) so that no two writers get the same name. ``suffix`` may end in
    the extension a library needs to pick a format (``.tmp.tif``).
    """
    target = Path(target)
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{suffix}")
        if not create:
            if not tmp.exists():
                return tmp
            continue
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {target}")


@contextlib.contextmanager
def atomic_path(path: PathLike, *, suffix: str = TEMP_SUFFIX, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a library to write to (``np.save``, ``pq.write_table``,
    rasterio); when the block ends without error it is renamed over ``path``, else removed.

    ``suffix`` lets the temporary name keep the extension a writer infers its format from (``".tmp.tif"``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target, suffix=suffix, create=False)
    try:
        yield tmp
        if fsync and tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Create ``path`` by calling ``write(binary_file)`` on a temporary file next to it, then renaming it over
    ``path``; on any error the temporary file is removed and ``path`` is left as it was."""
    target = Path(path)
    with atomic_path(target, fsync=False) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return target


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``data`` (plain JSON data; see :func:`geovl.io.jsonable.to_jsonable`) to ``path`` atomically.

    Non-finite floats are refused (``ValueError``) rather than written as the non-JSON ``NaN``.
    """
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=False, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


def swap_in_folder(tmp: PathLike, dest: PathLike) -> Path:
    """Move the complete folder ``tmp`` to ``dest``, replacing what was there.

    ``tmp`` must sit next to ``dest`` (same filesystem). The old folder is renamed aside before the new one takes its
    place and is deleted only after, so ``dest`` is never a half-written folder; a crash between the two renames
    leaves the old copy as ``.<name>.old``.
    """
    tmp, dest = Path(tmp), Path(dest)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    return dest


@contextlib.contextmanager
def atomic_folder(dest: PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``dest``; when the block ends without error it replaces ``dest``
    (:func:`swap_in_folder`), else it is deleted and ``dest`` is left as it was."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest, suffix=_TEMP_DIR_SUFFIX, create=False)
    tmp.mkdir()
    try:
        yield tmp
        swap_in_folder(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(folder: PathLike, *, recursive: bool = False) -> list[Path]:
    """Delete the temporary files and folders a killed writer left in ``folder`` (names from :func:`temp_sibling`);
    returns what was removed. Call it only when no other writer is working in ``folder`` (hold a :func:`file_lock`).
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    pattern = "**/.*" if recursive else ".*"
    removed = []
    for path in root.glob(pattern):
        if path.name.endswith(_TEMP_DIR_SUFFIX) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif TEMP_SUFFIX in path.suffixes and path.is_file():
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path)
    return removed


def file_lock(path: PathLike, *, timeout: float = -1) -> Any:
    """An inter-process lock on ``path`` (a ``.lock`` file; :mod:`filelock`), used as ``with file_lock(p): ...``.

    ``timeout`` seconds to wait (-1: forever); on expiry ``filelock.Timeout`` (a ``TimeoutError``) is raised.
    """
    from filelock import FileLock

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(os.fspath(path), timeout=timeout)


def sha256_file(path: PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def iter_jsonl(path: PathLike) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON Lines file, one per non-blank line.

    Raises:
        ValueError: a line that is not a JSON object, naming the file and line number.
    """
    for _, row in iter_jsonl_numbered(path):
        yield row


def iter_jsonl_numbered(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON Lines file (1-based numbers, for messages).

    Raises:
        ValueError: a line that is not a JSON object, naming the file and line number.
    """
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row
