"""``geovl train change-captioner``: it learns to tell changed from unchanged pairs, exports a loadable model with a
calibrated threshold, resumes exactly, and its config refuses what cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from geovl.models.change_captioner import load_change_captioner
from geovl.models.decoding import DecodingConfig
from geovl.training.change_captioner import best_threshold, train_change_captioner
from geovl.training.change_captioner_config import change_config_from_dict
from geovl.training.change_data import make_pair, plan_pairs


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Karpathy dataset of 'open land' (dark, textured) and 'built-up' (bright) photographs, train and val."""
    root = tmp_path_factory.mktemp("photos")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for split, n in (("train", 12), ("val", 6)):
        for i in range(n):
            for cls, level in (("bareland", 60), ("denseresidential", 235)):
                name = f"{cls}_{split}{i}.png"
                pixels = np.clip(level + rng.normal(0, 12, (48, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / "images" / name)
                images.append({"filename": name, "split": split,
                               "sentences": [{"raw": f"a photo of {cls}", "tokens": ["a", "photo", "of", cls]}]})
    (root / "dataset.json").write_text(json.dumps({"images": images}))
    return root


def config(photos: Path, output: Path, steps: int, **extra: object) -> dict:
    return {
        "model": {"backbone": "random:geovl-micro", "image_size": 32, "width": 32, "layers": 1, "heads": 2,
                  "dropout": 0.0, "vocab_min_count": 1},
        "data": {"rendered": {"count": 8, "seed": 0}, "views": 2, "batch_size": 16, "workers": 0,
                 "pasted": {"count": 64, "seed": 1, "sources": [str(photos)], "no_change_fraction": 0.5,
                            "removed_fraction": 0.0}},
        "optim": {"lr": 3e-3, "steps": steps, "warmup_steps": 5, "precision": "fp32"},
        "eval": {"rendered": 0, "pasted": 32, "pasted_split": "val", "method": "greedy"},
        "run": {"output": str(output), "log_every": 5, "save_every": 10, "device": "cpu"},
        **extra,
    }


def test_pair_plans_are_deterministic_and_use_the_split(photos: Path) -> None:
    cfg = change_config_from_dict(config(photos, Path("unused"), 10))
    specs = plan_pairs(cfg.data, rendered=2, pasted=10)
    assert specs == plan_pairs(cfg.data, rendered=2, pasted=10)
    assert {s.kind for s in specs} == {"rendered", "pasted"}
    assert all("_train" in s.target for s in specs if s.kind == "pasted")
    val = plan_pairs(cfg.data, rendered=0, pasted=10, seed_offset=7000, pasted_split="val")
    assert all("_val" in s.target for s in val)
    first = make_pair(specs[3], cfg.data, 32)
    again = make_pair(specs[3], cfg.data, 32)
    assert np.array_equal(first.image_b, again.image_b) and first.captions == again.captions


def test_trained_change_captioner_separates_changed_from_unchanged(photos: Path, tmp_path: Path) -> None:
    cfg = change_config_from_dict(config(photos, tmp_path / "run", 80, eval={
        "every_steps": 40, "rendered": 0, "pasted": 32, "pasted_split": "val", "method": "greedy",
        "select_by": "val/balanced_accuracy"}))
    result = train_change_captioner(cfg, progress=False)
    assert result.final is not None and result.losses[-1] < result.losses[0] - 1.0
    final = result.evals[-1]
    assert final["val/balanced_accuracy"] >= 80.0
    model = load_change_captioner(result.final, device="cpu", precision="fp32")
    meta = json.loads((result.final / "change_captioner_config.json").read_text())
    assert model.threshold == pytest.approx(final["val/threshold"]) == pytest.approx(meta["threshold"])
    assert meta["metadata"]["trained_by"] == "geovl train change-captioner"
    best = json.loads((result.output / "best" / "change_captioner_config.json").read_text())["metadata"]
    assert best["selection"]["value"] == max(e["val/balanced_accuracy"] for e in result.evals)
    dark = np.full((1, 3, 32, 32), 60, np.uint8)
    bright = dark.copy()
    bright[..., 4:28, 4:28] = 235
    same = model.describe_pixels(torch.from_numpy(dark), torch.from_numpy(dark), DecodingConfig(method="greedy"))
    built = model.describe_pixels(torch.from_numpy(dark), torch.from_numpy(bright), DecodingConfig(method="greedy"))
    assert built[0].probability > same[0].probability


def test_a_resumed_run_equals_an_uninterrupted_one(photos: Path, tmp_path: Path) -> None:
    straight = train_change_captioner(change_config_from_dict(config(photos, tmp_path / "a", 12)), progress=False)
    cfg = change_config_from_dict(config(photos, tmp_path / "b", 12))
    first = train_change_captioner(cfg, progress=False, stop_after=7)
    assert first.final is None and first.steps == 7
    rest = train_change_captioner(cfg, progress=False)
    assert rest.steps == 5
    assert straight.losses[7:] == pytest.approx(rest.losses, rel=1e-5)
    assert straight.final is not None and rest.final is not None
    a, b = load_file(str(straight.final / "model.safetensors")), load_file(str(rest.final / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_best_threshold_maximises_balanced_accuracy() -> None:
    prob = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    changed = np.array([False, False, True, True, True, True])
    t = best_threshold(prob, changed)
    assert 0.2 < t <= 0.3
    inverted = best_threshold(np.array([0.4, 0.6]), np.array([True, False]))
    assert not 0.4 < inverted <= 0.6  # the midpoint gets both wrong; calling both one way gets one right


@pytest.mark.parametrize(("change", "message"), [
    ({"data": {"rendered": {"count": 0}, "pasted": {"count": 0}}}, "no training pairs"),
    ({"data": {"rendered": {"change_types": ["volcano"]}}}, "unknown"),
    ({"data": {"pasted": {"count": 5}}}, "needs data.pasted.sources"),
    ({"eval": {"threshold": 2.0}}, "eval.threshold"),
    ({"model": {"width": 30, "heads": 4}}, "multiple of model.heads"),
    ({"data": {"views": 0}}, "data.views"),
])
def test_config_refuses_what_cannot_work(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        change_config_from_dict(change)
