"""Feature containers returned by the backbone: pooled embeddings plus patch- and token-level features."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageFeatures:
    """Image-tower outputs for a batch.

    Attributes:
        pooled: (B, D) image embeddings in the joint space (not normalised).
        patches: (B, N, C) patch-level features before the projection (C is the tower width); for a ViT the N
            patch tokens (class token excluded), for a ResNet or a timm convnet the N = h*w cells of the last feature
            map (raster order).
        grid: (h, w) with h * w == N, to reshape ``patches`` into a spatial map.
    """

    pooled: torch.Tensor
    patches: torch.Tensor
    grid: tuple[int, int]

    def patch_map(self) -> torch.Tensor:
        """``patches`` as a (B, C, h, w) feature map."""
        b, _, c = self.patches.shape
        h, w = self.grid
        return self.patches.transpose(1, 2).reshape(b, c, h, w)


@dataclass
class TextFeatures:
    """Text-tower outputs for a batch.

    Attributes:
        pooled: (B, D) text embeddings in the joint space (not normalised).
        tokens: (B, L, C) per-token features after the final layer norm, before the projection.
        mask: (B, L) bool, True where ``tokens`` holds a real token (not padding).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
