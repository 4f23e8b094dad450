"""The `geovl` command line: models, embed (with bad files and GeoTIFFs in the folder), errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.cli import main
from geovl.models import create_backbone


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / f"a{i}.jpg")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "sub" / "b.png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "sub" / "junk.png").write_bytes(b"this is not a png")
    (root / "notes.txt").write_text("not an image, ignored")
    return root


def test_models_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in data["checkpoints"]}
    assert {"remoteclip-vit-b-32", "georsclip-vit-h-14", "skyclip-vit-l-14-top30pct", "git-rsclip"} <= names
    local = {row["name"]: row["local"] for row in data["checkpoints"]}
    assert local.pop("geovl-rs-small") is not None and local.pop("geovl-rs-tiny") is not None  # bundled
    assert local.pop("geovl-caption-small") is not None and local.pop("geovl-change-small") is not None
    assert local.pop("geovl-gen-small") is not None
    assert all(path is None for path in local.values())
    assert "geovl-tiny" in data["architectures"]
    assert main(["models"]) == 0
    assert "available locally" in capsys.readouterr().out


def test_embed_skips_bad_files_and_writes_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from geovl.index.pipeline import read_embeddings

    root = _folder(tmp_path)
    out = tmp_path / "out"
    code = main(["embed", str(root), "--model", "random:geovl-micro", "--precision", "fp32", "--out", str(out),
                 "--workers", "0", "--batch-size", "4", "-q"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images"] == 6 and summary["failed"] == 2 and summary["dim"] == 32
    emb, table, manifest = read_embeddings(out)
    files = table.column("path").to_pylist()
    assert emb.shape == (6, 32) and len(files) == 6
    failures = [json.loads(line) for p in out.glob("*.failures.jsonl") for line in p.read_text().splitlines()]
    assert sorted(Path(f["input"]).name for f in failures) == ["empty.jpg", "junk.png"]
    assert manifest["count"] == 6 and manifest["model"]["name"] == "random:geovl-micro"
    # Rows line up with the metadata: each row is that file's embedding.
    ref = create_backbone("geovl-micro", precision="fp32").encode_images(files)
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_embed_reads_16bit_geotiffs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    path = tmp_path / "scene.tif"
    data = np.random.default_rng(1).integers(0, 4000, (4, 64, 64), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10)) as dst:
        dst.write(data)
    assert main(["embed", str(path), "--model", "random:geovl-micro", "--workers", "0", "-q",
                 "--out", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1


def test_errors_are_one_line_with_exit_code_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "o")]
    assert main(["embed", str(tmp_path / "missing"), "--model", "random:geovl-micro", "-q", *out]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["embed", str(tmp_path), "--model", "remoteclip-vit-b-32", "-q", *out]) == 1
    assert "RemoteCLIP-ViT-B-32.pt" in capsys.readouterr().err
    assert main(["embed", str(tmp_path), "--model", "nonsense-model", "-q", *out]) == 1
    assert "unknown checkpoint" in capsys.readouterr().err
    assert main([]) == 2


def _write_scene(path: Path, size: int = 200) -> None:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    data = np.random.default_rng(2).integers(100, 3000, (13, size, size), dtype=np.uint16)
    data[:, :40, :40] = 0  # a nodata corner
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=13, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10)) as dst:
        dst.write(data)
        dst.update_tags(TIFFTAG_DATETIME="2024:05:17 10:30:00")


def test_chips_writes_files_and_a_footprint_index_and_resumes(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    scene = tmp_path / "s2.tif"
    _write_scene(scene)
    out = tmp_path / "chips"
    args = ["chips", str(scene), "--out", str(out), "--size", "64", "--overlap", "8", "--bands", "sentinel2-rgb",
            "--format", "tif", "-q"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["written"] == 16 and first["existing"] == 0  # 4 x 4 grid at stride 56 over 200 px
    index = json.loads((out / "chips.geojson").read_text())
    assert len(index["features"]) == 16
    feat = index["features"][0]
    assert feat["geometry"]["type"] == "Polygon" and len(feat["geometry"]["coordinates"][0]) == 5
    lon, lat = feat["geometry"]["coordinates"][0][0]
    assert 14.9 < lon < 15.1 and 36.0 < lat < 36.2  # UTM 33N, x=500 km is the 15 E meridian
    assert feat["properties"]["valid_fraction"] < 1.0  # the nodata corner
    (out / feat["properties"]["file"]).unlink()
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["written"] == 1 and again["existing"] == 15


def test_data_inspects_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "classes"
    for cls in ("Forest", "River"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / cls / f"{cls}_{i}.jpg")
    assert main(["data", str(root)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "imagefolder" and info["samples"] == 4 and info["classes"] == 2


@pytest.mark.parametrize(("kind", "expected_format"),
                         [("captions", "karpathy"), ("classification", "imagefolder"), ("change", "levircc")])
def test_synth_writes_datasets_the_readers_open(kind: str, expected_format: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / kind
    assert main(["synth", kind, str(out), "--n", "3", "--size", "64"]) == 0
    capsys.readouterr()
    assert main(["data", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == expected_format
    assert info["samples"] == (3 * 15 if kind == "classification" else 3)


def test_models_shows_weights_placed_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    from geovl.models.weights import checkpoint_dir

    checkpoint_dir().mkdir(parents=True, exist_ok=True)
    (checkpoint_dir() / "RemoteCLIP-RN50.pt").write_bytes(b"placeholder: only its presence is listed")
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["checkpoints"]}
    assert rows["remoteclip-rn50"]["local"] == str(checkpoint_dir() / "RemoteCLIP-RN50.pt")
    assert rows["remoteclip-vit-b-32"]["local"] is None


@pytest.mark.realdata
def test_embed_real_eurosat_and_ucm_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import shared_data

    for name in ("eurosat_rgb", "ucm_captions"):
        root = shared_data(name)
        assert main(["embed", str(root), "--model", "random:geovl-micro", "--limit", "40", "--workers", "0", "-q",
                     "--out", str(tmp_path / name)]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["images"] == 40 and summary["failed"] == 0
