"""Helpers shared by tests (import as ``from tests.helpers import shared_data``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(os.environ.get("GEOVL_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_data(name: str) -> Path:
    """Path to ``../shared/data/<name>``; skips the calling test when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data {path} is not present")
    return path


def kill_run_after(cmd: list[str], out: Path, partitions: int, *, timeout: float = 180.0) -> dict[str, Any]:
    """Start a partitioned-run command (``geovl embed`` / ``geovl caption``), SIGKILL its process group as soon as
    ``out/manifest.json`` lists ``partitions`` partitions, and return that manifest."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    manifest = out / "manifest.json"
    while time.time() < deadline:
        if manifest.is_file() and len(json.loads(manifest.read_text())["partitions"]) >= partitions:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return dict(json.loads(manifest.read_text()))
