"""Helpers shared by tests (import as ``from tests.helpers import shared_data``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("GEOVL_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_data(name: str) -> Path:
    """Path to ``../shared/data/<name>``; skips the calling test when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data {path} is not present")
    return path
