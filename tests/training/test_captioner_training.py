"""``geovl train captioner``: it learns (beats the most-frequent-caption baseline on held-out synthetic scenes), it
resumes exactly, and its config refuses what cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geovl.data.synthetic import SceneConfig, write_caption_dataset
from geovl.eval.caption_baselines import most_frequent_caption
from geovl.eval.caption_protocol import evaluate_captioner, reference_set
from geovl.eval.captioning import caption_metrics
from geovl.models.captioner import load_captioner
from geovl.models.decoding import DecodingConfig
from geovl.training.captioner import train_captioner
from geovl.training.captioner_config import captioner_config_from_dict, load_captioner_config


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    return write_caption_dataset(out, n=240, seed=3, config=SceneConfig(size=96), splits=(0.8, 0.0, 0.2),
                                 progress=False)


def config(dataset: Path, output: Path, steps: int, **extra: object) -> dict:
    return {
        "model": {"backbone": "random:geovl-micro", "width": 64, "layers": 2, "heads": 2, "dropout": 0.0,
                  "vocab_min_count": 1},
        "data": {"sources": [{"path": str(dataset), "split": "train", "holdout_fraction": 0.2}], "batch_size": 32,
                 "workers": 0, "cached_views": 2},
        "optim": {"lr": 2e-3, "steps": steps, "warmup_steps": 10, "precision": "fp32"},
        "run": {"output": str(output), "log_every": 5, "save_every": 10, "device": "cpu"},
        **extra,
    }


def test_trained_captioner_beats_the_most_frequent_caption(scenes: Path, tmp_path: Path) -> None:
    cfg = captioner_config_from_dict(config(scenes, tmp_path / "run", 400, eval={
        "every_steps": 200, "method": "greedy", "select_by": "heldout/CIDEr-D",
        "datasets": [{"path": str(scenes), "split": "test"},
                     {"path": str(scenes), "split": "train", "holdout_fraction": 0.2, "name": "heldout"}]}))
    result = train_captioner(cfg, progress=False)
    assert result.final is not None and result.losses[-1] < result.losses[0] - 1.0
    captioner = load_captioner(result.final, device="cpu", precision="fp32")
    test = reference_set(scenes, "test")
    trained = evaluate_captioner(captioner, test, decoding=DecodingConfig(method="beam", beam_size=3)).scores
    train = reference_set(scenes, "train")
    baseline = most_frequent_caption([c for refs in train.references.values() for c in refs])
    base = caption_metrics(test.references, {i: baseline for i in test.ids}, meteor=False)
    assert trained.bleu4 > base.bleu4 and trained.cider_d > base.cider_d + 0.2
    final_eval = result.evals[-1]
    assert final_eval[f"{scenes.parent.name}-test/CIDEr-D"] > 0
    heldout = reference_set(scenes, "train", holdout_fraction=0.2)
    again = evaluate_captioner(captioner, heldout, decoding=DecodingConfig(method="greedy")).scores
    assert final_eval["heldout/CIDEr-D"] == pytest.approx(100 * again.cider_d, abs=1e-6)  # training's eval == users'
    best = json.loads((result.output / "best" / "captioner_config.json").read_text())["metadata"]["selection"]
    assert best["value"] == max(e["heldout/CIDEr-D"] for e in result.evals)
    assert best["step"] == next(e["step"] for e in result.evals if e["heldout/CIDEr-D"] == best["value"])
    meta = json.loads((result.final / "captioner_config.json").read_text())["metadata"]
    assert meta["trained_by"] == "geovl train captioner" and meta["steps"] == 400


def test_a_resumed_run_equals_an_uninterrupted_one(scenes: Path, tmp_path: Path) -> None:
    straight = train_captioner(captioner_config_from_dict(config(scenes, tmp_path / "a", 20)), progress=False)
    cfg = captioner_config_from_dict(config(scenes, tmp_path / "b", 20))
    first = train_captioner(cfg, progress=False, stop_after=13)
    assert first.final is None and first.steps == 13
    rest = train_captioner(cfg, progress=False)
    assert rest.steps == 7
    assert straight.losses[13:] == pytest.approx(rest.losses, rel=1e-5)
    a, b = load_file(str(straight.final / "model.safetensors")), load_file(str(rest.final / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"model\.width"):
        captioner_config_from_dict(config(tmp_path, tmp_path, 5) | {"model": {"width": 30, "heads": 4}})
    with pytest.raises(ValueError, match="unknown key"):
        captioner_config_from_dict(config(tmp_path, tmp_path, 5) | {"optimiser": {}})
    path = tmp_path / "c.yaml"
    path.write_text("data: {sources: []}\n")
    with pytest.raises(ValueError, match=r"data\.sources is empty"):
        load_captioner_config(path)
