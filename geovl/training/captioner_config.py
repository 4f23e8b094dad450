"""Typed configuration of a captioner training run (``geovl train captioner --config run.yaml``).

Sections: ``model`` (the backbone the decoder reads and the decoder's shape), ``data`` (the same image-text
mixture as contrastive training, :class:`geovl.training.config.DataConfig`), ``optim``, ``loss``, ``eval``
(periodic BLEU / CIDEr-D on caption sets' validation splits) and ``run``. Unknown keys are errors;
``--set section.key=value`` overrides apply on top of the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from geovl.models.registry import DEFAULT_MODEL
from geovl.training.config import DataConfig, OptimConfig, RunConfig, build_config, optim_checks, read_config_data

__all__ = [
    "CaptionEvalSet",
    "CaptionerEvalConfig",
    "CaptionerLossConfig",
    "CaptionerModelConfig",
    "CaptionerTrainConfig",
    "load_captioner_config",
]


@dataclass
class CaptionerModelConfig:
    """The frozen backbone and the decoder trained on its features.

    Attributes:
        backbone: anything :func:`geovl.models.load_backbone` accepts; it is never trained here, so the finished
            captioner shares it with search and classification.
        width, layers, heads, mlp_ratio, dropout: the transformer decoder.
        max_length: longest caption in tokens (start and end tokens included); longer training captions are cut.
        vocab_min_count: keep the words seen at least this often in the training captions (others become
            ``<unk>``, which is never generated).
        vocab_max_size: cap the vocabulary at the most frequent words (``null``: no cap).
    """

    backbone: str = DEFAULT_MODEL
    width: int = 256
    layers: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    max_length: int = 32
    vocab_min_count: int = 2
    vocab_max_size: int | None = None


@dataclass
class CaptionerLossConfig:
    """Token cross-entropy (teacher forcing) with label smoothing."""

    label_smoothing: float = 0.1


@dataclass
class CaptionEvalSet:
    """A caption dataset's split(s) to evaluate on, never trained on: a split kept out of ``data.sources``, or the
    ``holdout_fraction`` a training source with the same value keeps out (a selection set; ``name`` tells them
    apart in the figures)."""

    path: str
    split: str | list[str] = "test"
    limit: int | None = None
    holdout_fraction: float = 0.0
    name: str | None = None


@dataclass
class CaptionerEvalConfig:
    """Periodic evaluation: captions decoded for a split of caption datasets, scored with BLEU and CIDEr-D.

    Attributes:
        every_steps: every N optimizer steps (0: only at the end).
        datasets: caption datasets (Karpathy JSON, COCO, tables) with reference sentences, each with the split
            evaluated and at most ``limit`` images (the first ones, so every evaluation sees the same images).
        method, beam_size: decoding used for the evaluation.
        batch_size: images per forward pass.
        select_by: a figure (``<name>/<metric>``, e.g. ``rsicd-holdout/CIDEr-D``); the captioner is also written to
            ``<output>/best`` whenever it reaches the best value of that figure so far (higher is better).
    """

    every_steps: int = 0
    datasets: list[CaptionEvalSet] = field(default_factory=list)
    method: Literal["greedy", "beam"] = "beam"
    beam_size: int = 3
    batch_size: int = 64
    select_by: str | None = None


@dataclass
class CaptionerTrainConfig:
    """A whole captioner training run."""

    model: CaptionerModelConfig = field(default_factory=CaptionerModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: CaptionerLossConfig = field(default_factory=CaptionerLossConfig)
    eval: CaptionerEvalConfig = field(default_factory=CaptionerEvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        m = self.model
        checks = [
            (bool(self.data.sources), "data.sources is empty: list at least one captioned image source"),
            (m.width % m.heads == 0 if m.heads > 0 else False,
             f"model.width ({m.width}) must be a multiple of model.heads ({m.heads})"),
            (m.layers >= 1, f"model.layers must be >= 1, got {m.layers}"),
            (0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}"),
            (3 <= m.max_length <= 128, f"model.max_length must be in 3..128, got {m.max_length}"),
            (m.vocab_min_count >= 1, f"model.vocab_min_count must be >= 1, got {m.vocab_min_count}"),
            (m.vocab_max_size is None or m.vocab_max_size > 4,
             f"model.vocab_max_size must be > 4, got {m.vocab_max_size}"),
            (0 <= self.loss.label_smoothing < 1,
             f"loss.label_smoothing must be in [0, 1), got {self.loss.label_smoothing}"),
            (self.data.batch_size >= 1, f"data.batch_size must be >= 1, got {self.data.batch_size}"),
            (self.data.cached_views >= 1, f"data.cached_views must be >= 1 (the backbone is frozen and its features "
                                          f"are cached), got {self.data.cached_views}"),
            *optim_checks(self.optim),
            (self.eval.every_steps >= 0, f"eval.every_steps must be >= 0, got {self.eval.every_steps}"),
            (self.eval.beam_size >= 1, f"eval.beam_size must be >= 1, got {self.eval.beam_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        for i, src in enumerate(self.data.sources):
            if src.weight <= 0:
                raise ValueError(f"data.sources[{i}].weight must be > 0, got {src.weight}")


def captioner_config_from_dict(data: dict[str, Any]) -> CaptionerTrainConfig:
    config: CaptionerTrainConfig = build_config(CaptionerTrainConfig, data, "config")
    config.validate()
    return config


def load_captioner_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> CaptionerTrainConfig:
    """Read a YAML / JSON captioner config, apply ``section.key=value`` overrides, validate."""
    try:
        return captioner_config_from_dict(read_config_data(path, overrides))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
