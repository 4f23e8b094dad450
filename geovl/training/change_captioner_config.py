"""Typed configuration of a change-captioner training run (``geovl train change-captioner --config run.yaml``).

Sections: ``model`` (the frozen backbone both dates go through, the fusion switches and the decoder), ``data`` (the
training pairs: rendered synthetic scenes and real-texture pasted pairs, the acquisition nuisances applied to the
later date, an optional caption corpus for the language side), ``optim``, ``loss``, ``eval`` (held-out pairs from
other seeds) and ``run``. Unknown keys are errors; ``--set section.key=value`` overrides apply on top of the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from geovl.data.synthetic.config import CHANGE_TYPES
from geovl.models.registry import DEFAULT_MODEL
from geovl.training.config import OptimConfig, RunConfig, build_config, optim_checks, read_config_data

__all__ = [
    "ChangeDataConfig",
    "ChangeEvalConfig",
    "ChangeLossConfig",
    "ChangeModelConfig",
    "ChangeTrainConfig",
    "PastedPairsConfig",
    "RenderedPairsConfig",
    "load_change_config",
]


@dataclass
class ChangeModelConfig:
    """The frozen backbone and the trained network (:class:`geovl.models.change_net.ChangeNetConfig`).

    Attributes:
        backbone: anything :func:`geovl.models.load_backbone` accepts; never trained here.
        image_size: both dates are read at this size (a convolutional tower gives a finer grid at a larger size).
        difference_attention, fusion_layers, semantic_classes, verdict_token: the fusion switches (ablations).
        gated: gated cross-attention in the decoder.
        width, layers, heads, mlp_ratio, dropout, max_length: the transformer.
        vocab_min_count: keep words seen at least this often in the training captions (and the corpus).
    """

    backbone: str = DEFAULT_MODEL
    image_size: int = 256
    difference_attention: bool = True
    fusion_layers: int = 1
    semantic_classes: int = 0
    verdict_token: bool = True
    gated: bool = True
    width: int = 256
    layers: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    max_length: int = 32
    vocab_min_count: int = 2


@dataclass
class RenderedPairsConfig:
    """Rendered synthetic change pairs (:func:`geovl.data.synthetic.change.plan_change_pair`).

    Attributes:
        count: pairs (0: none).
        seed: dataset seed (evaluation uses ``eval.seed``).
        change_types: the change types drawn (LEVIR-CD / LEVIR-CC count buildings and roads as change).
        no_change_fraction: share of unchanged pairs.
        gsd: metres per pixel range of the scenes.
    """

    count: int = 4000
    seed: int = 0
    change_types: list[str] = field(default_factory=lambda: ["none", "buildings_built", "buildings_removed",
                                                             "road_built"])
    no_change_fraction: float = 0.45
    gsd: tuple[float, float] = (0.3, 1.0)


@dataclass
class PastedPairsConfig:
    """Real-texture pairs (:func:`geovl.data.synthetic.paste_change.paste_change_pair`).

    Attributes:
        count: pairs (0, the default: none; set ``sources`` too).
        seed: draw seed.
        sources: Karpathy caption datasets (``dataset.json`` + ``images/``) whose images are cut and pasted; an
            image's class comes from ``classes.csv`` next to the JSON, else from its file name (``bareland_12.jpg``).
        split: the split of those datasets used (keep the evaluation splits out).
        no_change_fraction: share of unchanged pairs.
        removed_fraction: share of the changed pairs that are demolitions (the rest are constructions).
    """

    count: int = 0
    seed: int = 1
    sources: list[str] = field(default_factory=list)
    split: str = "train"
    no_change_fraction: float = 0.45
    removed_fraction: float = 0.25


@dataclass
class ChangeDataConfig:
    """The training pairs and how they are read.

    Attributes:
        rendered, pasted: the two pair sources.
        views: later-date views cached per pair, each a different draw of the acquisition nuisances
            (:mod:`geovl.data.synthetic.nuisance`); every step picks one.
        nuisance_strength: scale of those nuisances (0: none).
        corpus: a change-caption corpus (Karpathy JSON, e.g. LEVIR-CC's captions) for the language side: its words
            join the vocabulary and its sentences train the decoder without images (``loss.corpus_weight``).
        corpus_split: the corpus split used.
        batch_size: pairs per step.
        workers: processes making pairs while the backbone encodes them.
        cache_dir: where the pair features are cached (default ``<run.output>/pair-cache``); runs whose pairs,
            backbone and size agree can share one (each set is keyed by what its features depend on).
    """

    rendered: RenderedPairsConfig = field(default_factory=RenderedPairsConfig)
    pasted: PastedPairsConfig = field(default_factory=PastedPairsConfig)
    views: int = 2
    nuisance_strength: float = 1.0
    corpus: str | None = None
    corpus_split: str = "train"
    batch_size: int = 64
    workers: int = 1
    cache_dir: str | None = None


@dataclass
class ChangeLossConfig:
    """Caption cross-entropy + change / no-change BCE + per-cell mask BCE + corpus language-model loss.

    Attributes:
        mask_cell_fraction: a grid cell is "changed" for the mask head when at least this share of its pixels is.
    """

    label_smoothing: float = 0.1
    change_weight: float = 1.0
    mask_weight: float = 1.0
    corpus_weight: float = 0.2
    mask_cell_fraction: float = 0.05


@dataclass
class ChangeEvalConfig:
    """Held-out pairs made like the training ones from other seeds, scored every ``every_steps`` and at the end.

    Attributes:
        rendered, pasted: held-out pair counts (the pasted ones come from ``pasted_split`` of the same datasets).
        seed: their seed (different from the training seeds).
        threshold: the verdict threshold written into the model: a number, or ``calibrate`` (the one that
            maximises balanced accuracy on these held-out pairs).
        select_by: a figure (``val/balanced_accuracy``, ``val/CIDEr-D``, ...); the best model so far is written to
            ``<output>/best``.
    """

    every_steps: int = 0
    rendered: int = 200
    pasted: int = 200
    pasted_split: str = "val"
    seed: int = 7
    method: Literal["greedy", "beam"] = "beam"
    beam_size: int = 3
    batch_size: int = 64
    threshold: float | Literal["calibrate"] = "calibrate"
    select_by: str | None = None


@dataclass
class ChangeTrainConfig:
    """A whole change-captioner training run."""

    model: ChangeModelConfig = field(default_factory=ChangeModelConfig)
    data: ChangeDataConfig = field(default_factory=ChangeDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: ChangeLossConfig = field(default_factory=ChangeLossConfig)
    eval: ChangeEvalConfig = field(default_factory=ChangeEvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        m, d = self.model, self.data
        bad_types = [c for c in d.rendered.change_types if c not in CHANGE_TYPES]
        threshold = self.eval.threshold
        checks = [
            (d.rendered.count > 0 or (d.pasted.count > 0 and bool(d.pasted.sources)),
             "no training pairs: set data.rendered.count > 0 or data.pasted.count > 0 with data.pasted.sources"),
            (not bad_types, f"data.rendered.change_types: unknown {bad_types}; choose from {CHANGE_TYPES}"),
            (d.pasted.count == 0 or bool(d.pasted.sources), "data.pasted.count > 0 needs data.pasted.sources"),
            (m.width % m.heads == 0 if m.heads > 0 else False,
             f"model.width ({m.width}) must be a multiple of model.heads ({m.heads})"),
            (m.layers >= 1 and m.fusion_layers >= 1, "model.layers and model.fusion_layers must be >= 1"),
            (0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}"),
            (3 <= m.max_length <= 128, f"model.max_length must be in 3..128, got {m.max_length}"),
            (m.image_size >= 32, f"model.image_size must be >= 32, got {m.image_size}"),
            (d.views >= 1, f"data.views must be >= 1, got {d.views}"),
            (d.batch_size >= 2, f"data.batch_size must be >= 2, got {d.batch_size}"),
            (0 <= d.rendered.no_change_fraction <= 1 and 0 <= d.pasted.no_change_fraction <= 1,
             "no_change_fraction must be in [0, 1]"),
            (d.nuisance_strength >= 0, f"data.nuisance_strength must be >= 0, got {d.nuisance_strength}"),
            (0 < self.loss.mask_cell_fraction <= 1, "loss.mask_cell_fraction must be in (0, 1]"),
            (0 <= self.loss.label_smoothing < 1, "loss.label_smoothing must be in [0, 1)"),
            *optim_checks(self.optim),
            (threshold == "calibrate" or (isinstance(threshold, (int, float)) and 0 <= threshold <= 1),
             f"eval.threshold must be a number in [0, 1] or 'calibrate', got {threshold!r}"),
            (threshold != "calibrate" or self.eval.rendered + self.eval.pasted > 0,
             "eval.threshold 'calibrate' needs held-out pairs (eval.rendered or eval.pasted > 0)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def change_config_from_dict(data: dict[str, object]) -> ChangeTrainConfig:
    config: ChangeTrainConfig = build_config(ChangeTrainConfig, data, "config")
    config.validate()
    return config


def load_change_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> ChangeTrainConfig:
    """Read a YAML / JSON change-captioner config, apply ``section.key=value`` overrides, validate."""
    try:
        return change_config_from_dict(read_config_data(path, overrides))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
