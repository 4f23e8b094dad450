"""Batch captioning runs: rows, failures, resume after SIGKILL (through the CLI), the Ray runner, JSONL shards, list
files, and ``geovl eval caption`` on a run folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.data.sources import FolderSource, sources_for
from geovl.eval.tasks import eval_captions
from geovl.models.captioner import load_captioner
from geovl.models.decoding import DecodingConfig
from geovl.tasks.captioning import CaptioningPipeline
from geovl.tasks.captioning.batch import CaptionRunConfig, read_captions, run_captions
from tests.caption_fixtures import TinyCaptioner, make_tiny_captioner
from tests.helpers import kill_run_after


def images(root: Path, n: int, *, empty: int | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / f"img_{i:03d}.png"
        if i == empty:
            path.write_bytes(b"")
        else:
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyCaptioner:
    return make_tiny_captioner(tmp_path_factory.mktemp("captioner"))


def quiet(**kw: object) -> CaptionRunConfig:
    return CaptionRunConfig(workers=0, progress=False, **kw)  # type: ignore[arg-type]


def test_a_run_captions_every_readable_input_once_and_records_the_bad_one(tiny: TinyCaptioner,
                                                                          tmp_path: Path) -> None:
    root = images(tmp_path / "imgs", 8, empty=3)
    model = load_captioner(tiny.folder, backbone=tiny.backbone)
    summary = run_captions(model, [FolderSource([root])], tmp_path / "caps", quiet(partition_size=3))
    assert (summary.captioned, summary.failed, summary.partitions) == (7, 1, 3)
    assert "img_003.png" in summary.failures[0][0]
    rows = read_captions(tmp_path / "caps")
    assert [r["id"] for r in rows] == [0, 1, 2, 4, 5, 6, 7]
    direct = CaptioningPipeline(model, workers=0)([root / f"img_{i:03d}.png" for i in (0, 1, 2, 4, 5, 6, 7)])
    assert [r["caption"] for r in rows] == direct.captions
    row = rows[0]
    assert row["model"] == str(tiny.folder) and json.loads(row["decoding"])["method"] == "beam"
    assert row["path"].endswith("img_000.png") and row["captioned_at"]
    again = run_captions(model, [FolderSource([root])], tmp_path / "caps", quiet(partition_size=3))
    assert (again.captioned, again.resumed) == (0, 7)
    with pytest.raises(ValueError, match="other decoding"):
        run_captions(model, [FolderSource([root])], tmp_path / "caps", quiet(partition_size=3),
                     DecodingConfig(method="greedy"))
    with pytest.raises(ValueError, match="is a file"):
        run_captions(model, [FolderSource([root])], root / "img_000.png", quiet())


def test_jsonl_shards_and_list_files(tiny: TinyCaptioner, tmp_path: Path) -> None:
    root = images(tmp_path / "imgs", 4)
    listing = tmp_path / "inputs.txt"
    listing.write_text("# two images and a missing one\nimgs/img_002.png\n\nimgs/img_000.png\nimgs/gone.png\n")
    model = load_captioner(tiny.folder, backbone=tiny.backbone)
    summary = run_captions(model, sources_for([listing]), tmp_path / "caps", quiet(format="jsonl"))
    assert (summary.captioned, summary.failed) == (2, 1)
    rows = read_captions(tmp_path / "caps")
    assert [Path(r["path"]).name for r in rows] == ["img_002.png", "img_000.png"]
    assert (tmp_path / "caps" / "part-00000.jsonl").is_file()
    assert root.is_dir()


def test_eval_caption_scores_a_run_folder_on_one_split(tiny: TinyCaptioner, tmp_path: Path) -> None:
    from geovl.data.synthetic import SceneConfig, write_caption_dataset

    dataset = write_caption_dataset(tmp_path / "set", n=12, seed=0, config=SceneConfig(size=48), progress=False)
    model = load_captioner(tiny.folder, backbone=tiny.backbone)
    run_captions(model, sources_for([dataset.parent / "images"]), tmp_path / "caps", quiet())
    report = eval_captions(tmp_path / "caps", dataset, split="test", meteor=False)
    tests = sum(1 for im in json.loads(dataset.read_text())["images"] if im["split"] == "test")
    assert report.figures["images"] == tests and "CIDEr-D" in report.figures


@pytest.mark.slow  # two CLI subprocesses (each imports torch): 30-60 s
def test_a_killed_caption_run_resumes_with_every_input_exactly_once(tiny: TinyCaptioner, tmp_path: Path) -> None:
    root = images(tmp_path / "imgs", 120, empty=7)
    out = tmp_path / "caps"
    cmd = [sys.executable, "-m", "geovl", "caption", str(root), "--model", str(tiny.folder), "--device", "cpu",
           "--precision", "fp32", "--partition-size", "6", "--batch-size", "2", "--workers", "0",
           "--decoding", "beam", "--beam-size", "5", "-q", "--out", str(out)]
    killed = kill_run_after(cmd, out, 2)
    assert not killed["complete"] and 2 <= len(killed["partitions"]) < 20
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = json.loads(resumed.stdout)
    assert summary["resumed"] >= 11 and summary["resumed"] + summary["captioned_now"] == 119
    rows = read_captions(out)
    ids = [r["id"] for r in rows]
    assert ids == [i for i in range(120) if i != 7]
    assert json.loads((out / "manifest.json").read_text())["complete"]
    failures = [json.loads(ln) for f in out.glob("*.failures.jsonl") for ln in f.read_text().splitlines()]
    assert len(failures) == 1 and "img_007.png" in failures[0]["input"]
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow  # starts a Ray cluster of worker processes: 20-40 s
def test_ray_runner_gives_the_local_runners_rows(tiny: TinyCaptioner, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from geovl.tasks.captioning.ray_runner import run_captions_ray

    root = images(tmp_path / "imgs", 14, empty=2)
    config = quiet(partition_size=5)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        summary = run_captions_ray(str(tiny.folder), [FolderSource([root])], tmp_path / "ray", config,
                                   device="cpu", precision="fp32", num_actors=2)
    finally:
        ray.shutdown()
    assert (summary.captioned, summary.failed, summary.partitions) == (13, 1, 3)
    run_captions(load_captioner(tiny.folder, backbone=tiny.backbone), [FolderSource([root])], tmp_path / "local",
                 config)
    keep = ("id", "path", "caption", "model", "decoding")
    ray_rows = [{k: r[k] for k in keep} for r in read_captions(tmp_path / "ray")]
    local_rows = [{k: r[k] for k in keep} for r in read_captions(tmp_path / "local")]
    assert ray_rows == local_rows
