"""The bundled offline model: loads by name with no network, and carries meaning (not a random model)."""

from __future__ import annotations

import numpy as np
import pytest

from geovl.data.synthetic import SceneConfig, write_caption_dataset
from geovl.models import load_backbone
from geovl.models.registry import get_checkpoint
from geovl.models.weights import local_checkpoint
from tests.helpers import shared_data


@pytest.fixture(scope="module")
def bundled():  # type: ignore[no-untyped-def]
    return load_backbone("geovl-rs-tiny", precision="fp32")


def test_loads_by_name_offline_from_the_package(bundled) -> None:  # type: ignore[no-untyped-def]
    spec = get_checkpoint("geovl-rs-tiny")
    path = local_checkpoint(spec)
    assert path is not None and path.is_dir() and "geovl/models/bundled" in path.as_posix()
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 40e6, f"the bundled checkpoint is {size / 1e6:.1f} MB"
    assert bundled.embed_dim == 256 and bundled.image_size == 128
    assert bundled.info.checkpoint_sha256 is not None


def test_text_embeddings_order_related_phrases(bundled) -> None:  # type: ignore[no-untyped-def]
    t = bundled.encode_texts(["a dense residential area with many houses", "many buildings are densely arranged",
                              "a large lake with calm blue water"])
    assert t[0] @ t[1] > t[0] @ t[2] + 0.1


def test_retrieves_synthetic_scenes_far_above_chance(bundled, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from geovl.eval.protocols import eval_retrieval

    root = write_caption_dataset(tmp_path / "s", 200, seed=99, config=SceneConfig(size=128), progress=False)
    figures = eval_retrieval(bundled, root, split="test", progress=False).figures
    chance = 100 * 10 / 20 / 2  # R@10 of 20 test images is 50% by chance; mean recall ~ (5+25+50)/3
    assert figures["mean_recall"] > chance + 15, figures


@pytest.mark.realdata
def test_eurosat_holdout_zero_shot_well_above_chance(bundled) -> None:  # type: ignore[no-untyped-def]
    from geovl.eval.protocols import eval_zeroshot

    rep = eval_zeroshot(bundled, shared_data("eurosat_rgb"), holdout=0.2, label_set="eurosat", limit_per_class=30,
                        progress=False)
    assert rep.figures["accuracy"] > 50, rep.figures
    assert np.isfinite(rep.figures["accuracy"])
