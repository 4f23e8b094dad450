"""Evaluation reports: JSON record, Markdown summary, PNG plots, atomic writes and the dataset fingerprint."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import geovl
from geovl._optional import MissingDependencyError
from geovl.eval import plots
from geovl.eval import report as report_module
from geovl.eval.report import (
    DATASET_KEYS,
    MODEL_KEYS,
    EvalReport,
    dataset_fingerprint,
    load_report,
    render_markdown,
    to_jsonable,
    write_report,
)
from geovl.io import jsonable
from geovl.io.fs import atomic_write

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib (a geovl dependency) is not installed"
)

CLASSES = ["forest", "river", "highway", "residential"]


def _report(**overrides: Any) -> EvalReport:
    fields: dict[str, Any] = {
        "task": "zeroshot",
        "figures": {"top1": np.float32(61.25), "top5": 90.0, "n": np.int64(400), "broken": float("nan")},
        "protocol": "Synthetic split; top-k counts an image correct when its class is among the k best.",
        "model": {"name": "random:tiny", "architecture": "tiny", "checkpoint_sha256": "ab" * 32},
        "dataset": {"name": "synthetic", "split": "test", "counts": {"images": 400}, "fingerprint": "cd" * 32},
        "settings": {"batch_size": 8, "templates": ["a photo of {}."]},
        "seconds": 1.5,
    }
    fields.update(overrides)
    return EvalReport(**fields)


def _confusion(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.integers(0, 5, size=(n, n))
    matrix[np.diag_indices(n)] = rng.integers(20, 60, size=n)
    return matrix


def _full_details() -> dict[str, Any]:
    matrix = _confusion(len(CLASSES))
    return {
        "curves": {"i2t": {1: 10.0, 5: 30.5, 10: 45.0}, "t2i": {1: 8.0, 5: 25.0, 10: 40.25}},
        "confusion": {"matrix": matrix, "classes": CLASSES},
        "per_class": {c: 100.0 * matrix[i, i] / matrix[i].sum() for i, c in enumerate(CLASSES)},
        "suite": {"A": {"top1": 50.0, "n": 10}, "B": {"top1": 70.0, "n": 20}, "C": None},
        "suite_metric": "top1",
        "missing": {"C": "not found"},
    }


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------------------- JSON


def test_json_round_trip_converts_numpy_and_nan(tmp_path: Path) -> None:
    details = {"per_class": {"a": np.float64(50.0)}, "embedding_norms": np.array([[1.0, np.nan], [np.inf, 2.0]])}
    paths = write_report(_report(details=details), tmp_path, plots=False)
    data = json.loads(paths["json"].read_text())

    assert data["figures"] == {"broken": None, "n": 400, "top1": 61.25, "top5": 90.0}
    assert isinstance(data["figures"]["n"], int)
    assert data["details"]["embedding_norms"] == [[1.0, None], [None, 2.0]]
    assert data["units"]["top1"] == "%" and data["units"]["n"] == ""
    # Sorted keys, strict JSON (no NaN tokens).
    assert paths["json"].read_text() == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert "NaN" not in paths["json"].read_text()

    loaded = load_report(paths["json"])
    assert loaded.to_dict() == {k: v for k, v in data.items() if k != "plots"}


def test_json_has_provenance_keys(tmp_path: Path) -> None:
    model = {"name": "random:tiny"}  # as a caller might pass it: no checkpoint fields at all
    data = json.loads(write_report(_report(model=model, dataset={}), tmp_path, plots=False)["json"].read_text())

    assert data["geovl_version"] == geovl.__version__
    created = dt.datetime.fromisoformat(data["created"])
    assert created.utcoffset() == dt.timedelta(0)
    assert set(MODEL_KEYS) <= set(data["model"]) and data["model"]["checkpoint_sha256"] is None
    assert set(DATASET_KEYS) <= set(data["dataset"]) and "fingerprint" in data["dataset"]
    assert {"platform", "python", "torch", "cpu", "gpu"} <= set(data["host"])
    assert data["format_version"] == report_module.REPORT_FORMAT
    assert data["plots"] == {}
    assert data["seconds"] == 1.5
    assert model == {"name": "random:tiny"}, "the caller's dict must not be filled in"


def test_to_jsonable_rejects_unknown_objects_with_location() -> None:
    assert to_jsonable is jsonable.to_jsonable, "one JSON sanitiser, re-exported"
    assert to_jsonable({1: (np.bool_(True), Path("/x"))}) == {"1": [True, "/x"]}
    with pytest.raises(TypeError, match=r"report\['details'\]\['bad'\]"):
        to_jsonable({"details": {"bad": object()}}, "report")


def test_task_must_be_a_file_name() -> None:
    with pytest.raises(ValueError, match="task"):
        _report(task="../escape")


# --------------------------------------------------------------------------------------------------- Markdown


@needs_matplotlib
def test_markdown_has_figures_table_protocol_and_links(tmp_path: Path) -> None:
    paths = write_report(_report(details=_full_details()), tmp_path)
    text = paths["markdown"].read_text()

    assert text.startswith("# Zero-shot classification: random:tiny on synthetic (test)")
    assert "| Figure " in text and "| `top1`" in text
    assert "61.25 %" in text and "| `n`" in text and "400 |" in text
    assert "n/a" in text  # the NaN figure
    assert "Synthetic split; top-k counts" in text
    assert "ab" * 32 in text and "cd" * 32 in text  # checkpoint and dataset hashes

    links = [line.split("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(links) == 4
    for link in links:
        assert not Path(link).is_absolute()
        assert (paths["markdown"].parent / link).is_file()


def test_markdown_tables_are_aligned() -> None:
    text = render_markdown(_report(details=_full_details()))
    tables: list[list[str]] = []
    previous_was_row = False
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous_was_row:
                tables.append([])
            tables[-1].append(line)
        previous_was_row = line.startswith("|")
    assert len(tables) >= 6
    for table in tables:
        assert len({len(row) for row in table}) == 1, table


def test_markdown_per_class_is_worst_first() -> None:
    per_class = {"good": 90.0, "bad": 10.0, "unknown": None, "middle": 50.0}
    text = render_markdown(_report(details={"per_class": per_class}))
    section = text.split("## Per-class accuracy (worst first)", 1)[1].split("##", 1)[0]
    order = [name for name in ("bad", "middle", "good", "unknown") if name in section]
    assert [section.index(n) for n in order] == sorted(section.index(n) for n in order)
    assert len(order) == 4


def test_markdown_suite_rows_average_and_missing() -> None:
    text = render_markdown(_report(task="suite", details=_full_details()))
    section = text.split("## Datasets", 1)[1].split("## ", 1)[0]
    assert "| A " in section and "| B " in section
    average = next(line for line in section.splitlines() if "**Average**" in line)
    assert "60.00" in average
    assert "15" not in average, "counts are not averaged"
    assert "- C: not found" in section
    assert "2 evaluated datasets" in section


def test_markdown_flat_suite_and_single_curve() -> None:
    details = {
        "suite": {"UCM": 70.0, "AID": 60.5},
        "suite_metric": "accuracy",
        "missing": ["RSC11"],
        "curves": {"recall": {1: 90.0, 10: 99.0}},
    }
    text = render_markdown(_report(task="suite", details=details))
    header = next(line for line in text.splitlines() if line.startswith("| Dataset"))
    assert header.split("|")[2].strip() == "accuracy (%)"
    assert "65.25" in text and "- RSC11" in text
    assert "recall R@k (%)" in text


def test_markdown_escapes_table_breaking_text() -> None:
    text = render_markdown(_report(details={"examples": [{"caption": "a | b\nc"}]}))
    assert "a \\| b c" in text


# ------------------------------------------------------------------------------------------------------ plots


def _check_png(path: Path, min_size: tuple[int, int] = (300, 200)) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        return image.size


@needs_matplotlib
def test_plot_recall_curves_accepts_json_string_keys(tmp_path: Path) -> None:
    curves: dict[str, dict[Any, Any]] = {"i2t": {"1": 10.0, "10": 40.0, "5": None}, "t2i": {1: 5.0, 10: 30.0}}
    _check_png(plots.plot_recall_curves(curves, tmp_path / "recall.png", title="R@k"))


@needs_matplotlib
@pytest.mark.parametrize("n_classes", [10, 45])
def test_plot_confusion_matrix_scales_with_classes(tmp_path: Path, n_classes: int) -> None:
    names = [f"class_{i:02d}_name" for i in range(n_classes)]
    matrix = _confusion(n_classes)
    matrix[0] = 0  # a class without samples must not divide by zero
    size = _check_png(plots.plot_confusion_matrix(matrix, names, tmp_path / "c.png"))
    if n_classes == 45:
        assert min(size) >= 1500, "45 class names need a large canvas to stay legible"


@needs_matplotlib
def test_plot_confusion_matrix_checks_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        plots.plot_confusion_matrix(np.zeros((3, 3)), ["a", "b"], tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


@needs_matplotlib
def test_plot_per_class_and_suite(tmp_path: Path) -> None:
    _check_png(plots.plot_per_class({"a": 10.0, "b": float("nan"), "c": 90.0}, tmp_path / "p.png"))
    _check_png(plots.plot_suite({"A": 50.0, "B": None, "C": 70.0}, tmp_path / "s.png"))
    _check_png(plots.plot_per_class({}, tmp_path / "empty.png"), min_size=(100, 100))


@needs_matplotlib
def test_write_report_makes_the_plots_details_call_for(tmp_path: Path) -> None:
    paths = write_report(_report(details=_full_details()), tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["plots"] == {
        "confusion": "zeroshot_confusion.png",
        "per_class": "zeroshot_per_class.png",
        "curves": "zeroshot_recall.png",
        "suite": "zeroshot_datasets.png",
    }
    for key, name in data["plots"].items():
        assert paths[key] == tmp_path / name
        _check_png(tmp_path / name)
    assert _leftovers(tmp_path) == []

    only_json = write_report(_report(details=_full_details()), tmp_path / "np", plots=False, stem="zs-np")
    assert sorted(p.name for p in (tmp_path / "np").iterdir()) == ["zs-np.json", "zs-np.md"]
    assert set(only_json) == {"json", "markdown"}


# ----------------------------------------------------------------------------------------------- atomic writes


@needs_matplotlib
def test_failing_plot_keeps_the_earlier_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_report(_report(details=_full_details()), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(matrix: Any, names: Any, path: Path, **kwargs: Any) -> Path:
        Path(path).write_bytes(b"partial")
        raise RuntimeError("plot failed")

    monkeypatch.setattr(plots, "plot_confusion_matrix", broken)
    with pytest.raises(RuntimeError, match="plot failed"):
        write_report(_report(figures={"top1": 1.0}, details=_full_details()), tmp_path)

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert json.loads(first["json"].read_text())["figures"]["top1"] == 61.25


def test_unserialisable_report_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="object"):
        write_report(_report(details={"per_class": {"a": 1.0}, "bad": object()}), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")

    def fail(fh: Any) -> None:
        fh.write(b"new but incomplete")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_missing_matplotlib_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"'matplotlib' is needed for evaluation plots.*reinstall geovl"):
        write_report(_report(details=_full_details()), tmp_path)
    assert list(tmp_path.iterdir()) == []
    write_report(_report(details=_full_details()), tmp_path, plots=False)  # reports still work without plots


def test_report_module_imports_without_matplotlib() -> None:
    code = "import sys, geovl.eval.report; assert 'matplotlib' not in sys.modules; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_plots_do_not_import_the_report_modules() -> None:
    # report -> plots only: the plot functions must stay usable without the report writer (no import cycle).
    code = (
        "import sys, geovl.eval.plots; "
        "bad = [m for m in sys.modules if m.startswith('geovl.eval.report')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# ------------------------------------------------------------------------------------------------ fingerprint


def _make_dataset(root: Path) -> Path:
    """A tiny dataset in a real-looking layout: images, a captions JSON, a class CSV and junk to ignore."""
    (root / "images" / "sub").mkdir(parents=True)
    for i, size in enumerate([100, 200, 300]):
        (root / "images" / f"{i}.png").write_bytes(bytes([i]) * size)
    (root / "images" / "sub" / "x.tif").write_bytes(b"\x00" * 64)
    (root / "captions.json").write_text(json.dumps({"0.png": ["a forest"], "1.png": ["a river"]}))
    (root / "classes.csv").write_text("name,label\n0.png,forest\n1.png,river\n")
    (root / ".DS_Store").write_bytes(b"junk")
    (root / ".cache").mkdir()
    (root / ".cache" / "index.bin").write_bytes(b"cache")
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return _make_dataset(tmp_path / "data")


def test_fingerprint_is_pinned(tmp_path: Path) -> None:
    # A refactor must not silently change the fingerprints stored in earlier reports.
    digest = dataset_fingerprint(_make_dataset(tmp_path / "pinned"))
    assert digest == "d10e81442a95d9000ecf1b2a81537fb4aa0431ff053f65dd67db676e025b7a24"


def test_fingerprint_ignores_location_and_listing_order(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = dataset_fingerprint(dataset)
    assert len(digest) == 64 and int(digest, 16) >= 0

    copy = shutil.copytree(dataset, tmp_path / "elsewhere" / "renamed")
    assert dataset_fingerprint(copy) == digest
    assert dataset_fingerprint(str(copy)) == digest

    real_walk = os.walk

    def reversed_walk(top: Any, *args: Any, **kwargs: Any) -> Iterator[tuple[str, list[str], list[str]]]:
        for folder, dirs, names in real_walk(top, *args, **kwargs):
            dirs.reverse()
            yield folder, dirs, names[::-1]

    monkeypatch.setattr(report_module.os, "walk", reversed_walk)
    assert dataset_fingerprint(dataset) == digest


def test_fingerprint_ignores_hidden_files(dataset: Path) -> None:
    digest = dataset_fingerprint(dataset)
    (dataset / ".DS_Store").write_bytes(b"other junk")
    (dataset / ".cache" / "more.bin").write_bytes(b"x")
    assert dataset_fingerprint(dataset) == digest


def test_fingerprint_tracks_annotation_content(dataset: Path) -> None:
    digest = dataset_fingerprint(dataset)
    text = (dataset / "classes.csv").read_text()
    (dataset / "classes.csv").write_text(text.replace("forest", "fOrest"))  # same size, new content
    assert dataset_fingerprint(dataset) != digest


def test_fingerprint_tracks_image_sizes_and_names(dataset: Path) -> None:
    digest = dataset_fingerprint(dataset)
    image = dataset / "images" / "1.png"
    image.write_bytes(b"\x09" * 200)  # same size: not read by default
    assert dataset_fingerprint(dataset) == digest
    image.write_bytes(b"\x09" * 201)
    changed = dataset_fingerprint(dataset)
    assert changed != digest
    image.rename(dataset / "images" / "9.png")
    assert dataset_fingerprint(dataset) != changed


def test_fingerprint_head_bytes_catch_same_size_edits(dataset: Path) -> None:
    digest = dataset_fingerprint(dataset, max_bytes_per_file=16)
    assert digest != dataset_fingerprint(dataset)
    (dataset / "images" / "1.png").write_bytes(b"\x09" * 200)
    assert dataset_fingerprint(dataset, max_bytes_per_file=16) != digest


def test_fingerprint_files_and_several_roots(dataset: Path) -> None:
    subset = ["images/0.png", "captions.json"]
    digest = dataset_fingerprint(dataset, files=subset)
    assert digest == dataset_fingerprint(dataset, files=[dataset / "captions.json", "images/0.png"])
    assert digest != dataset_fingerprint(dataset)
    (dataset / "images" / "2.png").write_bytes(b"outside the subset")
    assert dataset_fingerprint(dataset, files=subset) == digest

    roots = [dataset / "images", dataset / "captions.json"]
    assert dataset_fingerprint(roots) == dataset_fingerprint(roots[::-1])

    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        dataset_fingerprint(dataset, files=["images/nope.png"])
    with pytest.raises(ValueError, match="not inside"):
        dataset_fingerprint(dataset / "images", files=[dataset / "captions.json"])
    with pytest.raises(FileNotFoundError):
        dataset_fingerprint(dataset / "missing")


def test_fingerprint_goes_into_the_report(dataset: Path, tmp_path: Path) -> None:
    fingerprint = dataset_fingerprint(dataset)
    paths = write_report(_report(dataset={"name": "d", "fingerprint": fingerprint}), tmp_path, plots=False)
    assert json.loads(paths["json"].read_text())["dataset"]["fingerprint"] == fingerprint
    assert fingerprint in paths["markdown"].read_text()
