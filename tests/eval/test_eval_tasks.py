"""`geovl eval caption | change-caption | generation` end to end on files the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovl.cli import main
from geovl.eval.tasks import eval_captions, eval_generation, load_generation_manifest, match_prediction_ids
from geovl.models import create_backbone


def _karpathy(root: Path, change: bool = False) -> Path:
    images = []
    sentences = {
        "a.png": ["many buildings are built along the road", "several houses appear near the road"],
        "b.png": ["there is no difference", "no change has occurred"],
        "c.png": ["a road is built at the bottom", "a new road appears at the bottom"],
    }
    for name, sents in sentences.items():
        images.append({"filename": name, "split": "test",
                       "sentences": [{"raw": s, "tokens": s.split()} for s in sents]})
    root.mkdir(parents=True)
    target = root / ("LevirCCcaptions.json" if change else "dataset.json")
    target.write_text(json.dumps({"images": images}))
    return root


def test_prediction_ids_match_by_id_name_or_stem() -> None:
    refs = {"test/a.png": ["x"], "test/b.png": ["y"]}
    assert match_prediction_ids({"a.png": "p", "test/b.png": "q"}, refs) == {"test/a.png": "p", "test/b.png": "q"}
    assert match_prediction_ids({"a": "p", "b": "q"}, refs) == {"test/a.png": "p", "test/b.png": "q"}
    with pytest.raises(ValueError, match="match no reference"):
        match_prediction_ids({"a": "p", "b": "q", "zzz": "r"}, refs)
    with pytest.raises(ValueError, match="have no prediction"):
        match_prediction_ids({"a": "p"}, refs)


def test_eval_captions_scores_perfect_and_poor_predictions(tmp_path: Path) -> None:
    refs = _karpathy(tmp_path / "set")
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"image_id": "a.png", "caption": "many buildings are built along the road"},
                                {"image_id": "b.png", "caption": "there is no difference"},
                                {"image_id": "c.png", "caption": "a road is built at the bottom"}]))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a.png": "a lake", "b.png": "a forest", "c.png": "an airport"}))
    hi = eval_captions(good, refs, meteor=False)
    lo = eval_captions(bad, refs, meteor=False)
    assert hi.figures["BLEU-1"] == pytest.approx(100.0)
    assert hi.figures["images"] == 3 and hi.figures["METEOR"] is None
    assert lo.figures["BLEU-4"] < 1 and lo.figures["CIDEr-D"] < hi.figures["CIDEr-D"]


def test_eval_change_captions_splits_changed_and_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = _karpathy(tmp_path / "levir", change=True)
    preds = tmp_path / "preds.jsonl"
    preds.write_text("\n".join(json.dumps({"image_id": k, "caption": v}) for k, v in
                               {"a.png": "many buildings are built", "b.png": "there is no difference",
                                "c.png": "there is no difference"}.items()))
    out = tmp_path / "report"
    assert main(["eval", "change-caption", "--predictions", str(preds), "--references", str(refs),
                 "--no-meteor", "--out", str(out)]) == 0
    figures = json.loads(capsys.readouterr().out)["figures"]
    # b is unchanged and predicted unchanged; c is changed but predicted unchanged: 2 of 3 right.
    assert figures["no-change accuracy"] == pytest.approx(100 * 2 / 3)
    assert "changed BLEU-4" in figures and "unchanged BLEU-4" in figures
    assert (out / "change-caption.md").is_file()


def test_eval_generation_with_labels_and_real_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "gen").mkdir()
    (tmp_path / "real").mkdir()
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "gen" / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "real" / f"{i}.png")
        label = ["forest", "river"][i % 2]
        rows.append({"image": f"gen/{i}.png", "prompt": f"a satellite image of a {label}", "label": label})
    manifest = tmp_path / "generated.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    backbone = create_backbone("geovl-micro", precision="fp32")
    report = eval_generation(backbone, manifest, real=tmp_path / "real", progress=False)
    assert report.figures["images"] == 6
    assert 0 <= report.figures["clip_score"] <= 100
    assert 0 <= report.figures["zero_shot_accuracy"] <= 100
    assert report.figures["fd_clip"] is not None and report.figures["fd_clip"] >= 0
    assert report.details["fd_metric"].startswith("FD-CLIP")
    assert set(report.details["per_class"]) == {"forest", "river"}


def test_generation_manifest_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"image": "a.png", "prompt": "x"}\n{"image": "b.png"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2"):
        load_generation_manifest(bad)
