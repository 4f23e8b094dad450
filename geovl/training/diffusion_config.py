"""Typed configuration of a generator training run (``geovl train diffusion --config run.yaml``).

Sections: ``model`` (the frozen backbone whose text features condition the UNet, and the UNet's shape), ``data``
(image-text sources with their ground sample distance, the crops and the condition dropout), ``optim``, ``eval``
(sample grids written during training) and ``run``. Unknown keys are errors; ``--set section.key=value``
overrides apply on top of the file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from geovl.models.diffusion import GeneratorConfig
from geovl.models.registry import DEFAULT_MODEL
from geovl.training.config import OptimConfig, RunConfig, SourceConfig, build_config, optim_checks, read_config_data

__all__ = [
    "DiffusionDataConfig",
    "DiffusionEvalConfig",
    "DiffusionModelConfig",
    "DiffusionSourceConfig",
    "DiffusionTrainConfig",
    "diffusion_config_from_dict",
    "load_diffusion_config",
]


@dataclass
class DiffusionModelConfig(GeneratorConfig):
    """The frozen backbone whose text token features condition the UNet (``backbone``), and the UNet's shape and
    noise schedule (the fields of :class:`geovl.models.diffusion.GeneratorConfig`).

    ``init``: a generator (registry name such as ``geovl-gen-small``, or a generator folder) whose UNet weights
    start the run instead of a random initialisation: fine-tuning, or training a bundled generator further. Its
    shape and backbone must match this section.
    """

    backbone: str = DEFAULT_MODEL
    init: str | None = None


@dataclass
class DiffusionSourceConfig(SourceConfig):
    """An image-text source (see :class:`geovl.training.config.SourceConfig`) with its resolution.

    Attributes:
        gsd: metres per pixel of the source's images; a sample's own ``meta["resolution_m"]`` or ``meta["gsd"]``
            (Git-10M rows, Karpathy entries with a ``gsd`` field, synthetic scenes) wins; ``null`` when unknown:
            those samples train the null resolution only.
        scales: downsampling factors: each image is also used shrunk by each factor (GSD times the factor), so that
            one scene teaches several zoom levels; images are then cut into random tiles.
    """

    gsd: float | None = None
    scales: list[int] = field(default_factory=lambda: [1])


@dataclass
class DiffusionDataConfig:
    """Training tiles and conditions.

    Attributes:
        sources: the image-text sources.
        batch_size: tiles per step.
        text_dropout, resolution_dropout, both_dropout: probabilities that a sample's text only, its resolution
            only, or both are replaced by the null condition (the condition-adaptation scheme that lets guidance
            weigh text and resolution separately).
        dihedral: random flips and 90-degree rotations of the tiles.
        cache_dir: where decoded tiles and text features are cached (default ``<run.output>/data-cache``).
    """

    sources: list[DiffusionSourceConfig] = field(default_factory=list)
    batch_size: int = 48
    text_dropout: float = 0.1
    resolution_dropout: float = 0.1
    both_dropout: float = 0.05
    dihedral: bool = True
    cache_dir: str | None = None


@dataclass
class DiffusionEvalConfig:
    """Sample grids written to ``<output>/samples/step-<n>.png`` every ``every_steps`` and at the end.

    Attributes:
        prompts: one grid row each.
        gsds: one grid column each (``null``: no resolution condition).
        steps, guidance: sampler settings of the grids.
    """

    every_steps: int = 0
    prompts: list[str] = field(default_factory=lambda: ["a satellite image of a forest.",
                                                        "a satellite image of a river.",
                                                        "a satellite image of a residential area."])
    gsds: list[float | None] = field(default_factory=lambda: [10.0, 1.0, 0.5])
    steps: int = 25
    guidance: float = 4.0
    seed: int = 0


@dataclass
class DiffusionTrainConfig:
    """A whole generator training run."""

    model: DiffusionModelConfig = field(default_factory=DiffusionModelConfig)
    data: DiffusionDataConfig = field(default_factory=DiffusionDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, weight_decay=0.01, betas=(0.9, 0.99),
                                                                   eps=1e-8, warmup_steps=100, steps=2000))
    eval: DiffusionEvalConfig = field(default_factory=DiffusionEvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    #: EMA decay of the exported weights (0: no EMA); the EMA warms up over the first steps.
    ema_decay: float = 0.999
    #: min-SNR loss weighting gamma (Hang et al. 2023; 0: plain MSE).
    snr_gamma: float = 5.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        d = self.data
        drops = (d.text_dropout, d.resolution_dropout, d.both_dropout)
        checks = [
            (bool(d.sources), "data.sources is empty: name at least one image-text source"),
            (all(s.weight > 0 for s in d.sources), "every source needs weight > 0"),
            (all(s.scales and all(k >= 1 for k in s.scales) for s in d.sources),
             "every source needs scales >= 1 (1: native resolution)"),
            (all(s.gsd is None or s.gsd > 0 for s in d.sources), "a source's gsd must be > 0 m/px or null"),
            (all(0 <= p <= 1 for p in drops) and sum(drops) <= 1,
             "text_dropout, resolution_dropout and both_dropout must be probabilities summing to <= 1"),
            (d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.snr_gamma >= 0, f"snr_gamma must be >= 0, got {self.snr_gamma}"),
            (self.eval.steps >= 1, "eval.steps must be >= 1"),
            *optim_checks(self.optim),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.generator().validate()

    def generator(self) -> GeneratorConfig:
        """The UNet shape of :attr:`model`."""
        shape = {f.name: getattr(self.model, f.name) for f in dataclasses.fields(GeneratorConfig)}
        shape["channels"], shape["attention"] = tuple(shape["channels"]), tuple(shape["attention"])
        return GeneratorConfig(**shape)


def diffusion_config_from_dict(data: dict[str, object]) -> DiffusionTrainConfig:
    """A validated config from plain data (what the YAML file holds)."""
    config: DiffusionTrainConfig = build_config(DiffusionTrainConfig, data, "config")
    config.validate()
    return config


def load_diffusion_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> DiffusionTrainConfig:
    """Read a YAML / JSON generator config, apply ``section.key=value`` overrides, validate."""
    try:
        return diffusion_config_from_dict(read_config_data(path, overrides))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
