"""Package-level promises: layering, optional extras, the console script."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from geovl._optional import MissingDependencyError, require


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
    assert "pip install 'geovl[geo]'" in out


def test_require_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'geovl\[demo\]'"):
        require("surely_not_an_installed_module_xyz", extra="demo", feature="the demo")
    assert require("json", extra="core") is json


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "geovl.cli", "--version"], check=True, capture_output=True, text=True)
    assert out.stdout.startswith("geovl ")
