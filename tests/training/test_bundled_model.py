"""The bundled offline models: load by name with no network, and carry meaning (not random models).

``geovl-rs-small`` (the default) is checked to beat ``geovl-rs-tiny`` on data neither trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from geovl.data.synthetic import SceneConfig, write_caption_dataset
from geovl.models import DEFAULT_MODEL, load_backbone
from geovl.models.backbone import Backbone
from geovl.models.registry import get_checkpoint
from geovl.models.weights import local_checkpoint
from tests.helpers import shared_data

#: name -> (image size, largest shipped folder in MB)
BUNDLED = {"geovl-rs-small": (160, 12.0), "geovl-rs-tiny": (128, 40.0)}
_LOADED: dict[str, Backbone] = {}


@pytest.fixture(params=sorted(BUNDLED))
def bundled(request: pytest.FixtureRequest) -> Backbone:
    name = request.param
    if name not in _LOADED:
        _LOADED[name] = load_backbone(name, precision="fp32", device="cpu")
    return _LOADED[name]


def test_the_default_model_is_the_small_one() -> None:
    from geovl.demo.config import DemoConfig
    from geovl.serving.config import ServeConfig

    assert DEFAULT_MODEL == "geovl-rs-small" == ServeConfig().model == DemoConfig().model


def test_loads_by_name_offline_from_the_package(bundled: Backbone) -> None:
    name = bundled.info.name
    spec = get_checkpoint(name)
    path = local_checkpoint(spec)
    assert path is not None and path.is_dir() and "geovl/models/bundled" in path.as_posix()
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < BUNDLED[name][1] * 1e6, f"the bundled checkpoint is {size / 1e6:.1f} MB"
    assert bundled.embed_dim == 256 and bundled.image_size == BUNDLED[name][0]
    assert bundled.info.checkpoint_sha256 is not None


def test_text_embeddings_order_related_phrases(bundled: Backbone) -> None:
    t = bundled.encode_texts(["a dense residential area with many houses", "many buildings are densely arranged",
                              "a large lake with calm blue water"])
    assert t[0] @ t[1] > t[0] @ t[2] + 0.1


def test_retrieves_synthetic_scenes_far_above_chance(bundled: Backbone, tmp_path: Any) -> None:
    from geovl.eval.protocols import eval_retrieval

    root = write_caption_dataset(tmp_path / "s", 200, seed=99, config=SceneConfig(size=128), progress=False)
    figures = eval_retrieval(bundled, root, split="test", progress=False).figures
    chance = 100 * 10 / 20 / 2  # R@10 of 20 test images is 50% by chance; mean recall ~ (5+25+50)/3
    assert figures["mean_recall"] > chance + 15, figures


@pytest.mark.realdata
def test_eurosat_holdout_zero_shot_well_above_chance(bundled: Backbone) -> None:
    from geovl.eval.protocols import eval_zeroshot

    rep = eval_zeroshot(bundled, shared_data("eurosat_rgb"), holdout=0.2, label_set="eurosat", limit_per_class=30,
                        progress=False)
    assert rep.figures["accuracy"] > 50, rep.figures
    assert np.isfinite(rep.figures["accuracy"])


@pytest.mark.realdata
def test_the_small_model_beats_the_tiny_one_on_held_out_ucm_scenes() -> None:
    """UCM test images (never trained on), zero-shot over the 21 UCM classes: the new default must be clearly
    better (measured 2026-12-03: see docs/model_card_geovl-rs-small.md)."""
    from geovl.eval.protocols import eval_zeroshot

    acc = {name: eval_zeroshot(_LOADED.get(name) or load_backbone(name, precision="fp32", device="cpu"),
                               shared_data("ucm_captions"), split="test", label_set="ucmerced",
                               progress=False).figures["accuracy"] for name in BUNDLED}
    assert acc["geovl-rs-small"] > acc["geovl-rs-tiny"] + 10, acc
