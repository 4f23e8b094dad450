"""Inference-time rewrites of a convolutional image tower: BatchNorm folded into its convolution, channels-last layout.

In eval mode a ``BatchNorm2d`` right after a ``Conv2d`` is an affine map per output channel, so it can be merged into
the convolution's weight and bias (``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``) and
dropped: one memory pass less per layer. ``channels_last`` (NHWC) is the layout oneDNN and cuDNN run convolutions
fastest in. Measured speed-ups and embedding drift: ``benchmarks/inference_rewrites.py`` and docs/benchmarks.md.
:meth:`geovl.models.Backbone.optimize_for_inference` folds fp32 towers only: folded weights rounded to bf16 moved
real embeddings further from fp32 than bf16 alone.

Rules:

* A pair is a ``Conv2d`` followed, among the same parent's children, by a ``BatchNorm2d`` over its output channels
  (the layout of timm, torchvision and open_clip ResNets: ``conv1, bn1, ...``). Declaration order is not data flow,
  so the rewrite is **verified**: the tower's output on a random batch must match the unrewritten tower's (fp32,
  relative error under 1e-4), else every fold is undone. timm's ``BatchNormAct2d`` keeps its dropout and
  activation; other ``BatchNorm2d`` subclasses are left alone.
* channels-last is used for towers with more than one convolution (CNNs); a ViT's single patch convolution gains
  nothing from it.
* Folding removes the BatchNorm parameters, so a folded model can neither be trained nor saved as its
  architecture: training loads backbones with ``optimize=False``, and :func:`geovl.models.save_backbone` refuses a
  folded one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FoldedPair", "InferenceRewrite", "count_convolutions", "fold_batchnorm", "unfold_batchnorm"]

#: Largest relative L2 error between the tower's outputs before and after folding (fp32) that counts as equal.
FOLD_TOLERANCE = 1e-4


@dataclass
class FoldedPair:
    """One folded Conv2d/BatchNorm2d pair, with what :func:`unfold_batchnorm` needs to undo it."""

    parent: nn.Module
    bn_name: str
    bn: nn.BatchNorm2d
    conv: nn.Conv2d
    weight: torch.Tensor
    bias: torch.Tensor | None


@dataclass
class InferenceRewrite:
    """What :meth:`geovl.models.Backbone.optimize_for_inference` did.

    Attributes:
        folded: BatchNorm layers merged into their convolutions (0 when the check failed and they were restored).
        channels_last: whether the image tower runs in channels-last layout.
        max_error: relative L2 error of the tower's output on the check batch (fp32; 0 when nothing was folded).
        skipped: why nothing was folded, when that happened for a reason other than having nothing to fold.
    """

    folded: int = 0
    channels_last: bool = False
    max_error: float = 0.0
    skipped: str | None = None


def count_convolutions(module: nn.Module) -> int:
    """Number of ``Conv2d`` layers in ``module``."""
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


def _bn_replacement(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What stays of ``bn`` once folded: nothing for a plain BatchNorm2d, dropout + activation for timm's
    ``BatchNormAct2d``; ``None`` for subclasses whose forward is unknown."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if type(bn).__name__ == "BatchNormAct2d" and isinstance(drop, nn.Module) and isinstance(act, nn.Module):
        return nn.Sequential(drop, act)
    return None


def fold_batchnorm(module: nn.Module) -> list[FoldedPair]:
    """Fold every eval-mode Conv2d -> BatchNorm2d pair of ``module`` in place (see the module docstring).

    The arithmetic runs in fp32 whatever the parameters' dtype; the results are stored back in it.
    """
    pairs: list[FoldedPair] = []
    for parent in list(module.modules()):
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in itertools.pairwise(children):
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            replacement = _bn_replacement(bn)
            if (replacement is None or bn.num_features != conv.out_channels or bn.running_mean is None
                    or bn.running_var is None or bn.training):
                continue
            with torch.no_grad():
                dtype = conv.weight.dtype
                var, mean = bn.running_var.float(), bn.running_mean.float()
                gamma = bn.weight.float() if bn.weight is not None else torch.ones_like(var)
                beta = bn.bias.float() if bn.bias is not None else torch.zeros_like(var)
                scale = gamma / torch.sqrt(var + bn.eps)
                bias = conv.bias.float() if conv.bias is not None else torch.zeros_like(var)
                weight = conv.weight.float() * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
                pairs.append(FoldedPair(parent, bn_name, bn, conv, conv.weight, conv.bias))
                conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
                conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(dtype), requires_grad=False)
            setattr(parent, bn_name, replacement)
    return pairs


def unfold_batchnorm(pairs: list[FoldedPair]) -> None:
    """Undo :func:`fold_batchnorm`: the original convolution weights and BatchNorm layers go back."""
    for pair in reversed(pairs):
        pair.conv.weight = _parameter(pair.weight)
        pair.conv.bias = None if pair.bias is None else _parameter(pair.bias)
        setattr(pair.parent, pair.bn_name, pair.bn)


def _parameter(tensor: torch.Tensor) -> nn.Parameter:
    return tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, requires_grad=tensor.requires_grad)


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Largest per-row relative L2 distance between two (B, ...) outputs."""
    ref, out = reference.flatten(1).float(), other.flatten(1).float()
    return float(((out - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).max())


def fold_checked(module: nn.Module, forward: Callable[[], torch.Tensor], tolerance: float = FOLD_TOLERANCE
                 ) -> InferenceRewrite:
    """Fold ``module``'s BatchNorms, keep the result only if ``forward()`` (a fixed fp32 batch through the tower)
    gives the same output within ``tolerance``; otherwise restore every pair and say why."""
    was_training = module.training
    module.eval()
    try:
        try:
            with torch.inference_mode():
                reference = forward()
        except (RuntimeError, ValueError) as failure:  # a tower that cannot take the check batch is left as it is
            return InferenceRewrite(skipped=f"the check batch did not run ({failure}); the model is left as loaded")
        pairs = fold_batchnorm(module)
        if not pairs:
            return InferenceRewrite()
        with torch.inference_mode():
            error = relative_error(reference, forward())
        if not error <= tolerance:
            unfold_batchnorm(pairs)
            return InferenceRewrite(max_error=error, skipped=f"folding changed the output (relative error "
                                                            f"{error:.2e}); BatchNorm kept")
        return InferenceRewrite(folded=len(pairs), max_error=error)  # the original weights are let go
    finally:
        module.train(was_training)
