"""The embedding pipeline: sources, partitions, metadata (GeoParquet), failures, resume after a kill, Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.data.sources import DatasetSource, FolderSource, SceneSource, sources_for
from geovl.index.pipeline import EmbedConfig, read_embeddings, run_embed
from geovl.models import create_backbone
from tests.helpers import kill_run_after

pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def micro():  # type: ignore[no-untyped-def]
    return create_backbone("geovl-micro", seed=0, device="cpu", precision="fp32")


def _images(root: Path, n: int, bad: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(root / f"img_{i:04d}.png")
    for i in range(bad):
        (root / f"img_{3 + 7 * i:04d}_bad.png").write_bytes(b"")  # sorts right after img_0003.png, img_0010.png
    return root


def _scene(path: Path, size: int = 300) -> Path:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    data = np.random.default_rng(1).integers(200, 3000, (4, size, size), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10), nodata=0) as dst:
        dst.write(data)
        dst.update_tags(TIFFTAG_DATETIME="2023:07:01 10:00:00")
    return path


def test_folder_embedding_is_partitioned_with_stable_ids_and_failures(micro, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _images(tmp_path / "imgs", 25, bad=2)
    out = tmp_path / "emb"
    summary = run_embed(micro, [FolderSource([root])], out, EmbedConfig(partition_size=10, workers=0,
                                                                        progress=False, batch_size=4))
    assert (summary.total, summary.embedded, summary.failed, summary.partitions) == (27, 25, 2, 3)
    emb, table, manifest = read_embeddings(out)
    assert manifest["complete"] and manifest["count"] == 25 and manifest["failed"] == 2
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 25 and ids == sorted(ids)
    assert set(range(27)) - set(ids) == {4, 12}  # the two bad files leave gaps where they sort
    paths = table.column("path").to_pylist()
    np.testing.assert_allclose(emb, micro.encode_images(paths), atol=1e-5)
    failures = [json.loads(line) for p in sorted(out.glob("*.failures.jsonl")) for line in p.read_text().splitlines()]
    assert sorted(Path(f["input"]).name for f in failures) == ["img_0003_bad.png", "img_0010_bad.png"]


def test_scene_chips_carry_footprints_and_acquisition_time(micro, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scene = _scene(tmp_path / "s.tif")
    sources = sources_for([scene], chip_size=100)
    assert isinstance(sources[0], SceneSource)
    out = tmp_path / "emb"
    summary = run_embed(micro, sources, out, EmbedConfig(workers=0, progress=False))
    assert summary.embedded == 9  # 3 x 3 chips of 100 px
    table = pq.read_table(out / "part-00000.parquet")
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    row = table.slice(0, 1).to_pylist()[0]
    assert row["chip_id"] == "s_r0_c0" and (row["col_off"], row["row_off"]) == (0, 0)
    assert 14.9 < row["lon_min"] < row["lon_max"] < 15.1 and 36.0 < row["lat_min"] < row["lat_max"] < 36.2
    assert row["acquired"].year == 2023 and row["gsd"] == pytest.approx(10, rel=0.01)
    wkb = row["geometry"]
    assert wkb[:9] == bytes([1, 3, 0, 0, 0, 1, 0, 0, 0]) and len(wkb) == 9 + 4 + 5 * 16  # polygon, 1 ring, 5 pts


def test_dataset_source_keeps_captions_labels_and_splits(micro, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from geovl.data.synthetic import SceneConfig, write_caption_dataset

    write_caption_dataset(tmp_path / "cap", n=12, seed=0, config=SceneConfig(size=48), progress=False)
    out = tmp_path / "emb"
    run_embed(micro, [DatasetSource(tmp_path / "cap" / "dataset.json")], out, EmbedConfig(workers=0, progress=False))
    _, table, _ = read_embeddings(out)
    rows = table.to_pylist()
    assert len(rows) == 12 and all(r["caption"] and r["label"] and r["split"] for r in rows)


def test_resume_refuses_other_inputs_or_model(micro, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _images(tmp_path / "imgs", 6)
    out = tmp_path / "emb"
    run_embed(micro, [FolderSource([root])], out, EmbedConfig(workers=0, progress=False))
    other = create_backbone("geovl-micro-rn", device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="embedded with model"):
        run_embed(other, [FolderSource([root])], out, EmbedConfig(workers=0, progress=False))
    with pytest.raises(ValueError, match="other inputs"):
        run_embed(micro, [FolderSource([root, root])], out, EmbedConfig(workers=0, progress=False))


@pytest.mark.slow  # three CLI subprocesses (each imports torch): 30-60 s
def test_killed_embed_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    root = _images(tmp_path / "imgs", 240)
    out, ref = tmp_path / "emb", tmp_path / "ref"
    cmd = [sys.executable, "-m", "geovl", "embed", str(root), "--model", "random:geovl-micro", "--precision",
           "fp32", "--partition-size", "20", "--batch-size", "4", "--workers", "0", "-q", "--out"]
    killed = kill_run_after([*cmd, str(out)], out, 2, timeout=120)
    assert not killed["complete"] and 2 <= len(killed["partitions"]) < 12
    resumed = subprocess.run([*cmd, str(out)], capture_output=True, text=True, check=True)
    summary = json.loads(resumed.stdout)
    assert summary["resumed"] >= 40 and summary["resumed"] + summary["embedded_now"] == 240
    subprocess.run([*cmd, str(ref)], capture_output=True, check=True)
    emb, table, manifest = read_embeddings(out)
    ref_emb, ref_table, _ = read_embeddings(ref)
    assert manifest["complete"] and manifest["count"] == 240
    assert table.column("id").to_pylist() == list(range(240)) == ref_table.column("id").to_pylist()
    np.testing.assert_allclose(emb, ref_emb, atol=1e-6)
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow  # starts a Ray cluster of worker processes: 20-30 s
def test_ray_runner_matches_the_local_runner(micro, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray")
    from geovl.index.ray_runner import run_embed_ray

    root = _images(tmp_path / "imgs", 30, bad=1)
    config = EmbedConfig(partition_size=8, workers=0, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        summary = run_embed_ray("random:geovl-micro", [FolderSource([root])], tmp_path / "ray", config,
                                device="cpu", precision="fp32", num_actors=2)
    finally:
        ray.shutdown()
    assert summary.embedded == 30 and summary.failed == 1 and summary.partitions == 4
    run_embed(micro, [FolderSource([root])], tmp_path / "local", config)
    emb_r, tab_r, man_r = read_embeddings(tmp_path / "ray")
    emb_l, tab_l, _ = read_embeddings(tmp_path / "local")
    assert man_r["complete"] and tab_r.column("id").to_pylist() == tab_l.column("id").to_pylist()
    np.testing.assert_allclose(emb_r, emb_l, atol=1e-5)


def test_default_decode_workers_by_device_and_cores() -> None:
    from geovl.index.pipeline import EmbedConfig
    from geovl.tasks.embedding import default_decode_workers

    assert default_decode_workers("cpu", cores=2) == 0  # the model's threads hold every core
    assert default_decode_workers("cpu", cores=4) == 0
    assert default_decode_workers("cpu", cores=16) == 15
    assert default_decode_workers("cuda", cores=2) == 1  # decoding overlaps the GPU
    assert default_decode_workers("cuda", cores=16) == 15
    assert EmbedConfig(workers=3).resolved_workers("cpu") == 3  # an explicit count wins
