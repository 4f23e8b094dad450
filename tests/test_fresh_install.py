"""A plain ``pip install .`` (no extras) in a fresh virtual environment runs every everyday command (slow: it
installs geovl's dependencies from the package index, or pip's cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: int = 1800) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["GEOVL_HOME"] = str(cwd / "home")
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.timeout(1800)  # a fresh venv installs PyTorch and the wheels that carry weights: minutes on a busy CPU
def test_plain_install_runs_the_everyday_commands(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    _run([py, "-m", "pip", "install", "--quiet", str(ROOT)], tmp_path)
    geovl = str(venv / "bin" / "geovl")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"tile{i}.png")
    (images / "empty.png").write_bytes(b"")  # recorded and skipped, never fatal
    _run([geovl, "models"], tmp_path)
    out = json.loads(_run([geovl, "embed", str(images), "--out", "emb", "-q"], tmp_path))
    assert out["images"] == 6 and out["failed"] == 1
    _run([geovl, "index", "build", "emb", "--out", "idx"], tmp_path)
    hits = _run([geovl, "index", "search", "idx", "a forest", "-k", "3", "--json"], tmp_path)
    assert len(json.loads(hits)) == 3
    classified = json.loads(_run([geovl, "classify", str(images), "--labels", "forest,river", "--json"], tmp_path))
    assert len(classified["predictions"]) == 6 and len(classified["failures"]) == 1
