"""`geovl embed` -> `geovl index build | add | remove | info | search`, end to end through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.cli import main

pytest.importorskip("faiss")
MODEL = ["--model", "random:geovl-micro", "--precision", "fp32"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _scene(path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    data = np.random.default_rng(3).integers(100, 4000, (13, 400, 400), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=400, height=400, count=13, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10)) as dst:
        dst.write(data)
        dst.update_tags(TIFFTAG_DATETIME="2021:06:15 10:00:00")


def test_scene_embed_build_search_with_and_without_filters(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    scene = tmp_path / "S2_scene.tif"
    _scene(scene)
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    summary = _run(capsys, "embed", str(scene), *MODEL, "--chip-size", "64", "--bands", "sentinel2-rgb",
                   "--workers", "0", "-q", "--out", str(emb))
    # 7 x 7 chips of 64 px; the 13 edge chips are 25% inside the scene, under --min-valid 0.5: skipped, listed.
    assert summary["images"] == 36 and summary["failed"] == 13
    manifest = _run(capsys, "index", "build", str(emb), "--out", str(idx), "-q")
    assert manifest["count"] == 36 and manifest["index_type"] == "Flat"
    hits = _run(capsys, "index", "search", str(idx), "a harbour with boats", "-k", "5", "--json")
    assert len(hits) == 5 and hits[0]["score"] >= hits[-1]["score"]
    # A bbox around the north-west corner of the scene keeps only the chips that intersect it.
    bbox = "14.99,36.12,15.01,36.15"
    hits = _run(capsys, "index", "search", str(idx), "fields", "-k", "50", "--bbox", bbox, "--json")
    assert 0 < len(hits) < 36
    assert all(h["metadata"]["lon_min"] <= 15.01 and h["metadata"]["lat_max"] >= 36.12 for h in hits)
    assert _run(capsys, "index", "search", str(idx), "fields", "--start", "2022-01-01", "--json") == []
    assert len(_run(capsys, "index", "search", str(idx), "fields", "--start", "2021-06-01", "--end",
                    "2021-06-30", "-k", "3", "--json")) == 3
    image_hits = _run(capsys, "index", "search", str(idx), "--image", str(scene), "-k", "2", "--json")
    assert len(image_hits) == 2


def test_add_remove_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for folder, n in (("a", 30), ("b", 10)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
        _run(capsys, "embed", str(tmp_path / folder), *MODEL, "--workers", "0", "-q", "--out",
             str(tmp_path / f"emb_{folder}"))
    idx = tmp_path / "idx"
    assert _run(capsys, "index", "build", str(tmp_path / "emb_a"), "--out", str(idx), "-q")["count"] == 30
    # Both folders number their inputs from 0, so the second one's ids collide: refused, nothing changed.
    assert main(["index", "add", str(idx), str(tmp_path / "emb_b"), "-q"]) == 1
    assert "already" in capsys.readouterr().err
    assert _run(capsys, "index", "info", str(idx))["count"] == 30
    after = _run(capsys, "index", "remove", str(idx), "--ids", "0,1,2")
    assert after["count"] == 27
    hits = _run(capsys, "index", "search", str(idx), "anything", "-k", "30", "--json")
    assert len(hits) == 27 and not {h["id"] for h in hits} & {0, 1, 2}


def test_query_with_another_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imgs").mkdir()
    for i in range(5):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    _run(capsys, "embed", str(tmp_path / "imgs"), *MODEL, "--workers", "0", "-q", "--out", str(tmp_path / "e"))
    _run(capsys, "index", "build", str(tmp_path / "e"), "--out", str(tmp_path / "i"), "-q")
    assert main(["index", "search", str(tmp_path / "i"), "x", "--model", "random:geovl-micro-rn"]) == 1
    assert "model" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_eurosat_and_ucm_index_and_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import shared_data

    eurosat, ucm = shared_data("eurosat_rgb"), shared_data("ucm_captions")
    e1, e2 = tmp_path / "eurosat", tmp_path / "ucm"
    _run(capsys, "embed", str(eurosat), *MODEL, "--format", "imagefolder", "--limit", "300", "--workers", "0", "-q",
         "--out", str(e1))
    _run(capsys, "embed", str(ucm / "dataset.json"), *MODEL, "--limit", "200", "--workers", "0", "-q",
         "--out", str(e2))
    for emb in (e1, e2):
        idx = emb.with_name(emb.name + "_idx")
        _run(capsys, "index", "build", str(emb), "--out", str(idx), "-q")
        assert len(_run(capsys, "index", "search", str(idx), "a river", "--json")) == 10
    hits = _run(capsys, "index", "search", str(e1.with_name("eurosat_idx")), "a river", "--where", "label=AnnualCrop",
                "-k", "5", "--json")
    assert len(hits) == 5 and {h["metadata"]["label"] for h in hits} == {"AnnualCrop"}
    hits = _run(capsys, "index", "search", str(e2.with_name("ucm_idx")), "planes", "--where", "split=train",
                "--json")
    assert all(h["metadata"]["split"] == "train" for h in hits) and hits[0]["metadata"]["caption"]
