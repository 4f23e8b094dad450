"""Patch embeddings in the joint space: grid shapes, and per tower kind a property of the tower's own pooling that
only holds when the patches go through the right projection."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from geovl.models import Backbone, ModelInfo, Preprocess, architecture_config, build_openclip_model, load_backbone
from geovl.models.towers import OpenClipTowers
from tests import model_fixtures as fx

RNG = np.random.default_rng(0)
IMAGES = [RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3)]


def _vit_backbone(**vision: Any) -> Backbone:
    """geovl-micro with vision_cfg overrides and a LayerNorm whose affine part is not the identity (so that applying
    ``ln_post`` twice, or not at all, changes the result)."""
    cfg = copy.deepcopy(architecture_config("geovl-micro"))
    cfg["vision_cfg"].update(vision)
    torch.manual_seed(0)
    model = build_openclip_model(cfg)
    ln = model.visual.ln_post
    with torch.no_grad():
        ln.weight.copy_(torch.rand_like(ln.weight) + 0.5)
        ln.bias.copy_(torch.randn_like(ln.bias))
    towers = OpenClipTowers(model, tokenizer=None, model_cfg=cfg)
    return Backbone(towers, Preprocess(image_size=32), ModelInfo("test", "geovl-micro"), torch.device("cpu"),
                    torch.float32)


def _capture_transformer_output(visual: Any) -> tuple[list[torch.Tensor], Any]:
    seen: list[torch.Tensor] = []
    handle = visual.transformer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    return seen, handle


@pytest.fixture(scope="module")
def micro() -> Backbone:
    return load_backbone("random:geovl-micro", precision="fp32", device="cpu")


@pytest.fixture(scope="module")
def micro_rn() -> Backbone:
    return load_backbone("random:geovl-micro-rn", precision="fp32", device="cpu")


@pytest.mark.parametrize(("arch", "grid"), [("geovl-micro", (4, 4)), ("geovl-micro-rn", (2, 2))])
def test_shape_follows_the_patch_grid(arch: str, grid: tuple[int, int]) -> None:
    backbone = load_backbone(f"random:{arch}", precision="fp32", device="cpu")
    assert backbone.supports_patch_embeddings
    out = backbone.patch_embeddings(IMAGES)
    assert out.shape == (3, *grid, backbone.embed_dim) and out.dtype == torch.float32
    # a uint8 batch from the decode transform gives the same result as the image sources
    uint8 = torch.stack([backbone.uint8_transform(Image.fromarray(img)) for img in IMAGES])
    torch.testing.assert_close(backbone.patch_embeddings(uint8), out, rtol=1e-4, atol=1e-5)
    unit = backbone.patch_embeddings(IMAGES, normalize=True)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3, *grid))
    torch.testing.assert_close(unit, F.normalize(out, dim=-1))


@pytest.mark.parametrize("final_ln_after_pool", [False, True])
def test_vit_patches_take_the_class_token_path(final_ln_after_pool: bool) -> None:
    """The pooled embedding is ln_post(class token) @ proj; each patch must get the same map (both open_clip
    variants: tokens returned after ln_post, or before it with final_ln_after_pool)."""
    backbone = _vit_backbone(final_ln_after_pool=final_ln_after_pool)
    visual: Any = backbone.model.visual
    seen, handle = _capture_transformer_output(visual)
    try:
        patches = backbone.patch_embeddings(IMAGES)
        pooled = torch.from_numpy(backbone.encode_images(IMAGES, normalize=False))
    finally:
        handle.remove()
    with torch.no_grad():
        x = seen[0]
        torch.testing.assert_close(pooled, visual.ln_post(x[:, 0]) @ visual.proj, rtol=1e-4, atol=1e-5)
        expected = (visual.ln_post(x[:, 1:]) @ visual.proj).reshape(3, 4, 4, -1)
    torch.testing.assert_close(patches, expected, rtol=1e-4, atol=1e-5)


def test_vit_average_pool_is_the_mean_of_patch_embeddings() -> None:
    backbone = _vit_backbone(pool_type="avg")
    patches = backbone.patch_embeddings(IMAGES)
    pooled = torch.from_numpy(backbone.encode_images(IMAGES, normalize=False))
    torch.testing.assert_close(patches.mean(dim=(1, 2)), pooled, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(patches[:, 0, 0], pooled, atol=1e-3)  # the patches differ from their mean


def test_vit_mean_of_patches_is_the_projected_mean_token(micro: Backbone) -> None:
    feats = micro.image_features(IMAGES)
    visual: Any = micro.model.visual
    with torch.no_grad():
        expected = feats.patches.mean(dim=1) @ visual.proj
    torch.testing.assert_close(micro.patch_embeddings(IMAGES).mean(dim=(1, 2)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("vision", [{"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2},
                                    {"pool_type": "none"}])
def test_vit_variants_without_patch_semantics_are_refused(vision: dict[str, Any]) -> None:
    backbone = _vit_backbone(**vision)
    assert not backbone.supports_patch_embeddings
    with pytest.raises(ValueError, match="patch embeddings are not available"):
        backbone.patch_embeddings(IMAGES)


def test_resnet_cells_go_through_value_and_output_projections(micro_rn: Backbone) -> None:
    fmap = micro_rn.image_features(IMAGES).patch_map()  # (B, C, h, w) before the attention pool
    pool: Any = micro_rn.model.visual.attnpool
    with torch.no_grad():
        cells = fmap.permute(0, 2, 3, 1)
        values = F.linear(cells, pool.v_proj.weight, pool.v_proj.bias)
        expected = F.linear(values, pool.c_proj.weight, pool.c_proj.bias)
    # the random tower's cells are small next to the biases: compare tightly so that the cell term counts
    torch.testing.assert_close(micro_rn.patch_embeddings(IMAGES), expected, rtol=1e-6, atol=1e-8)


def _blocks(seed: int) -> np.ndarray:
    """A 64 x 64 image of four flat quadrants, so that the cells of the 2 x 2 feature map differ."""
    colours = np.random.default_rng(seed).integers(0, 256, (2, 2, 3), dtype=np.uint8)
    return np.kron(colours, np.ones((32, 32, 1), dtype=np.uint8))


def test_resnet_uniform_attention_pools_to_the_mean_of_cells() -> None:
    """With queries zeroed (uniform attention) and no positional embedding, the attention pool's output is
    c_proj(v_proj(mean of tokens)), which is the mean of the cell embeddings only if those are c_proj(v_proj(cell)).
    The projections' biases are zeroed too (still affine), so that the cells, not the biases, dominate."""
    backbone = load_backbone("random:geovl-micro-rn", precision="fp32", device="cpu", seed=3)
    pool: Any = backbone.model.visual.attnpool
    with torch.no_grad():
        for param in (pool.q_proj.weight, pool.q_proj.bias, pool.positional_embedding, pool.v_proj.bias,
                      pool.c_proj.bias):
            param.zero_()
    images = [_blocks(seed) for seed in range(3)]
    pooled = torch.from_numpy(backbone.encode_images(images, normalize=False))
    patches = backbone.patch_embeddings(images)
    torch.testing.assert_close(patches.mean(dim=(1, 2)), pooled, rtol=1e-4, atol=1e-7)
    spread = (patches - pooled[:, None, None]).norm(dim=-1) / pooled.norm(dim=-1)[:, None, None]
    assert float(spread.max()) > 0.1  # the cells differ from their mean


@pytest.fixture
def siglip(tmp_path: Path) -> Backbone:
    fx.write_siglip_folder(tmp_path / "siglip", seed=0)
    return load_backbone(tmp_path / "siglip", precision="fp32", device="cpu")


def test_siglip_patch_is_the_head_attending_to_that_patch_alone(siglip: Backbone) -> None:
    vision: Any = siglip.model.vision_model
    patches = siglip.patch_embeddings(IMAGES[:2])
    assert patches.shape == (2, 4, 4, siglip.embed_dim)
    tokens = siglip.image_features(IMAGES[:2]).patches
    with torch.no_grad():
        for i, j in [(0, 0), (1, 3), (3, 2)]:
            alone = vision.head(tokens[:, 4 * i + j : 4 * i + j + 1])
            torch.testing.assert_close(patches[:, i, j], alone, rtol=1e-4, atol=1e-5)


def test_siglip_uniform_affine_head_pools_to_the_mean_of_patches(siglip: Backbone) -> None:
    """Zero the probe's query (uniform attention) and the MLP's output weights (head = attention + constant): the
    pooled embedding is then the mean of the patch embeddings."""
    head: Any = siglip.model.vision_model.head
    width = head.probe.shape[-1]
    with torch.no_grad():
        head.attention.in_proj_weight[:width].zero_()
        head.attention.in_proj_bias[:width].zero_()
        head.mlp.fc2.weight.zero_()
    patches = siglip.patch_embeddings(IMAGES)
    pooled = torch.from_numpy(siglip.encode_images(IMAGES, normalize=False))
    torch.testing.assert_close(patches.mean(dim=(1, 2)), pooled, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(patches[:, 0, 0], pooled, atol=1e-3)


def test_siglip_without_pooling_head_is_refused(siglip: Backbone) -> None:
    del siglip.model.vision_model.head
    assert not siglip.supports_patch_embeddings
    with pytest.raises(ValueError, match="patch embeddings are not available"):
        siglip.patch_embeddings(IMAGES)


def test_bad_pixel_batch_is_refused(micro: Backbone) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        micro.patch_embeddings(torch.zeros(3, 32, 32))
