"""``geovl train diffusion``: tiles at known GSDs, seeded batches with condition dropout, exact resume, and a tiny
generator that learns to follow its text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from geovl.models.generator import load_generator
from geovl.training.diffusion import train_diffusion
from geovl.training.diffusion_config import diffusion_config_from_dict
from geovl.training.diffusion_data import NULL_TEXT, TileBank, sample_gsd

COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of noisy red and blue 48 px tiles, plus one empty file."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir()
        for i in range(12):
            pixels = np.clip(np.asarray(rgb) + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "red" / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Karpathy set of 128 px scenes, one of which records its own GSD."""
    root = tmp_path_factory.mktemp("scenes")
    (root / "images").mkdir()
    rng = np.random.default_rng(1)
    images = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        entry = {"filename": f"{i}.png", "split": "train", "sentences": [{"raw": f"scene {i}"}]}
        if i == 0:
            entry["gsd"] = 8.0
        images.append(entry)
    (root / "dataset.json").write_text(json.dumps({"images": images}))
    return root


def config(colours: Path, output: Path, steps: int, **extra: object) -> dict:
    return {
        "model": {"backbone": "random:geovl-micro", "image_size": 32, "patch": 4, "channels": [32, 64],
                  "attention": [False, True], "cross_attention_dim": 32, "head_dim": 16, "text_length": 8},
        "data": {"sources": [{"path": str(colours), "format": "imagefolder", "gsd": 10.0,
                              "label_prompts": ["{}"]}],
                 "batch_size": 16},
        "optim": {"lr": 2e-3, "steps": steps, "warmup_steps": min(5, steps), "precision": "fp32", "weight_decay": 0.0},
        "eval": {"prompts": ["red", "blue"], "gsds": [10.0], "steps": 2},
        "run": {"output": str(output), "log_every": 5, "save_every": 3, "device": "cpu"},
        "ema_decay": 0.9,
        **extra,
    }


def test_tiles_know_their_zoom_level_and_skip_bad_files(colours: Path, scenes: Path) -> None:
    cfg = diffusion_config_from_dict(config(colours, Path("unused"), 1))
    cfg.data.sources.append(type(cfg.data.sources[0])(path=str(scenes), format="karpathy", gsd=0.5, scales=[1, 2, 4]))
    bank = TileBank(cfg.data, 32, progress=False)
    info = bank.describe()
    assert info["failures"] == 1 and "empty.png" in bank.failures[0][0]
    assert info["per_source"] == [24, 12]  # 4 scenes x 3 scales (128 / 4 = 32 is still one tile)
    # EuroSAT-like 10 m tiles: level 14; scenes at 0.5 m x 1, 2, 4: levels 18, 17, 16; the scene recording 8 m:
    # 8, 16, 32 m -> levels 14, 13, 12
    assert info["levels"] == {14: 24 + 1, 18: 3, 17: 3, 16: 3, 13: 1, 12: 1}
    assert sample_gsd({"resolution_m": "2.5"}, None) == 2.5 and sample_gsd({"gsd": "x"}, 3.0) == 3.0


def test_batches_are_seeded_and_drop_conditions_at_the_configured_rates(colours: Path) -> None:
    cfg = diffusion_config_from_dict(config(colours, Path("unused"), 1))
    cfg.data.text_dropout, cfg.data.resolution_dropout, cfg.data.both_dropout = 0.2, 0.3, 0.1
    bank = TileBank(cfg.data, 32, progress=False)
    a, b = bank.batch(0, 5, 2000), bank.batch(0, 5, 2000)
    assert torch.equal(a.pixels, b.pixels) and np.array_equal(a.text, b.text)
    assert not torch.equal(a.pixels, bank.batch(0, 6, 2000).pixels)
    assert a.pixels.shape == (2000, 3, 32, 32) and a.pixels.min() >= -1 and a.pixels.max() <= 1
    no_text, no_level = a.text == NULL_TEXT, (a.levels == 0).numpy()
    assert abs((no_text & ~no_level).mean() - 0.2) < 0.04
    assert abs((no_level & ~no_text).mean() - 0.3) < 0.04
    assert abs((no_text & no_level).mean() - 0.1) < 0.03


def test_resume_repeats_the_uninterrupted_run(colours: Path, tmp_path: Path) -> None:
    straight = train_diffusion(diffusion_config_from_dict(config(colours, tmp_path / "a", 6)), progress=False)
    cut = diffusion_config_from_dict(config(colours, tmp_path / "b", 6))
    first = train_diffusion(cut, progress=False, stop_after=3)
    assert first.final is None and first.steps == 3
    resumed = train_diffusion(cut, progress=False)
    assert straight.final is not None and resumed.final is not None
    assert resumed.losses == straight.losses[3:]
    wa = load_file(str(straight.final / "unet" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(resumed.final / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # EMA weights too, bit for bit
    assert (tmp_path / "a" / "samples").is_dir()


def test_a_trained_tiny_generator_follows_its_text(colours: Path, tmp_path: Path) -> None:
    result = train_diffusion(diffusion_config_from_dict(config(colours, tmp_path / "run", 150)), progress=False)
    assert result.final is not None and result.losses[-1] < result.losses[0]
    pipe = load_generator(result.final, device="cpu")
    right = 0
    for name in COLOURS:
        out = pipe([name] * 4, gsd=10, steps=10, guidance=3.0, seed=0)
        for image in out.images:
            mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(0)
            guess = min(COLOURS, key=lambda k: float(np.sum((mean - np.asarray(COLOURS[k])) ** 2)))
            right += guess == name
    assert right >= 7  # of 8; chance is 4


def test_config_errors_name_the_setting(colours: Path) -> None:
    base = config(colours, Path("unused"), 2)
    with pytest.raises(ValueError, match=r"data\.sources is empty"):
        diffusion_config_from_dict({**base, "data": {"sources": []}})
    with pytest.raises(ValueError, match="probabilities"):
        diffusion_config_from_dict({**base, "data": {**base["data"], "text_dropout": 0.7, "both_dropout": 0.5}})
    with pytest.raises(ValueError, match="scales"):
        diffusion_config_from_dict({**base, "data": {**base["data"], "sources": [
            {"path": str(colours), "format": "imagefolder", "scales": [0]}]}})
    with pytest.raises(ValueError, match="multiples of 32"):
        diffusion_config_from_dict({**base, "model": {**base["model"], "channels": [30, 64]}})
    with pytest.raises(ValueError, match="unknown key"):
        diffusion_config_from_dict({**base, "data": {**base["data"], "batchsize": 3}})


def test_a_run_can_start_from_a_trained_generator(colours: Path, tmp_path: Path) -> None:
    """``model.init`` copies a generator's UNet weights into a fresh run (fine-tuning, or training further)."""
    first = train_diffusion(diffusion_config_from_dict(config(colours, tmp_path / "a", 3)), progress=False)
    assert first.final is not None
    cfg = config(colours, tmp_path / "b", 1, ema_decay=0.0)
    cfg["model"] = {**cfg["model"], "init": str(first.final)}
    cfg["optim"] = {**cfg["optim"], "lr": 1e-12, "warmup_steps": 0}
    second = train_diffusion(diffusion_config_from_dict(cfg), progress=False)
    assert second.final is not None
    # a fresh run's random UNet could not end equal to the first run's trained (and EMA-averaged) weights
    weights = [load_file(str(r.final / "unet" / "diffusion_pytorch_model.safetensors")) for r in (first, second)]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])
    wrong = config(colours, tmp_path / "c", 1)
    wrong["model"] = {**wrong["model"], "channels": [64, 64], "init": str(first.final)}
    with pytest.raises(ValueError, match="different UNet shape"):
        train_diffusion(diffusion_config_from_dict(wrong), progress=False)
