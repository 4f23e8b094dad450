"""timm image towers (open_clip ``TimmModel``): feature maps, patch embeddings through the tower's own head, and
which variants are refused. Random trunks with a tiny text tower, so nothing here needs a packaged file."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from geovl.models import Backbone, ModelInfo, Preprocess, architecture_config, build_openclip_model
from geovl.models.towers import OpenClipTowers

RNG = np.random.default_rng(0)
IMAGES = [RNG.integers(0, 256, (100, 120, 3), dtype=np.uint8) for _ in range(3)]
SIZE = 96  # EfficientNet's stride is 32: a 3 x 3 map


def _timm_backbone(image_size: int = SIZE, seed: int = 0, **vision: Any) -> Backbone:
    """EfficientNet-Lite0 (random) with open_clip adapter options, and geovl-micro's text tower."""
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"timm_model_name": "tf_efficientnet_lite0", "timm_pool": "avg", "timm_proj": "linear",
                       "image_size": image_size, **vision},
        "text_cfg": architecture_config("geovl-micro")["text_cfg"],
    }
    torch.manual_seed(seed)
    model = build_openclip_model(cfg)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so that the head's path matters
        for module in model.visual.trunk.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    towers = OpenClipTowers(model, tokenizer=None, model_cfg=cfg)
    pre = Preprocess(image_size=image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return Backbone(towers, pre, ModelInfo("test", "timm-lite0"), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def linear() -> Backbone:
    return _timm_backbone()


def test_features_are_the_trunk_map_and_the_tower_output(linear: Backbone) -> None:
    visual: Any = linear.model.visual
    pixels = linear.preprocess_images(IMAGES)
    feats = linear.image_features(pixels)
    with torch.no_grad():
        fmap = visual.trunk.forward_features(pixels)
        tower = visual(pixels)
    assert fmap.shape == (3, 1280, 3, 3)
    assert feats.grid == (3, 3) and feats.patches.shape == (3, 9, 1280)
    torch.testing.assert_close(feats.patch_map(), fmap)
    torch.testing.assert_close(feats.patches[:, 5], fmap[:, :, 1, 2])  # raster order: cell (1, 2) is the 6th
    torch.testing.assert_close(feats.pooled, tower)
    assert feats.pooled.shape == (3, 32)


@pytest.mark.parametrize("vision", [{}, {"timm_proj_bias": True}, {"timm_proj": ""}],
                         ids=["linear", "linear-bias", "classifier-as-projection"])
def test_average_pool_is_the_mean_of_cell_embeddings(vision: dict[str, Any]) -> None:
    backbone = _timm_backbone(seed=1, **vision)
    assert backbone.supports_patch_embeddings
    patches = backbone.patch_embeddings(IMAGES)
    pooled = torch.from_numpy(backbone.encode_images(IMAGES, normalize=False))
    assert patches.shape == (3, 3, 3, 32)
    torch.testing.assert_close(patches.mean(dim=(1, 2)), pooled, rtol=1e-4, atol=1e-5)
    spread = (patches - pooled[:, None, None]).norm(dim=-1) / pooled.norm(dim=-1)[:, None, None]
    assert float(spread.max()) > 0.1  # the cells differ from their mean


def test_cells_go_through_the_projection_on_their_own(linear: Backbone) -> None:
    visual: Any = linear.model.visual
    fmap = linear.image_features(IMAGES).patch_map()
    with torch.no_grad():
        expected = visual.head.proj(fmap.permute(0, 2, 3, 1))
    torch.testing.assert_close(linear.patch_embeddings(IMAGES), expected, rtol=1e-5, atol=1e-6)


def test_mlp_projection_is_applied_per_cell() -> None:
    backbone = _timm_backbone(seed=2, timm_proj="mlp")
    visual: Any = backbone.model.visual
    fmap = backbone.image_features(IMAGES).patch_map()
    patches = backbone.patch_embeddings(IMAGES)
    with torch.no_grad():
        expected = visual.head.mlp(fmap.permute(0, 2, 3, 1))
    torch.testing.assert_close(patches, expected, rtol=1e-5, atol=1e-6)
    pooled = torch.from_numpy(backbone.encode_images(IMAGES, normalize=False))
    assert not torch.allclose(patches.mean(dim=(1, 2)), pooled, atol=1e-3)  # non-linear: not the mean


@pytest.mark.parametrize(("vision", "why"), [({"timm_pool": "max"}, "'max' pooling"),
                                             ({"timm_pool": "abs_attn", "timm_proj": ""}, "attention pooling")])
def test_towers_that_do_not_average_cells_are_refused(vision: dict[str, Any], why: str) -> None:
    backbone = _timm_backbone(image_size=224, **vision)
    assert not backbone.supports_patch_embeddings
    with pytest.raises(ValueError, match=why):
        backbone.patch_embeddings(IMAGES)


def test_attention_pooled_tower_still_gives_its_feature_map() -> None:
    backbone = _timm_backbone(image_size=224, timm_pool="abs_attn", timm_proj="")
    pixels = backbone.preprocess_images(IMAGES[:1])
    feats = backbone.image_features(pixels)
    assert feats.grid == (7, 7) and feats.patches.shape == (1, 49, 1280)
    with torch.no_grad():
        tower = backbone.model.visual(pixels)
    torch.testing.assert_close(feats.pooled, tower)
