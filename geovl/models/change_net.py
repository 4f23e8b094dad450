"""The trainable part of geovl's change captioners: fusion of two dates' features, change heads and the decoder.

Inputs are the shared backbone's features of the two dates (siamese: one frozen tower, the same weights for both),
each packed as (B, N + 1, C) (:func:`geovl.models.caption_decoder.pack_image_features`: N grid cells, then the
pooled embedding). The network follows MModalCC's fusion, each part switchable (:class:`ChangeNetConfig`) so that
an ablation is a configuration change:

* **difference tokens**: ``proj(f2 - f1)`` per cell, plus learned positions;
* **unimodal difference cross-attention** (``difference_attention``): the difference tokens are queries over both
  dates' cell tokens (keys / values), so each cell sees what it looked like before and after;
* **semantic branch** (``semantic_classes > 0``): when class maps of both dates exist (SECOND-CC ships them), their
  per-cell class histograms become tokens whose difference cross-attends (cross-modal) to the visual difference
  tokens; pairs without maps skip the branch (its tokens are absent from the memory);
* **change head**: P(changed) from the mean difference token and the pooled-embedding difference;
* **mask head**: one change logit per grid cell (the heat map), trained on change masks where they exist;
* **verdict token** (``verdict_token``): a learned token for "changed" / "unchanged" joins the memory, so the
  decoder writes a no-change sentence exactly when told the pair is unchanged (at training time the true flag, at
  inference the change head's verdict);
* the decoder (:class:`geovl.models.caption_decoder.TokenDecoder`, ``gated`` cross-attention by default) attends to
  the fused streams: difference tokens, the global difference token, the verdict token and, when present,
  semantic tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geovl.models.caption_decoder import DecoderConfig, TokenDecoder

__all__ = ["ChangeNet", "ChangeNetConfig", "ChangeOutputs", "semantic_histograms"]


@dataclass(frozen=True)
class ChangeNetConfig:
    """Shape and switches of a :class:`ChangeNet`.

    Attributes:
        decoder: the word decoder; its ``feature_dim`` / ``embed_dim`` / ``patches`` describe the backbone's packed
            features (C channels, D-wide pooled embedding, N = h * w cells).
        grid: (h, w) of the backbone's feature map at ``image_size``.
        image_size: square input side both dates are resized to.
        difference_attention: unimodal difference cross-attention (else the plain difference tokens).
        fusion_layers: difference cross-attention layers.
        semantic_classes: classes of the semantic maps (0: no semantic branch).
        verdict_token: condition the decoder on the change verdict.
    """

    decoder: DecoderConfig
    grid: tuple[int, int]
    image_size: int = 256
    difference_attention: bool = True
    fusion_layers: int = 1
    semantic_classes: int = 0
    verdict_token: bool = True

    def __post_init__(self) -> None:
        if self.grid[0] * self.grid[1] != self.decoder.patches:
            raise ValueError(f"grid {self.grid} has {self.grid[0] * self.grid[1]} cells but the decoder expects "
                             f"{self.decoder.patches} patches")
        if self.fusion_layers < 1 or self.semantic_classes < 0 or self.image_size < 16:
            raise ValueError("fusion_layers must be >= 1, semantic_classes >= 0 and image_size >= 16")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["grid"] = list(self.grid)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChangeNetConfig:
        data = dict(data)
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown change-captioner setting(s) {', '.join(unknown)}")
        data["decoder"] = DecoderConfig.from_dict(data["decoder"])
        data["grid"] = tuple(int(v) for v in data["grid"])
        return cls(**data)


@dataclass
class ChangeOutputs:
    """What :meth:`ChangeNet.forward` returns (logits; probabilities are their sigmoids)."""

    memory: torch.Tensor  # (B, M, width) decoder memory without the verdict token
    change_logit: torch.Tensor  # (B,)
    mask_logits: torch.Tensor  # (B, h * w)


def semantic_histograms(maps: torch.Tensor, classes: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) integer class maps -> (B, h * w, classes) per-cell class fractions (values outside are ignored)."""
    if maps.ndim != 3:
        raise ValueError(f"semantic maps must be (B, H, W) class indices, got shape {tuple(maps.shape)}")
    valid = (maps >= 0) & (maps < classes)
    onehot = F.one_hot(maps.clamp(0, classes - 1).long(), classes).float() * valid[..., None]
    pooled = F.adaptive_avg_pool2d(onehot.permute(0, 3, 1, 2), grid)
    return pooled.flatten(2).transpose(1, 2)


class _CrossLayer(nn.Module):
    """Pre-norm cross-attention (queries over a key / value sequence) followed by an MLP."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_q, self.ln_kv = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        k = self.ln_kv(kv)
        q = q + self.attn(self.ln_q(q), k, k, need_weights=False)[0]
        return q + self.mlp(self.ln_mlp(q))


class ChangeNet(nn.Module):
    """Two dates' packed features -> decoder memory, P(changed) and per-cell change logits (module docstring)."""

    def __init__(self, cfg: ChangeNetConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.decoder
        w, n = d.width, d.patches
        self.cell_proj = nn.Sequential(nn.LayerNorm(d.feature_dim), nn.Linear(d.feature_dim, w))
        self.diff_proj = nn.Sequential(nn.LayerNorm(d.feature_dim), nn.Linear(d.feature_dim, w))
        self.global_proj = nn.Sequential(nn.LayerNorm(2 * d.embed_dim), nn.Linear(2 * d.embed_dim, w))
        self.pos = nn.Parameter(torch.randn(n, w) * 0.02)
        self.date = nn.Parameter(torch.randn(2, w) * 0.02)
        self.fusion = nn.ModuleList(_CrossLayer(w, d.heads, d.dropout) for _ in range(cfg.fusion_layers)) \
            if cfg.difference_attention else None
        if cfg.semantic_classes:
            self.sem_proj = nn.Linear(2 * cfg.semantic_classes, w)
            self.sem_cross = _CrossLayer(w, d.heads, d.dropout)
        self.stream = nn.Parameter(torch.randn(3, w) * 0.02)  # difference, global, semantic
        self.memory_ln = nn.LayerNorm(w)
        self.change_head = nn.Sequential(nn.LayerNorm(2 * w), nn.Linear(2 * w, w), nn.GELU(), nn.Linear(w, 1))
        self.mask_head = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 1))
        self.verdict = nn.Embedding(2, w) if cfg.verdict_token else None
        self.decoder = TokenDecoder(d)

    def _check(self, features: torch.Tensor, which: str) -> None:
        d = self.config.decoder
        if features.ndim != 3 or features.shape[1] != d.patches + 1 or features.shape[2] != d.feature_dim:
            raise ValueError(f"expected packed {which} features of shape (B, {d.patches + 1}, {d.feature_dim}), got "
                             f"{tuple(features.shape)}: the change captioner was trained on another image tower or "
                             "input size")

    def forward(self, before: torch.Tensor, after: torch.Tensor, semantic: torch.Tensor | None = None
                ) -> ChangeOutputs:
        """Packed (B, N + 1, C) features of both dates (+ optional (B, N, 2K) semantic histograms of both dates)."""
        self._check(before, "before")
        self._check(after, "after")
        d = self.config.decoder
        dtype = self.pos.dtype
        before, after = before.to(dtype), after.to(dtype)
        cells_a, cells_b = before[:, :-1], after[:, :-1]
        diff = self.diff_proj(cells_b - cells_a) + self.pos
        if self.fusion is not None:
            context = torch.cat([self.cell_proj(cells_a) + self.pos + self.date[0],
                                 self.cell_proj(cells_b) + self.pos + self.date[1]], dim=1)
            for layer in self.fusion:
                diff = layer(diff, context)
        pooled = torch.cat([after[:, -1, : d.embed_dim] - before[:, -1, : d.embed_dim],
                            after[:, -1, : d.embed_dim] * before[:, -1, : d.embed_dim]], dim=-1)
        glob = self.global_proj(pooled)[:, None]
        streams = [diff + self.stream[0], glob + self.stream[1]]
        if semantic is not None and self.config.semantic_classes:
            sem = self.sem_proj(semantic.to(dtype)) + self.pos
            streams.append(self.sem_cross(sem, diff) + self.stream[2])
        memory = self.memory_ln(torch.cat(streams, dim=1))
        change_logit = self.change_head(torch.cat([diff.mean(dim=1), glob[:, 0]], dim=-1))[:, 0]
        mask_logits = self.mask_head(diff)[..., 0]
        return ChangeOutputs(memory, change_logit, mask_logits)

    def with_verdict(self, memory: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        """The decoder's memory: ``memory`` plus the verdict token for each row (``changed``: (B,) bool)."""
        if self.verdict is None:
            return memory
        token = self.verdict(changed.long().to(memory.device))[:, None].to(memory.dtype)
        return torch.cat([memory, token], dim=1)
