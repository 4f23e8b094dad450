"""The captioning head of geovl's captioners: a small transformer decoder that cross-attends to image features.

Input features come packed as one (B, N + 1, C) tensor (:func:`pack_image_features`): the N patch features of the
image tower's last feature map (C channels), then the image's pooled embedding in the joint space (D <= C values,
zero-padded to C). The decoder projects both to its width, so the memory it attends to holds N spatial tokens (with
learned positions) and one global token.

Blocks are pre-norm: causal self-attention, cross-attention to the memory, MLP. Self-attention keys and values are
cached during decoding, so each generated token costs one token's computation (:class:`DecodingState`). Input and
output word embeddings are tied.

:class:`TokenDecoder` is the part that does not depend on what the memory is (words, blocks, decoding); other
heads (the change captioner) give it their own (B, M, width) memory. With ``gated=True`` each block's
cross-attention is scaled by ``tanh(gate)`` (a per-channel gate, 0 at initialisation, as in Flamingo), so a decoder
starts as a pure language model and opens its view of the image as it trains; with no memory at all
(``memory=None``) the blocks skip cross-attention (text-only training).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CaptionDecoder", "DecoderConfig", "DecodingState", "TokenDecoder", "pack_image_features"]


def pack_image_features(patches: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """(B, N, C) patches and (B, D) pooled embeddings (D <= C) as one (B, N + 1, C) tensor."""
    if pooled.shape[-1] > patches.shape[-1]:
        raise ValueError(f"the pooled embedding ({pooled.shape[-1]}) is wider than the patch features "
                         f"({patches.shape[-1]}); they cannot be packed")
    row = F.pad(pooled.to(patches.dtype), (0, patches.shape[-1] - pooled.shape[-1]))
    return torch.cat([patches, row[:, None]], dim=1)


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of a :class:`CaptionDecoder`.

    Attributes:
        vocab_size: words, special tokens included.
        feature_dim: C, the channels of the packed image features.
        embed_dim: D, the width of the pooled embedding inside them.
        patches: N, the number of patch features (the memory has N + 1 tokens).
        width, layers, heads, mlp_ratio, dropout: the transformer.
        max_length: longest token sequence (start and end tokens included).
        gated: scale each block's cross-attention by ``tanh(gate)`` (see the module docstring).
    """

    vocab_size: int
    feature_dim: int
    embed_dim: int
    patches: int
    width: int = 256
    layers: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    max_length: int = 32
    gated: bool = False

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"decoder width {self.width} is not divisible by heads {self.heads}")
        for name in ("vocab_size", "feature_dim", "embed_dim", "patches", "layers", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"decoder {name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown decoder setting(s) {', '.join(unknown)}")
        return cls(**data)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, w = x.shape
    return x.view(b, t, heads, w // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


class _Block(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        w, self.heads = cfg.width, cfg.heads
        hidden = int(w * cfg.mlp_ratio)
        self.ln_self, self.qkv, self.out_self = nn.LayerNorm(w), nn.Linear(w, 3 * w), nn.Linear(w, w)
        self.ln_cross, self.q_cross, self.kv_cross = nn.LayerNorm(w), nn.Linear(w, w), nn.Linear(w, 2 * w)
        self.out_cross = nn.Linear(w, w)
        self.gate = nn.Parameter(torch.zeros(w)) if cfg.gated else None
        self.ln_mlp = nn.LayerNorm(w)
        self.mlp = nn.Sequential(nn.Linear(w, hidden), nn.GELU(), nn.Linear(hidden, w))
        self.drop = nn.Dropout(cfg.dropout)
        self.p = cfg.dropout

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv_cross(memory).chunk(2, dim=-1)
        return _heads(k, self.heads), _heads(v, self.heads)

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor] | None,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        p = self.p if self.training else 0.0
        q, k, v = (_heads(t, self.heads) for t in self.qkv(self.ln_self(x)).chunk(3, dim=-1))
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        causal = q.shape[2] > 1  # one new token attends to every cached one
        x = x + self.drop(self.out_self(_merge(F.scaled_dot_product_attention(q, k, v, dropout_p=p,
                                                                              is_causal=causal))))
        if memory_kv is not None:
            q = _heads(self.q_cross(self.ln_cross(x)), self.heads)
            cross = self.out_cross(_merge(F.scaled_dot_product_attention(q, *memory_kv, dropout_p=p)))
            x = x + self.drop(cross if self.gate is None else torch.tanh(self.gate) * cross)
        return x + self.drop(self.mlp(self.ln_mlp(x)))


class DecodingState:
    """Per-layer memory keys / values for the running rows and the growing self-attention cache."""

    def __init__(self, memory_kv: list[tuple[torch.Tensor, torch.Tensor] | None]) -> None:
        self.memory_kv = memory_kv
        self.caches: list[dict[str, torch.Tensor]] = [{} for _ in memory_kv]
        self.length = 0

    def reorder(self, parents: torch.Tensor) -> None:
        for cache in self.caches:
            for key in cache:
                cache[key] = cache[key].index_select(0, parents)


class TokenDecoder(nn.Module):
    """Memory tokens (B, M, width) + caption prefix -> next-word logits: words, blocks and cached decoding."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.config = cfg
        w = cfg.width
        self.token_emb = nn.Embedding(cfg.vocab_size, w)
        self.token_pos = nn.Parameter(torch.randn(cfg.max_length, w) * 0.02)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(w)
        self.drop = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.token_emb.weight, std=0.02)

    @property
    def layers(self) -> list[_Block]:
        return [cast(_Block, block) for block in self.blocks]

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        if start + tokens.shape[1] > self.config.max_length:
            raise ValueError(f"captions are at most {self.config.max_length} tokens for this decoder")
        return self.drop(self.token_emb(tokens) + self.token_pos[start: start + tokens.shape[1]])

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_out(x) @ self.token_emb.weight.t()

    def decode(self, memory: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced (B, T, V) next-token logits of ``tokens`` given (B, M, width) memory (``None``: text only)."""
        x = self._embed(tokens, 0)
        for block in self.layers:
            x = block(x, None if memory is None else block.memory_kv(memory))
        return self._logits(x)

    def start_memory(self, memory: torch.Tensor, rows: torch.Tensor) -> DecodingState:
        """A decoding state for sequences ``rows`` (indices into the batch of ``memory``)."""
        memory = memory.index_select(0, rows)
        return DecodingState([block.memory_kv(memory) for block in self.layers])

    def step(self, state: DecodingState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed the tokens not yet seen (all of ``tokens`` on the first call, then the last one); (R, V) logits."""
        new = tokens[:, state.length:]
        x = self._embed(new, state.length)
        for block, kv, cache in zip(self.layers, state.memory_kv, state.caches, strict=True):
            x = block(x, kv, cache)
        state.length = tokens.shape[1]
        return self._logits(x[:, -1])


class CaptionDecoder(TokenDecoder):
    """Packed image features + caption prefix -> next-word logits (see the module docstring)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__(cfg)
        w = cfg.width
        self.patch_proj = nn.Sequential(nn.LayerNorm(cfg.feature_dim), nn.Linear(cfg.feature_dim, w))
        self.pooled_proj = nn.Sequential(nn.LayerNorm(cfg.embed_dim), nn.Linear(cfg.embed_dim, w))
        self.memory_pos = nn.Parameter(torch.randn(cfg.patches + 1, w) * 0.02)
        self.memory_ln = nn.LayerNorm(w)

    def memory(self, features: torch.Tensor) -> torch.Tensor:
        """(B, N + 1, C) packed features -> (B, N + 1, width) memory tokens."""
        cfg = self.config
        if features.ndim != 3 or features.shape[1] != cfg.patches + 1 or features.shape[2] != cfg.feature_dim:
            raise ValueError(f"expected packed image features of shape (B, {cfg.patches + 1}, {cfg.feature_dim}), "
                             f"got {tuple(features.shape)}: the decoder was trained on another image tower or size")
        features = features.to(self.memory_pos.dtype)
        patches = self.patch_proj(features[:, :-1])
        pooled = self.pooled_proj(features[:, -1, : cfg.embed_dim])[:, None]
        return self.memory_ln(torch.cat([patches, pooled], dim=1) + self.memory_pos)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced (B, T, V) next-token logits at every position of ``tokens`` (causal)."""
        return self.decode(self.memory(features), tokens)

    def start(self, features: torch.Tensor, rows: torch.Tensor) -> DecodingState:
        """A decoding state for sequences ``rows`` (indices into the batch of ``features``)."""
        return self.start_memory(self.memory(features), rows)
