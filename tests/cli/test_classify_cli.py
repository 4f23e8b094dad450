"""`geovl classify` with unreadable files among good ones, multi-label top-k, and the predictions file writer."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.cli import main

MICRO = ["--model", "random:geovl-micro", "--precision", "fp32", "--device", "cpu"]


def _mixed_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """Four good images (one nested) and three bad files: empty, a truncated PNG, a text file named .jpg."""
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    good = [root / "a.png", root / "b.jpg", root / "sub" / "c.png", root / "z.png"]
    for path in good:
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, format="PNG")
    bad = [root / "empty.png", root / "sub" / "truncated.png", root / "notes.jpg"]
    bad[0].write_bytes(b"")
    bad[1].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    bad[2].write_text("meeting notes, not a picture")
    return good, bad


def test_classify_skips_unreadable_files_and_lists_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = _mixed_folder(tmp_path / "imgs")
    assert main(["classify", str(tmp_path / "imgs"), "--labels", "forest,river,farmland", "--json", "-q",
                 *MICRO]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert sorted(p["image"] for p in data["predictions"]) == sorted(map(str, good))
    assert all(len(p["labels"]) == 3 for p in data["predictions"])
    assert sorted(f["image"] for f in data["failures"]) == sorted(map(str, bad))
    assert all(f["error"] for f in data["failures"])
    for path in bad:
        assert f"skipped {path}: " in captured.err
    for path in good:
        assert f"skipped {path}" not in captured.err

    # the same through --out (CSV: one row per rank) and the plain listing
    out = tmp_path / "preds.csv"
    assert main(["classify", str(tmp_path / "imgs"), "--labels", "forest,river", "--top-k", "1", "--out", str(out),
                 "-q", *MICRO]) == 0
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["image"] for r in rows) == sorted(map(str, good)) and {r["rank"] for r in rows} == {"1"}
    assert "skipped" in capsys.readouterr().err
    assert main(["classify", str(tmp_path / "imgs"), "--labels", "forest,river", "-q", *MICRO]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(map(str, good))


def test_classify_fails_when_no_image_can_be_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, bad = _mixed_folder(tmp_path / "imgs")
    assert main(["classify", *map(str, bad), "--labels", "forest,river", "--json", "-q", *MICRO]) == 1
    err = capsys.readouterr().err
    assert "geovl classify: error: none of the 3 images could be read" in err
    assert all(f"skipped {path}: " in err for path in bad)


def test_embed_skips_the_same_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pyarrow")
    from geovl.index.pipeline import read_embeddings

    good, bad = _mixed_folder(tmp_path / "imgs")
    out = tmp_path / "emb"
    assert main(["embed", str(tmp_path / "imgs"), "--out", str(out), "--workers", "0", "-q", *MICRO]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["images"] == len(good) and summary["failed"] == len(bad)
    _, table, _ = read_embeddings(out)
    assert sorted(table.column("path").to_pylist()) == sorted(map(str, good))
    for path in bad:
        assert f"skipped {path}: " in captured.err


def test_multi_label_reports_all_classes_unless_top_k_is_given(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    good, _ = _mixed_folder(tmp_path / "imgs")
    labels = "forest,river,farmland,harbour,airport,desert,glacier"
    base = ["classify", str(good[0]), "--labels", labels, "--multi-label", "--threshold", "1e-9", "--json", *MICRO]
    assert main(base) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["multi_label"] is True and data["threshold"] == 1e-9
    (pred,) = data["predictions"]
    assert sorted(pred["labels"]) == sorted(labels.split(","))  # more than the single-label default of 5
    assert pred["scores"] == sorted(pred["scores"], reverse=True)
    assert main([*base, "--top-k", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"][0]["labels"]) == 2
    assert main(["classify", str(good[0]), "--labels", labels, "--json", *MICRO]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"][0]["labels"]) == 5
    assert main(["classify", str(good[0]), "--labels", labels, "--top-k", "0", *MICRO]) == 1
    assert "top_k must be a positive integer" in capsys.readouterr().err


def test_write_predictions_json_and_csv(tmp_path: Path) -> None:
    from geovl.tasks.zeroshot.io import write_predictions

    rows = [{"image": "a.png", "labels": ["forest", "river"], "scores": [0.75, 0.25]},
            {"image": "b.png", "labels": [], "scores": []}]
    write_predictions(tmp_path / "p.json", rows)
    assert json.loads((tmp_path / "p.json").read_text()) == rows
    write_predictions(tmp_path / "p.csv", rows)
    with open(tmp_path / "p.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["image", "rank", "label", "score"], ["a.png", "1", "forest", "0.750000"],
                                        ["a.png", "2", "river", "0.250000"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.json"]  # no temporary files left
    with pytest.raises(ValueError, match="2 labels but 1 scores"):
        write_predictions(tmp_path / "bad.csv", [{"image": "a", "labels": ["x", "y"], "scores": [1.0]}])
    assert not (tmp_path / "bad.csv").exists()
