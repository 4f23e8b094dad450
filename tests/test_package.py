"""Package-level promises: layering, optional extras, the console script."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from geovl._optional import MissingDependencyError, require, require_all


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_library_does_not_import_training_demo_or_servers() -> None:
    out = _run(
        "import sys, json\n"
        "import geovl.models, geovl.io, geovl.data, geovl.index, geovl.eval\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('gradio', 'fastapi', 'uvicorn', 'ray', 'diffusers') or m.startswith(('geovl.training', 'geovl.demo')))))"
    )
    assert json.loads(out) == []


def test_io_imports_without_rasterio() -> None:
    out = _run(
        "import sys\n"
        "sys.modules['rasterio'] = None  # makes `import rasterio` fail\n"
        "import geovl.io\n"
        "from geovl.io import read_geotiff\n"
        "try:\n"
        "    read_geotiff('x.tif')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    assert "rasterio" in out and "reinstall geovl" in out


def test_require_names_the_extra_or_the_core_install() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'geovl\[dist\]'"):
        require("surely_not_an_installed_module_xyz", extra="dist", feature="the Ray runner")
    with pytest.raises(MissingDependencyError, match="reinstall geovl"):
        require("surely_not_an_installed_module_xyz", feature="search")
    with pytest.raises(ValueError, match="unknown extra"):
        require("surely_not_an_installed_module_xyz", extra="index")
    assert require("json") is json
    with pytest.raises(MissingDependencyError, match=r"not_here_a.*not_here_b"):
        require_all({"not_here_a": "train", "json": None, "not_here_b": None}, "training")


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "geovl.cli", "--version"], check=True, capture_output=True, text=True)
    assert out.stdout.startswith("geovl ")
