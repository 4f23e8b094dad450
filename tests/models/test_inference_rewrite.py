"""Inference rewrites of CNN image towers (geovl.models.inference): folded BatchNorm, channels-last, the checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from geovl.models import load_backbone, save_backbone
from geovl.models.inference import InferenceRewrite, fold_batchnorm, fold_checked, unfold_batchnorm


def _perturb_batchnorms(module: nn.Module, seed: int) -> int:
    """Give every BatchNorm2d non-trivial statistics and affine parameters (fresh ones are an identity map)."""
    g = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                count += 1
    return count


@pytest.fixture(scope="module")
def pair():
    """The same random CNN backbone twice, as loaded for training (untouched) and then optimised."""
    plain = load_backbone("random:geovl-micro-rn", device="cpu", precision="fp32", optimize=False)
    fast = load_backbone("random:geovl-micro-rn", device="cpu", precision="fp32", optimize=False)
    assert _perturb_batchnorms(plain.model, 1) == _perturb_batchnorms(fast.model, 1) > 5
    rewrite = fast.optimize_for_inference()
    return plain, fast, rewrite


def test_cnn_tower_is_folded_and_channels_last(pair):
    plain, fast, rewrite = pair
    assert plain.inference_rewrite is None and not plain.folded
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in plain.model.visual.modules())
    assert rewrite.folded == batchnorms  # every conv -> bn pair of the ModifiedResNet
    assert rewrite.channels_last and fast.folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    assert fast.model.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert 0 < rewrite.max_error < 1e-4
    assert fast.optimize_for_inference() is rewrite  # idempotent


def test_optimised_embeddings_match(pair):
    plain, fast, _ = pair
    pixels = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    a, b = plain.encode_images(pixels), fast.encode_images(pixels)
    assert np.abs(a - b).max() < 1e-4
    assert ((a * b).sum(1) > 0.99999).all()
    uint8 = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(plain.encode_images(uint8), fast.encode_images(uint8), atol=1e-4)
    torch.testing.assert_close(plain.patch_embeddings(pixels[:2]), fast.patch_embeddings(pixels[:2]), atol=1e-4,
                               rtol=1e-4)


def test_bf16_towers_are_channels_last_but_not_folded():
    plain = load_backbone("random:geovl-micro-rn", device="cpu", precision="bf16", optimize=False)
    fast = load_backbone("random:geovl-micro-rn", device="cpu", precision="bf16", optimize=False)
    _perturb_batchnorms(plain.model, 4), _perturb_batchnorms(fast.model, 4)
    rewrite = fast.optimize_for_inference()
    assert rewrite.folded == 0 and rewrite.channels_last and not fast.folded
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    assert all(p.dtype == torch.bfloat16 for p in fast.model.parameters())
    pixels = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(plain.encode_images(pixels), fast.encode_images(pixels), atol=1e-2)


def test_vit_is_left_alone():
    bb = load_backbone("random:geovl-micro", device="cpu", precision="fp32")
    assert bb.inference_rewrite is not None
    assert bb.inference_rewrite == InferenceRewrite() and not bb.folded  # one patch convolution, no BatchNorm


class _Misleading(nn.Module):
    """A conv declared right before a BatchNorm that normalises something else: folding would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.bn(x)


def test_a_fold_that_changes_the_output_is_undone():
    module = _Misleading().eval()
    _perturb_batchnorms(module, 6)
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        before = module(x)
    weight = module.conv.weight
    rewrite = fold_checked(module, lambda: module(x))
    assert rewrite.folded == 0 and rewrite.skipped and "relative error" in rewrite.skipped
    assert module.bn.__class__ is nn.BatchNorm2d and module.conv.weight is weight
    with torch.no_grad():
        torch.testing.assert_close(module(x), before)


def test_fold_and_unfold_round_trip():
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
    _perturb_batchnorms(module, 8)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        before = module(x)
        pairs = fold_batchnorm(module)
        assert len(pairs) == 1 and isinstance(module[1], nn.Identity)
        torch.testing.assert_close(module(x), before, atol=1e-5, rtol=1e-5)
        unfold_batchnorm(pairs)
        assert isinstance(module[1], nn.BatchNorm2d) and module[0].bias is None
        torch.testing.assert_close(module(x), before)


def test_training_mode_batchnorm_is_not_folded():
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).train()
    assert fold_batchnorm(module) == []


def test_save_refuses_a_folded_backbone(pair, tmp_path):
    plain, fast, _ = pair
    with pytest.raises(ValueError, match="optimize=False"):
        save_backbone(fast, tmp_path / "folded")
    save_backbone(plain, tmp_path / "plain")
    again = load_backbone(tmp_path / "plain", device="cpu", precision="fp32")
    assert again.folded  # loading for inference folds it again
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(10))
    np.testing.assert_allclose(again.encode_images(pixels), plain.encode_images(pixels), atol=1e-4)


def test_a_tower_that_cannot_run_the_check_is_left_as_loaded():
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).eval()
    rewrite = fold_checked(module, lambda: module(torch.zeros(1, 5, 8, 8)))  # wrong channel count
    assert rewrite.folded == 0 and rewrite.skipped and "did not run" in rewrite.skipped
    assert isinstance(module[1], nn.BatchNorm2d)
