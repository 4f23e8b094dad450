"""Filesystem helpers shared by the writers: a finished temporary folder swapped in for its destination."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["swap_in_folder"]


def swap_in_folder(tmp: Path, dest: Path) -> Path:
    """Move the complete folder ``tmp`` to ``dest``, replacing what was there.

    ``tmp`` must sit next to ``dest`` (same filesystem). The old folder is renamed aside before the new one takes its
    place and is deleted only after, so ``dest`` is never a half-written folder; a crash between the two renames
    leaves the old copy as ``.<name>.old``.
    """
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
