"""The generation protocol (`geovl eval generation --generator`), end to end on a tiny random generator and tiny
real sets the tests write: every figure with its real reference, the sample grid, determinism, the GSD probe."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from geovl.cli import main
from geovl.data.common import holdout_member
from geovl.eval.generation_protocol import GRID_FILE, eval_generator, sample_grid
from geovl.eval.gsd_probe import (
    GsdSource,
    fit_gsd_probe,
    fit_gsd_probe_embeddings,
    order_accuracy,
    probe_views,
    resample_to_gsd,
    views_at_gsd,
)
from geovl.eval.report import EvalReport
from geovl.eval.tasks import eval_generation
from geovl.models.generator import load_generator
from tests.generation_fixtures import TinyGenerator, make_tiny_generator

#: EuroSAT classes and the colour of their tiles.
COLOURS = {"Forest": (30, 110, 40), "River": (40, 80, 170), "SeaLake": (20, 40, 110)}
HELD_OUT, COMPLEMENT = 4, 5  # images per class on each side of the 20 % hold-out
FIGURES = ("cls_oa", "cls_oa_real", "clip_score", "clip_score_real", "fd_clip", "fd_clip_real_floor",
           "resolution_order_accuracy", "resolution_order_accuracy_real", "resolution_gap", "resolution_gap_real",
           "resolution_gap_conditioned", "resolution_pred_log2_coarse", "resolution_pred_log2_fine",
           "resolution_pred_log2_coarse_real", "resolution_pred_log2_fine_real", "gsd_probe_r2",
           "gsd_probe_mae_log2", "generated_images")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyGenerator:
    return make_tiny_generator(tmp_path_factory.mktemp("protocol"))


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A scene whose GSD shows: a flat colour with per-pixel noise, which downsampling averages away."""
    base = rng.integers(60, 190, 3)
    image = base + rng.normal(0, 50, (size, size, 1)) * rng.uniform(0.7, 1.3, 3)
    return image.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def real_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An EuroSAT-like ImageFolder of 64 px coloured tiles: per class, 4 held-out and 5 complement images."""
    root = tmp_path_factory.mktemp("eurosat")
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir()
        want = {True: HELD_OUT, False: COMPLEMENT}
        i = 0
        while any(want.values()):
            i += 1
            held = holdout_member(f"{name}/{name}_{i}.png", 0.2)
            if want[held]:
                want[held] -= 1
                tile = np.asarray(colour) + rng.normal(0, 12, (64, 64, 3))
                Image.fromarray(tile.clip(0, 255).astype(np.uint8)).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="module")
def probe_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-class ImageFolder of 128 px textured scenes, all taken to be at 0.25 m."""
    root = tmp_path_factory.mktemp("probe")
    (root / "scenes").mkdir()
    rng = np.random.default_rng(1)
    for i in range(24):
        Image.fromarray(_texture(rng, 128)).save(root / "scenes" / f"{i}.png")
    return root


def _run(tiny: TinyGenerator, real: Path, probe: Path, **kwargs: Any) -> EvalReport:
    generator = load_generator(tiny.folder, backbone=tiny.backbone, device="cpu")
    options: dict[str, Any] = {"per_class": 2, "steps": 2, "probe_gsd": 0.25, "progress": False, "batch_size": 16}
    return eval_generator(generator, real, probe_data=probe, **(options | kwargs))


# ------------------------------------------------------------------------------------------- end to end


def test_protocol_reports_every_figure_next_to_its_real_reference(tiny: TinyGenerator, real_set: Path,
                                                                   probe_set: Path, tmp_path: Path) -> None:
    report = _run(tiny, real_set, probe_set, out=tmp_path, save_images=True)
    figures = report.figures
    assert set(FIGURES) <= set(figures)
    assert all(v is not None and math.isfinite(v) for v in figures.values()), figures
    for name in ("cls_oa", "cls_oa_real", "resolution_order_accuracy", "resolution_order_accuracy_real"):
        assert 0 <= figures[name] <= 100  # type: ignore[operator]
    for name in ("clip_score", "clip_score_real"):
        assert 0 <= figures[name] <= 100  # type: ignore[operator]
    assert figures["fd_clip"] >= 0 and figures["fd_clip_real_floor"] >= 0  # type: ignore[operator]
    assert figures["resolution_gap_conditioned"] == pytest.approx(math.log2(10 / 0.5))
    # 3 classes x 2 seeds at 10 m (also the coarse images), the same at 0.5 m, and one grid image per class with
    # no resolution condition
    assert figures["generated_images"] == 6 + 6 + 3
    gap = figures["resolution_pred_log2_coarse"] - figures["resolution_pred_log2_fine"]  # type: ignore[operator]
    assert figures["resolution_gap"] == pytest.approx(gap)

    assert set(report.details["classes"]) == set(COLOURS) == set(report.details["per_class"])
    assert report.details["resolution"]["real_views"] == {"coarse": 6, "fine": 6}
    assert report.settings["steps"] == 2 and report.settings["per_class"] == 2
    assert report.settings["resolution_gsds"] == [10.0, 0.5] and report.settings["generator"] == str(tiny.folder)
    assert report.dataset["counts"]["real_sample"] == 6 and report.dataset["counts"]["reference"] == 6
    assert "resolution_order_accuracy" in report.protocol and "held out" in report.dataset["split"]

    with Image.open(tmp_path / GRID_FILE) as grid:  # 3 classes x (10 m, 0.5 m, none) of 32 px tiles
        assert grid.size == (3 * 32, 3 * 32)
        cells = np.asarray(grid.convert("RGB"))
    first = report.details["classes"]["Forest"]["prompt"]
    assert report.details["grid"]["columns"] == [10.0, 0.5, None]
    # the grid's first row holds the Forest prompt's seed-0 images; the saved manifest names the same images
    rows = [json.loads(line) for line in (tmp_path / "generated.jsonl").read_text().splitlines()]
    assert len(rows) == 15 and {r["label"] for r in rows if r["gsd"] == 10.0} == set(COLOURS)
    for col, gsd in enumerate((10.0, 0.5, None)):
        row = next(r for r in rows if r["prompt"] == first and r["gsd"] == gsd and r["seed"] == 0)
        with Image.open(tmp_path / row["image"]) as image:
            assert np.array_equal(np.asarray(image.convert("RGB")), cells[:32, col * 32:(col + 1) * 32])
    # the saved images are a manifest the manifest mode scores
    assert eval_generation(tiny.backbone, tmp_path / "generated.jsonl", progress=False).figures["images"] == 15


def test_protocol_is_deterministic(tiny: TinyGenerator, real_set: Path, probe_set: Path) -> None:
    first = _run(tiny, real_set, probe_set, resolution_gsds=(0.5, 40.0))
    second = _run(tiny, real_set, probe_set, resolution_gsds=(0.5, 40.0))
    assert first.figures == second.figures
    assert first.details["grid"]["columns"] == [40.0, 10.0, 0.5, None]
    assert first.figures["resolution_gap_conditioned"] == pytest.approx(math.log2(80))
    # no real image gives a 32 px view at 40 m (the 64 px tiles at 10 m would shrink to 16 px)
    assert first.details["resolution"]["real_missing"].startswith("no held-out real image")
    assert first.figures["resolution_order_accuracy_real"] is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"per_class": 0}, "per_class must be a positive number"),
    ({"resolution_gsds": (10.0,)}, "resolution_gsds must be two different GSDs"),
    ({"resolution_gsds": (2.0, 2.0)}, "resolution_gsds must be two different GSDs"),
    ({"templates": ("no slot",)}, "templates must be a list of prompt templates"),
    ({"gsd": -1.0}, "gsd must be a positive number"),
    ({"sampler": "plms"}, "unknown sampler 'plms'"),
    ({"per_class": 5}, "have too few held-out images for per_class 5"),
    ({"resolution_prompts": []}, "resolution_prompts must be a non-empty list"),
    ({"probe_factors": (0.5, 2)}, "probe_factors must be downsampling factors >= 1"),
])
def test_bad_inputs_are_named(tiny: TinyGenerator, real_set: Path, probe_set: Path, kwargs: dict[str, Any],
                              message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _run(tiny, real_set, probe_set, **kwargs)


# ------------------------------------------------------------------------------------------- GSD probe


def test_gsd_probe_orders_held_out_scenes_by_their_gsd(tiny: TinyGenerator) -> None:
    rng = np.random.default_rng(0)
    sources = [GsdSource(_texture(rng, 128), 0.25, f"scene{i}") for i in range(40)]
    fit, held = sources[:30], sources[30:]
    probe = fit_gsd_probe(tiny.backbone, probe_views(fit, (1, 2, 4, 8), 32), seed=0)
    quality = probe.quality
    assert quality.views_per_gsd == {"0.25": 30, "0.5": 30, "1": 30}  # x8 gives 16 px, below a tile: not made
    assert quality.r2 is not None and quality.r2 > 0
    means = [quality.test_mean_log2[k] for k in ("0.25", "0.5", "1")]
    assert means == sorted(means)
    coarse = probe.predict_images(tiny.backbone, [v.image for v in views_at_gsd(held, 1.0, 32)])
    fine = probe.predict_images(tiny.backbone, [v.image for v in views_at_gsd(held, 0.25, 32)])
    assert order_accuracy(coarse, fine) >= 0.8  # the same scene, 4x coarser, predicted coarser (chance: 0.5)


def test_probe_regression_and_order_accuracy_rules() -> None:
    rng = np.random.default_rng(3)
    gsds = np.repeat([0.5, 1.0, 2.0, 4.0], 30)
    emb = rng.normal(size=(120, 8))
    emb[:, 0] = np.log2(gsds) + rng.normal(0, 0.01, 120)  # one coordinate carries log2(GSD)
    groups = [f"s{i % 40}" for i in range(120)]
    probe = fit_gsd_probe_embeddings(emb, gsds.tolist(), groups, seed=0)
    assert probe.quality.r2 is not None and probe.quality.r2 > 0.99 and probe.quality.mae_log2 < 0.05
    assert probe.quality.test_scenes == 10 and probe.quality.test_views == 30
    assert probe.predict(emb[:1]).shape == (1,)
    assert order_accuracy([2, 2, 1], [1, 2, 3]) == pytest.approx((1 + 0.5 + 0) / 3)
    assert order_accuracy([3, 1], [2], paired=False) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at 2 or more GSDs"):
        fit_gsd_probe_embeddings(emb, [1.0] * 120, groups)
    with pytest.raises(ValueError, match="at least 2 scenes"):
        fit_gsd_probe_embeddings(emb, gsds.tolist(), ["one"] * 120)


def test_views_are_resampled_never_enlarged() -> None:
    image = np.zeros((100, 120, 3), np.uint8)
    image[:, 60:] = 255  # right half white
    assert resample_to_gsd(image, 1.0, 0.5, 32) is None  # finer than the image: would enlarge
    assert resample_to_gsd(image, 1.0, 4.0, 32) is None  # 25 x 30 px: below a tile
    view = resample_to_gsd(image, 1.0, 2.0, 32)  # 50 x 60 px, centred tile
    assert view is not None and view.shape == (32, 32, 3)
    assert view[:, :10].max() < 30 and view[:, -10:].min() > 225
    sources = [GsdSource(image, 1.0, "a"), GsdSource(image, 3.0, "b")]
    assert [v.group for v in views_at_gsd(sources, 2.0, 32)] == ["a"]  # b is coarser than 2 m
    with pytest.raises(ValueError, match="factors must be numbers >= 1"):
        probe_views(sources, (0.5,), 32)


def test_sample_grid_places_each_image_in_its_cell() -> None:
    colours = [[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (9, 9, 9)]]
    rows = [[Image.new("RGB", (8, 8), c) for c in row] for row in colours]
    rows[1][1] = Image.new("RGB", (16, 16), (9, 9, 9))  # resized to a tile
    grid = np.asarray(sample_grid(rows, 8))
    assert grid.shape == (16, 16, 3)
    for r in range(2):
        for c in range(2):
            assert tuple(grid[r * 8 + 4, c * 8 + 4]) == colours[r][c]
    with pytest.raises(ValueError, match="every grid row needs 2 images"):
        sample_grid([rows[0], rows[1][:1]], 8)


# ------------------------------------------------------------------------------------------- CLI


def test_cli_runs_the_protocol_and_writes_the_report(tiny: TinyGenerator, real_set: Path, probe_set: Path,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["eval", "generation", "--generator", str(tiny.folder), "--real", str(real_set), "--probe-data",
                 str(probe_set), "--probe-gsd", "0.25", "--per-class", "2", "--steps", "2", "--seed", "1",
                 "--resolution-gsds", "10,1", "--device", "cpu", "-q", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["task"] == "generation" and set(FIGURES) <= set(printed["figures"])
    assert printed["figures"]["resolution_gap_conditioned"] == pytest.approx(math.log2(10))
    saved = json.loads((out / "generation.json").read_text())
    assert saved["settings"]["seed"] == 1 and saved["settings"]["resolution_gsds"] == [10.0, 1.0]
    assert (out / GRID_FILE).is_file() and (out / "generation.md").is_file()
    assert "cls_oa_real" in (out / "generation.md").read_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["--generator", "no-such-generator"], "unknown generator 'no-such-generator'"),
    ([], "give a MANIFEST of generated images to score, or --generator NAME"),
    (["m.jsonl", "--per-class", "2"], "--per-class apply with --generator only"),
    (["--generator", "x", "--model", "random:geovl-micro"], "--model / --arch choose the scoring backbone"),
    (["--generator", "{tiny}", "--per-class", "0", "--probe-data", "."], "per_class must be a positive number"),
    (["--generator", "{tiny}", "--resolution-gsds", "10"], "resolution_gsds must be two different GSDs"),
    (["--generator", "{tiny}", "--resolution-gsds", "10,x"], "--resolution-gsds must be COARSE,FINE"),
])
def test_cli_bad_inputs_are_one_line(tiny: TinyGenerator, real_set: Path, argv: list[str], message: str,
                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("{tiny}", str(tiny.folder)) for a in argv]
    code = main(["eval", "generation", *argv, "--real", str(real_set), "--device", "cpu", "-q", "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("geovl eval: error: ") and message in err, err
    assert not (tmp_path / "out").exists()
