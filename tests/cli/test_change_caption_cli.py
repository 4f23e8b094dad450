"""``geovl change-caption``: two plain images, two GeoTIFFs (aligned, chipped, a heat-map GeoTIFF mosaic), a pairs
folder run (resumable, also after SIGKILL), argument errors and missing weights."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.cli import main
from geovl.models import change_captioner
from geovl.models.registry import Bundled
from geovl.tasks.change_captioning.batch import read_change_captions
from tests.change_fixtures import TinyChangeCaptioner, make_tiny_change_captioner
from tests.helpers import kill_run_after, shared_data

UTM = "EPSG:32633"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyChangeCaptioner:
    return make_tiny_change_captioner(tmp_path_factory.mktemp("change"))


def model_args(tiny: TinyChangeCaptioner) -> list[str]:
    return ["--model", str(tiny.folder), "--device", "cpu", "--precision", "fp32", "--workers", "0"]


def two_images(tmp_path: Path, size: tuple[int, int] = (48, 40)) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name in ("before.png", "after.png"):
        paths.append(tmp_path / name)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(paths[-1])
    return paths[0], paths[1]


def geotiff_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A 64 x 80 UTM before scene and the same ground on a grid 16 pixels east (the after scene)."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    ground = np.random.default_rng(3).integers(0, 256, (3, 64, 96), dtype=np.uint8)
    paths = []
    for name, col in (("before.tif", 0), ("after.tif", 16)):
        paths.append(tmp_path / name)
        with rasterio.open(paths[-1], "w", driver="GTiff", width=80, height=64, count=3, dtype="uint8", crs=UTM,
                           transform=from_origin(500000 + 10 * col, 4000000, 10, 10)) as dst:
            dst.write(ground[:, :, col:col + 80])
    return paths[0], paths[1]


def test_two_images_print_a_caption_and_a_verdict(tiny: TinyChangeCaptioner, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    before, after = two_images(tmp_path)
    assert main(["change-caption", str(before), str(after), *model_args(tiny), "--threshold", "0"]) == 0
    caption, verdict = capsys.readouterr().out.strip().splitlines()
    assert verdict.startswith("changed (P(changed) 0.") and "threshold 0.000" in verdict
    assert caption and caption != change_captioner.NO_CHANGE_CAPTION
    heat, rows = tmp_path / "heat.png", tmp_path / "rows.jsonl"
    assert main(["change-caption", str(before), str(after), *model_args(tiny), "--threshold", "1", "--json",
                 "--heatmap", str(heat), "--output", str(rows)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changed"] is False and data["caption"] == change_captioner.NO_CHANGE_CAPTION
    assert data["grid"] == [4, 4] and len(data["heatmap"]) == 16 and data["threshold"] == 1.0
    assert data["heatmap_file"] == str(heat)
    assert Image.open(heat).size == (48, 40)  # drawn over the after image, at its size
    assert json.loads(rows.read_text()) == data


def test_two_geotiffs_are_aligned_chipped_and_mapped(tiny: TinyChangeCaptioner, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rasterio = pytest.importorskip("rasterio")
    before, after = geotiff_pair(tmp_path)
    heat = tmp_path / "out" / "heat.tif"
    args = ["change-caption", str(before), str(after), *model_args(tiny), "--json", "--heatmap", str(heat),
            "--output", str(tmp_path / "chips.parquet")]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reprojected"] and data["crs"] == UTM and data["shape"] == [64, 80] and data["grid"] == [2, 3]
    chips = {c["chip_id"]: c for c in data["chips"]}
    assert sorted(chips) == ["r0_c0", "r0_c1", "r0_c2", "r1_c0", "r1_c1", "r1_c2"]
    assert chips["r1_c2"]["window"] == [48, 32, 32, 32]  # the last column is shifted back to the scene edge
    assert chips["r1_c2"]["transform"] == [10.0, 0.0, 500480.0, 0.0, -10.0, 3999680.0]
    with rasterio.open(heat) as ds:
        values = ds.read(1)
        assert ds.crs.to_string() == UTM and ds.shape == (64, 80) and ds.dtypes[0] == "float32"
        assert tuple(ds.transform)[:6] == (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
    # the after scene covers before columns 16.. only: no heat where it is missing
    assert np.isnan(values[:, :16]).all() and not np.isnan(values[:, 16:]).any()
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "chips.parquet")
    assert table.num_rows == 6 and b"geo" in table.schema.metadata and "geometry" in table.column_names
    assert main(["change-caption", str(before), str(after), *model_args(tiny)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 7 and lines[0].startswith("r0_c0  ") and "chips changed (2 x 3 grid" in lines[-1]
    assert main(["change-caption", str(before), str(after), *model_args(tiny), "--plain", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["grid"] == [4, 4]  # one pair, no chips


def test_user_errors_are_one_line(tiny: TinyChangeCaptioner, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    before, after = two_images(tmp_path)
    geo_before, _ = geotiff_pair(tmp_path)
    cases = [
        (["change-caption", str(before)], "give two images"),
        (["change-caption", str(before), str(after), "--pairs", str(tmp_path)], "not both"),
        (["change-caption", "--pairs", str(tmp_path)], "--pairs needs --output"),
        (["change-caption", str(before), str(tmp_path / "gone.png")], "no such file"),
        (["change-caption", str(geo_before), str(after)], "is georeferenced but"),
        (["change-caption", str(before), str(after), "--heatmap", str(tmp_path / "h.tif")], "no georeference"),
        (["change-caption", str(before), str(after), "--threshold", "2"], "threshold must be"),
        (["change-caption", "--pairs", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")],
         "no such pairs folder"),
    ]
    for argv, message in cases:
        assert main([*argv, *model_args(tiny)]) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("geovl change-caption: error:") and message in err[-1], (argv, err)


def test_missing_weights_name_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # the default model as if its bundled folder were absent (it may be present in a release)
    real = change_captioner.fetch_checkpoint
    monkeypatch.setattr(change_captioner, "fetch_checkpoint",
                        lambda spec: real(dataclasses.replace(spec, source=Bundled("geovl-change-absent"))))
    before, after = two_images(tmp_path)
    assert main(["change-caption", str(before), str(after)]) == 1
    err = capsys.readouterr().err
    assert "geovl change-caption: error: Checkpoint 'geovl-change-small'" in err and "not on this machine" in err


def test_a_pairs_folder_run_prints_each_pair_and_resumes(tiny: TinyChangeCaptioner, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = shared_data("change_samples/levir_cd_bitcd")
    out = tmp_path / "levir-cd-sample"
    argv = ["change-caption", "--pairs", str(root), "--output", str(out), *model_args(tiny), "-q"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = sorted(p.name for p in (root / "A").glob("*.png") if (root / "B" / p.name).is_file())
    assert [ln.split()[0] for ln in lines[:-1]] == names
    assert all(ln.split()[1] in ("changed", "unchanged") and "% changed)" in ln for ln in lines[:-1])
    assert lines[-1].startswith(f"{len(names)} pairs: ") and str(out) in lines[-1]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["pairs"], report["described_now"], report["resumed"]) == (len(names), 0, len(names))
    assert report["changed"] + report["unchanged"] == len(names)
    assert len(read_change_captions(out)) == len(names)


@pytest.mark.slow  # two CLI subprocesses (each imports torch): 30-60 s
def test_a_killed_pairs_run_resumes_with_every_pair_exactly_once(tiny: TinyChangeCaptioner, tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    rng = np.random.default_rng(0)
    for side in ("A", "B"):
        (root / side).mkdir(parents=True)
        for i in range(60):
            path = root / side / f"p{i:03d}.png"
            if side == "A" and i == 7:
                path.write_bytes(b"")
            else:
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "geovl", "change-caption", "--pairs", str(root), "--output", str(out),
           *model_args(tiny), "--partition-size", "4", "--batch-size", "2", "--beam-size", "5", "-q", "--json"]
    killed = kill_run_after(cmd, out, 2)
    assert not killed["complete"] and 2 <= len(killed["partitions"]) < 15
    resumed = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert resumed["resumed"] >= 7 and resumed["resumed"] + resumed["described_now"] == 59
    assert [r["id"] for r in read_change_captions(out)] == [i for i in range(60) if i != 7]
    failures = [json.loads(ln) for f in out.glob("*.failures.jsonl") for ln in f.read_text().splitlines()]
    assert failures == [{"input": "p007.png", "error": failures[0]["error"]}]
    assert failures[0]["error"].startswith("before image:") and not list(out.glob(".*.tmp*"))
