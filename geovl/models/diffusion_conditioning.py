"""The two conditions of the geovl generator: text (the shared backbone's token features) and resolution.

Rules:

* **Resolution** is a class, as in Text2Earth: web-map zoom levels 10..18, where level ``L`` is ``2 ** (17 - L)``
  m per pixel (level 10: 128 m, level 18: 0.5 m); level 0 is the *null resolution* (unknown or dropped). Any ground
  sample distance maps to its nearest level in log scale; finer than 0.5 m maps to 18, coarser than 128 m to 10.
  The UNet's class embedding has 10 rows: row 0 is the null level, rows 1..9 are levels 10..18.
* **Text** is the backbone's per-token text features (the last hidden states of its text tower, before pooling),
  padded or cut to a fixed length with a mask; the *null text* is the features of the empty string, so that no
  extra parameter is needed for classifier-free guidance and the backbone alone defines both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from geovl.models.backbone import Backbone

__all__ = [
    "LEVELS",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "NULL_LEVEL",
    "RESOLUTION_CLASSES",
    "TextConditioner",
    "TextTokens",
    "gsd_level",
    "level_class",
    "level_gsd",
]

MIN_LEVEL, MAX_LEVEL, NULL_LEVEL = 10, 18, 0
#: The zoom levels the generator knows (coarse to fine).
LEVELS: tuple[int, ...] = tuple(range(MIN_LEVEL, MAX_LEVEL + 1))
#: Rows of the resolution class embedding: the null level and the nine zoom levels.
RESOLUTION_CLASSES = len(LEVELS) + 1


def level_gsd(level: int) -> float:
    """Metres per pixel of zoom level ``level`` (10..18)."""
    if level not in LEVELS:
        raise ValueError(f"zoom level must be in {MIN_LEVEL}..{MAX_LEVEL}, got {level}")
    return float(2.0 ** (17 - level))


def gsd_level(gsd: float | None) -> int:
    """The nearest zoom level (log scale) to ``gsd`` metres per pixel, clamped to 10..18; ``None`` -> 0 (null)."""
    if gsd is None:
        return NULL_LEVEL
    value = float(gsd)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"gsd must be a positive number of metres per pixel, got {gsd!r}")
    return int(min(MAX_LEVEL, max(MIN_LEVEL, round(17 - math.log2(value)))))


def level_class(level: int) -> int:
    """Row of the resolution embedding for a zoom level (0 for the null level)."""
    if level == NULL_LEVEL:
        return 0
    if level not in LEVELS:
        raise ValueError(f"zoom level must be 0 (null) or in {MIN_LEVEL}..{MAX_LEVEL}, got {level}")
    return level - MIN_LEVEL + 1


@dataclass
class TextTokens:
    """Padded text token features: ``features`` (B, L, D) float32 and ``mask`` (B, L) bool (True = a real token)."""

    features: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def to(self, device: torch.device | str) -> TextTokens:
        return TextTokens(self.features.to(device), self.mask.to(device))

    def index(self, rows: torch.Tensor | Sequence[int]) -> TextTokens:
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.features.device)
        return TextTokens(self.features[idx], self.mask[idx])

    @staticmethod
    def cat(parts: Sequence[TextTokens]) -> TextTokens:
        return TextTokens(torch.cat([p.features for p in parts]), torch.cat([p.mask for p in parts]))


class TextConditioner:
    """Backbone text -> fixed-length token features (frozen; never trained by the generator).

    Args:
        backbone: the shared dual encoder.
        length: tokens kept per text (longer texts are cut; shorter ones padded with masked zeros).
    """

    def __init__(self, backbone: Backbone, length: int = 32) -> None:
        if length < 2:
            raise ValueError(f"text length must be >= 2 tokens, got {length}")
        self.backbone = backbone
        self.length = length
        self._null: TextTokens | None = None

    @property
    def dim(self) -> int:
        """Width of the token features."""
        return int(self.null().features.shape[-1])

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 256) -> TextTokens:
        """Token features of ``texts`` on the backbone's device."""
        if isinstance(texts, str):
            raise ValueError("pass a list of texts, not a single string")
        parts = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            feats = self.backbone.text_features(chunk)
            tokens, mask = feats.tokens.float(), feats.mask.bool()
            if tokens.ndim != 3:
                raise ValueError(f"{self.backbone.info.name}: its text tower gives no per-token features")
            n = tokens.shape[1]
            if n >= self.length:
                tokens, mask = tokens[:, :self.length], mask[:, :self.length]
            else:
                pad = self.length - n
                tokens = torch.nn.functional.pad(tokens, (0, 0, 0, pad))
                mask = torch.nn.functional.pad(mask, (0, pad), value=False)
            tokens = tokens * mask.unsqueeze(-1)
            parts.append(TextTokens(tokens.clone(), mask.clone()))
        if not parts:
            raise ValueError("no texts given")
        return TextTokens.cat(parts)

    def null(self) -> TextTokens:
        """The null text (features of the empty string), one row."""
        if self._null is None:
            self._null = self.encode([""])
        return self._null
