"""Batch change captioning of pairs folders: layouts, unpaired images, rows (with change-mask fractions), recorded
failures, resume without redoing finished partitions, refused mismatches, JSONL shards, the real LEVIR-CD samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.models.change_captioner import NO_CHANGE_CAPTION, load_change_captioner
from geovl.models.decoding import DecodingConfig
from geovl.tasks.change_captioning import ChangeCaptioningPipeline
from geovl.tasks.change_captioning.batch import (
    ChangeCaptionRunConfig,
    find_pairs,
    is_change_caption_run,
    read_change_captions,
    run_change_captions,
)
from tests.change_fixtures import TinyChangeCaptioner, make_tiny_change_captioner
from tests.helpers import shared_data


def pairs_folder(root: Path, n: int, *, only_a: int = 0, only_b: int = 0, empty_after: int | None = None,
                 labels: bool = False) -> Path:
    """``root/A``, ``root/B`` (and ``root/label``) with ``n`` pairs ``p000.png`` ..., plus unpaired images; pair
    ``i``'s mask has ``i`` changed rows out of 40."""
    rng = np.random.default_rng(0)
    for side in ("A", "B", *(("label",) if labels else ())):
        (root / side).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        for side in ("A", "B"):
            path = root / side / f"p{i:03d}.png"
            if side == "B" and i == empty_after:
                path.write_bytes(b"")
            else:
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        if labels:
            mask = np.zeros((40, 40), np.uint8)
            mask[:i] = 255
            Image.fromarray(mask).save(root / "label" / f"p{i:03d}.png")
    for i in range(only_a):
        Image.new("RGB", (40, 40)).save(root / "A" / f"lonely_a{i}.png")
    for i in range(only_b):
        Image.new("RGB", (40, 40)).save(root / "B" / f"lonely_b{i}.jpg")
    (root / "A" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyChangeCaptioner:
    return make_tiny_change_captioner(tmp_path_factory.mktemp("change"))


def quiet(**kw: object) -> ChangeCaptionRunConfig:
    return ChangeCaptionRunConfig(workers=0, progress=False, **kw)  # type: ignore[arg-type]


def test_pair_layouts_are_found_and_unpaired_images_reported(tmp_path: Path) -> None:
    flat = find_pairs(pairs_folder(tmp_path / "flat", 3, only_a=1, only_b=2, labels=True))
    assert flat.layout == "A/B" and [p.pair_id for p in flat.pairs] == ["p000.png", "p001.png", "p002.png"]
    assert flat.only_before == ["lonely_a0.png"] and flat.only_after == ["lonely_b0.jpg", "lonely_b1.jpg"]
    assert flat.pairs[1].label == tmp_path / "flat" / "label" / "p001.png"
    levircc = tmp_path / "levircc"
    for split, n in (("train", 2), ("test", 1)):
        pairs_folder(levircc / "images" / split, n)
    found = find_pairs(levircc)
    assert found.layout == "images/<split>/A|B" and found.pairs[0].label is None
    assert [p.pair_id for p in found.pairs] == ["test/p000.png", "train/p000.png", "train/p001.png"]
    assert found.pairs[0].split == "test"
    release = tmp_path / "levircd"
    pairs_folder(release / "val", 2, labels=True)
    assert [p.pair_id for p in find_pairs(release).pairs] == ["val/p000.png", "val/p001.png"]
    with pytest.raises(ValueError, match="no pairs folder layout"):
        find_pairs(tmp_path / "flat" / "A")
    with pytest.raises(FileNotFoundError, match="no such pairs folder"):
        find_pairs(tmp_path / "nowhere")
    lonely = tmp_path / "lonely"
    pairs_folder(lonely, 0, only_a=1, only_b=1)
    with pytest.raises(ValueError, match="no before / after pair"):
        find_pairs(lonely)


def test_a_run_describes_every_readable_pair_and_records_the_bad_one(tiny: TinyChangeCaptioner,
                                                                      tmp_path: Path) -> None:
    root = pairs_folder(tmp_path / "pairs", 7, only_a=1, empty_after=2, labels=True)
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    summary = run_change_captions(model, root, tmp_path / "out", quiet(partition_size=3))
    assert (summary.described, summary.failed, summary.partitions, summary.total) == (6, 1, 3, 7)
    assert summary.failures[0][0] == "p002.png" and summary.failures[0][1].startswith("after image:")
    assert summary.only_before == ["lonely_a0.png"]
    rows = read_change_captions(tmp_path / "out")
    assert [r["id"] for r in rows] == [0, 1, 3, 4, 5, 6]
    assert [r["pair_id"] for r in rows] == [f"p{i:03d}.png" for i in (0, 1, 3, 4, 5, 6)]
    assert [r["mask_changed_fraction"] for r in rows] == pytest.approx([i / 40 for i in (0, 1, 3, 4, 5, 6)])
    kept = [0, 1, 3, 4, 5, 6]
    direct = ChangeCaptioningPipeline(model, workers=0)([root / "A" / f"p{i:03d}.png" for i in kept],
                                                        [root / "B" / f"p{i:03d}.png" for i in kept])
    assert [r["caption"] for r in rows] == direct.captions
    assert [r["changed"] for r in rows] == [r.changed for r in direct.results]
    assert [r["probability"] for r in rows] == pytest.approx([r.probability for r in direct.results], abs=1e-5)
    first = rows[0]
    np.testing.assert_allclose(np.reshape(first["heatmap"], first["grid"]), direct.results[0].heatmap, atol=1e-4)
    assert first["grid"] == [4, 4] and first["threshold"] == 0.5 and first["model"] == str(tiny.folder)
    assert first["before"].endswith("A/p000.png") and first["after"].endswith("B/p000.png")
    assert json.loads(first["decoding"])["method"] == "beam" and first["captioned_at"]
    for row in rows:
        assert row["changed"] == (row["probability"] >= 0.5)
        assert (row["caption"] == NO_CHANGE_CAPTION) != row["changed"]
    failures = [json.loads(ln) for f in sorted((tmp_path / "out").glob("*.failures.jsonl"))
                for ln in f.read_text().splitlines()]
    assert [f["input"] for f in failures] == ["p002.png"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["count"] == 6 and manifest["failed"] == 1
    assert manifest["only_before"] == ["lonely_a0.png"] and is_change_caption_run(tmp_path / "out")


def test_resume_redoes_only_the_partitions_a_killed_run_did_not_list(tiny: TinyChangeCaptioner,
                                                                     tmp_path: Path) -> None:
    root = pairs_folder(tmp_path / "pairs", 8)
    out = tmp_path / "out"
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    run_change_captions(model, root, out, quiet(partition_size=3))
    full = read_change_captions(out)
    # what a run killed while writing part-00002 leaves: two listed partitions, a half-written temporary file
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["partitions"] = manifest["partitions"][:2]
    manifest["complete"] = False
    manifest_path.write_text(json.dumps(manifest))
    (out / "part-00002.parquet").unlink()
    (out / ".part-00002.parquet.abcd1234.tmp.parquet").write_bytes(b"half")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("part-0000[01].*")}
    again = run_change_captions(model, root, out, quiet(partition_size=3))
    assert (again.described, again.resumed, again.partitions) == (2, 6, 3)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-0000[01].*")} == stamps  # not rewritten
    assert read_change_captions(out) == [{**r, "captioned_at": a["captioned_at"]}
                                         for r, a in zip(full, read_change_captions(out), strict=True)]
    assert [r["id"] for r in read_change_captions(out)] == list(range(8))
    assert not list(out.glob(".*")) and json.loads(manifest_path.read_text())["complete"]
    done = run_change_captions(model, root, out, quiet(partition_size=3))
    assert (done.described, done.resumed) == (0, 8)


def test_a_folder_of_another_run_is_refused(tiny: TinyChangeCaptioner, tmp_path: Path) -> None:
    root = pairs_folder(tmp_path / "pairs", 3)
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    run_change_captions(model, root, tmp_path / "out", quiet())
    with pytest.raises(ValueError, match="other decoding"):
        run_change_captions(model, root, tmp_path / "out", quiet(), DecodingConfig(method="greedy"))
    with pytest.raises(ValueError, match="other threshold"):
        run_change_captions(model, root, tmp_path / "out", quiet(threshold=0.9))
    Image.new("RGB", (40, 40)).save(root / "A" / "p100.png")
    Image.new("RGB", (40, 40)).save(root / "B" / "p100.png")
    with pytest.raises(ValueError, match="other sources"):
        run_change_captions(model, root, tmp_path / "out", quiet())
    with pytest.raises(ValueError, match="is a file"):
        run_change_captions(model, root, root / "A" / "p000.png", quiet())
    with pytest.raises(ValueError, match="threshold"):
        quiet(threshold=1.5)
    with pytest.raises(ValueError, match="not a geovl change-caption run"):
        read_change_captions(root)


def test_jsonl_shards_a_limit_and_a_threshold(tiny: TinyChangeCaptioner, tmp_path: Path) -> None:
    root = pairs_folder(tmp_path / "pairs", 5)
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    summary = run_change_captions(model, root, tmp_path / "out", quiet(format="jsonl", limit=4, threshold=0.0))
    assert (summary.described, summary.changed) == (4, 4)
    assert (tmp_path / "out" / "part-00000.jsonl").is_file()
    rows = read_change_captions(tmp_path / "out", columns=["pair_id", "changed", "threshold"])
    assert rows == [{"id": i, "pair_id": f"p{i:03d}.png", "changed": True, "threshold": 0.0} for i in range(4)]


def test_the_levir_cd_sample_pairs(tiny: TinyChangeCaptioner, tmp_path: Path) -> None:
    root = shared_data("change_samples/levir_cd_bitcd")
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    summary = run_change_captions(model, root, tmp_path / "out", quiet())
    names = sorted(p.name for p in (root / "A").glob("*.png") if (root / "B" / p.name).is_file())
    assert summary.described == len(names) >= 10 and summary.failed == 0
    rows = read_change_captions(tmp_path / "out")
    assert [r["pair_id"] for r in rows] == names
    for row in rows:
        mask = np.asarray(Image.open(root / "label" / row["pair_id"]).convert("L")) > 0
        assert row["mask_changed_fraction"] == pytest.approx(mask.mean())
    assert any(r["mask_changed_fraction"] == 0 for r in rows) and any(r["mask_changed_fraction"] > 0.1 for r in rows)


def test_eval_reads_a_change_caption_run_keyed_by_pair_id(tiny: TinyChangeCaptioner, tmp_path: Path) -> None:
    """``geovl eval change-caption --predictions RUN`` scores a ``--pairs`` run: ids are LEVIR-CC's pair ids."""
    from geovl.eval.captioning import load_predictions

    root = tmp_path / "levircc"
    pairs_folder(root / "images" / "test", 3)
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    out = tmp_path / "run"
    run_change_captions(model, root, out, quiet(format="jsonl"), DecodingConfig(method="greedy"))
    predictions = load_predictions(out)
    assert sorted(predictions) == ["test/p000.png", "test/p001.png", "test/p002.png"]
    rows = {r["pair_id"]: r["caption"] for r in read_change_captions(out)}
    assert predictions == rows


def test_eval_can_score_only_the_predicted_pairs(tiny: TinyChangeCaptioner, tmp_path: Path) -> None:
    from geovl.eval.tasks import eval_captions

    root = tmp_path / "levircc"
    pairs_folder(root / "images" / "test", 2)
    images = [{"filename": f"p{i:03d}.png", "split": "test", "changeflag": i % 2,
               "sentences": [{"raw": "there is no difference" if i % 2 == 0 else "a road is built",
                              "tokens": []}]} for i in range(4)]
    (root / "LevirCCcaptions.json").write_text(json.dumps({"images": images}))
    model = load_change_captioner(tiny.folder, backbone=tiny.backbone)
    run_change_captions(model, root, tmp_path / "run", quiet(format="jsonl"), DecodingConfig(method="greedy"))
    with pytest.raises(ValueError, match="2 reference image"):
        eval_captions(tmp_path / "run", root, split="test", change=True, meteor=False)
    report = eval_captions(tmp_path / "run", root, split="test", change=True, meteor=False, only_predicted=True)
    assert report.figures["images"] == 2
    assert "2 of the split's 4 images" in report.details["scored"]
