"""Typed configuration of a contrastive training run, loaded from YAML or JSON.

A config file mirrors :class:`TrainConfig`: top-level sections ``model``, ``data``, ``optim``, ``loss``,
``eval`` and ``run``. Unknown keys are errors (a typo never silently falls back to a default), and
``--set section.key=value`` overrides apply on top of the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SourceConfig",
    "TrainConfig",
    "apply_overrides",
    "build_config",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "optim_checks",
    "read_config_data",
    "settings_hash",
]


@dataclass
class SourceConfig:
    """One image-text source of the training mixture.

    Attributes:
        path: dataset file or folder.
        format: a :data:`geovl.data.FORMATS` name (``karpathy``, ``skyscript``, ``gaia``, ``webdataset``,
            ``git10m``, ``imagefolder``, ``csv``, ``parquet``...) or ``auto``.
        weight: relative sampling weight in the mixture (a source with weight 2 is drawn twice as often per
            sample as one with weight 1, whatever their sizes).
        split: split(s) to read, e.g. ``train`` or ``[train, val]``; ``null`` for all.
        exclude_split: drop samples of this split (``test`` keeps a benchmark's test split out of training).
        label_prompts: for labelled images without captions (ImageFolder), the caption templates filled with
            the class name, e.g. ``"a satellite image of {}."``.
        label_set: prettify class names through a geovl label set (``eurosat``, ``ucm``) before prompting.
        label_prompt_share: for captioned images that also have a label (a Karpathy set with ``classes.csv``,
            or ``options: {classes_csv: ...}``), the share of draws that take a label prompt instead of a caption,
            which teaches the short class prompts zero-shot classification uses.
        holdout_fraction: keep this seeded fraction of the source out of training (e.g. an evaluation split
            for a source that has none); the same fraction is what ``eval`` reports on.
        limit: use at most this many samples (seeded subset), for smoke runs.
        options: extra keyword arguments for the reader (``image_root``, ``caption_column``...).
    """

    path: str
    format: str = "auto"
    weight: float = 1.0
    split: str | list[str] | None = None
    exclude_split: str | None = None
    label_prompts: list[str] = field(default_factory=list)
    label_set: str | None = None
    label_prompt_share: float = 0.0
    holdout_fraction: float = 0.0
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    """Remote-sensing augmentations. Nadir imagery has no canonical "up", so flips and 90-degree rotations are
    on by default; colour jitter is off because colour carries meaning (water, vegetation, bare soil)."""

    random_resized_crop: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    color_jitter: float = 0.0


@dataclass
class DataConfig:
    """The training mixture and how batches are made.

    Attributes:
        cache_images: decode every training image once into memory (uint8, 1.25 x the model's image size).
        cached_views: under ``model.lock_image`` with a timm image tower (trunk + head), the trunk's output (or,
            under ``model.freeze_image_blocks``, the frozen stages' output) is cached for this many views of each
            image and only the rest trains per step
            (:mod:`geovl.training.feature_cache`): view 0 is the plain preprocessing, the others seeded ``augment``
            draws; 1 means no random image augmentation at all. 0 turns the cache off (the locked trunk runs every
            step on freshly augmented pixels). With cached features, ``cache_images`` is not used.
    """

    sources: list[SourceConfig] = field(default_factory=list)
    batch_size: int = 64
    workers: int = 2
    samples_per_epoch: int | None = None
    cache_images: bool = False
    cached_views: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """What to train.

    Attributes:
        name: anything :func:`geovl.models.load_backbone` accepts: a registry name, a checkpoint folder, or
            ``random:<architecture>`` to train from scratch.
        lock_image / lock_text: freeze a tower except its projection head (LiT: ``lock_text`` with a pretrained
            text tower; ``lock_image`` with a timm image tower trains ``visual.head`` on cached trunk features).
            A model where nothing but the temperature would train is refused when training starts.
        freeze_image_blocks / freeze_text_blocks: freeze the first N transformer blocks (and the embeddings); on a
            timm EfficientNet-style image trunk, the stem and the first N stages, whose output is then cached
            like a locked trunk's (``data.cached_views``) while the later stages train.
        init_logit_scale: initial temperature as ln(1/T); ``null`` keeps the checkpoint's.
    """

    name: str = "random:geovl-tiny"
    lock_image: bool = False
    lock_text: bool = False
    freeze_image_blocks: int = 0
    freeze_text_blocks: int = 0
    init_logit_scale: float | None = None


@dataclass
class OptimConfig:
    """AdamW with a linear warm-up and cosine decay; ``steps`` counts optimizer steps."""

    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 100
    steps: int = 1000
    min_lr_ratio: float = 0.0
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "auto"
    #: learning-rate multiplier of the pretrained encoders (a timm image trunk, a transformers text tower) against
    #: the freshly initialised heads when they train together (full or partial fine-tuning)
    pretrained_lr_scale: float = 1.0


def optim_checks(optim: OptimConfig) -> list[tuple[bool, str]]:
    """``(ok, message)`` checks every trainer makes of its ``optim`` section."""
    return [
        (optim.steps >= 1, f"optim.steps must be >= 1, got {optim.steps}"),
        (optim.grad_accum >= 1, f"optim.grad_accum must be >= 1, got {optim.grad_accum}"),
        (0 <= optim.warmup_steps <= optim.steps,
         f"optim.warmup_steps must be in [0, steps={optim.steps}], got {optim.warmup_steps}"),
        (optim.lr > 0, f"optim.lr must be > 0, got {optim.lr}"),
        (optim.precision in ("fp32", "bf16", "fp16", "auto"),
         f"optim.precision must be fp32, bf16, fp16 or auto, got {optim.precision!r}"),
    ]


@dataclass
class LossConfig:
    """``clip``: symmetric InfoNCE with a learned temperature. ``siglip``: pairwise sigmoid with a learned bias."""

    kind: Literal["clip", "siglip"] = "clip"
    label_smoothing: float = 0.0


@dataclass
class EvalConfig:
    """Periodic evaluation during training (and once at the end).

    Attributes:
        every_steps: run every N optimizer steps (0: only at the end).
        retrieval: Karpathy caption sets evaluated with image-text retrieval on ``retrieval_split``.
        zeroshot: labelled image sets (ImageFolder) evaluated with zero-shot classification.
        zeroshot_holdout: evaluate zero-shot only on the held-out fraction of a training source with the same
            path (its ``holdout_fraction``), so classes seen in training are never scored on training images.
    """

    every_steps: int = 0
    retrieval: list[str] = field(default_factory=list)
    retrieval_split: str = "test"
    zeroshot: list[str] = field(default_factory=list)
    zeroshot_label_set: str | None = None
    zeroshot_limit_per_class: int | None = None
    batch_size: int = 128


@dataclass
class RunConfig:
    """Where and how the run is written."""

    output: str = "runs/out"
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    save_every: int = 200
    keep_checkpoints: int = 2
    tensorboard: bool = False
    save_dtype: Literal["fp32", "fp16", "bf16"] = "fp32"


@dataclass
class TrainConfig:
    """A whole training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if not self.data.sources:
            raise ValueError("data.sources is empty: list at least one image-text source")
        for i, src in enumerate(self.data.sources):
            if src.weight <= 0:
                raise ValueError(f"data.sources[{i}].weight must be > 0, got {src.weight}")
            if not 0 <= src.holdout_fraction < 1:
                raise ValueError(f"data.sources[{i}].holdout_fraction must be in [0, 1), got {src.holdout_fraction}")
            if not 0 <= src.label_prompt_share <= 1 or (src.label_prompt_share and not src.label_prompts):
                raise ValueError(f"data.sources[{i}].label_prompt_share must be in [0, 1] and needs label_prompts, "
                                 f"got {src.label_prompt_share}")
            for t in src.label_prompts:
                if "{}" not in t:
                    raise ValueError(f"data.sources[{i}].label_prompts: {t!r} has no '{{}}' for the class name")
        checks = [
            (self.data.batch_size >= 2,
             f"data.batch_size must be >= 2 for a contrastive loss, got {self.data.batch_size}"),
            (self.data.workers >= 0, f"data.workers must be >= 0, got {self.data.workers}"),
            *optim_checks(self.optim),
            (self.loss.kind in ("clip", "siglip"), f"loss.kind must be 'clip' or 'siglip', got {self.loss.kind!r}"),
            (self.run.save_every >= 1, f"run.save_every must be >= 1, got {self.run.save_every}"),
            (self.run.log_every >= 1, f"run.log_every must be >= 1, got {self.run.log_every}"),
            (self.eval.every_steps >= 0, f"eval.every_steps must be >= 0, got {self.eval.every_steps}"),
            (self.run.keep_checkpoints >= 1, f"run.keep_checkpoints must be >= 1, got {self.run.keep_checkpoints}"),
            (self.data.cached_views >= 0, f"data.cached_views must be >= 0, got {self.data.cached_views}"),
            (self.optim.pretrained_lr_scale > 0,
             f"optim.pretrained_lr_scale must be > 0, got {self.optim.pretrained_lr_scale}"),
            (0 < self.data.augment.crop_scale[0] <= self.data.augment.crop_scale[1] <= 1,
             f"data.augment.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.data.augment.crop_scale}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# ---------------------------------------------------------------- (de)serialisation


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` (parsed YAML / JSON) checked against the field type ``tp`` and converted to it."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)  # type: ignore[arg-type]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(typing.get_args(tp), value, where)
    if origin is not None and origin in _GENERIC_CONVERTERS:
        return _GENERIC_CONVERTERS[origin](typing.get_args(tp), value, where)
    if tp is Any:
        return value
    if origin is None and tp in _SCALAR_CONVERTERS:
        return _SCALAR_CONVERTERS[tp](value, where)
    raise ValueError(f"{where}: unsupported field type {tp!r}")


def _convert_union(args: tuple[Any, ...], value: Any, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, value, where)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError(errors[0] if errors else f"{where}: invalid value {value!r}")


def _convert_literal(args: tuple[Any, ...], value: Any, where: str) -> Any:
    if value not in args:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
    return value


def _convert_list(args: tuple[Any, ...], value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
    return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]


def _convert_tuple(args: tuple[Any, ...], value: Any, where: str) -> tuple[Any, ...]:
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if not isinstance(value, (list, tuple)) or len(value) != len(args):
        raise ValueError(f"{where}: expected a list of {len(args)} values, got {value!r}")
    return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))


def _convert_dict(args: tuple[Any, ...], value: Any, where: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def _convert_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    return value


def _convert_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    return value


def _convert_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _convert_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {value!r}")
    return value


_GENERIC_CONVERTERS: dict[Any, Callable[[tuple[Any, ...], Any, str], Any]] = {
    Literal: _convert_literal,
    list: _convert_list,
    tuple: _convert_tuple,
    dict: _convert_dict,
}
_SCALAR_CONVERTERS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _convert_bool,
    int: _convert_int,
    float: _convert_float,
    str: _convert_str,
}


def _build(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from plain data (the parsed YAML / JSON)."""
    config: TrainConfig = _build(TrainConfig, data, "config")
    config.validate()
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain data (tuples become lists) of a config dataclass, which :func:`build_config` (for a
    :class:`TrainConfig`, :func:`config_from_dict`) reads back to an equal config."""
    return dict(json.loads(json.dumps(dataclasses.asdict(config))))


def settings_hash(config: Any) -> str:
    """Hash of the settings a resumed run must share with the run it continues: everything but the ``run`` and
    ``eval`` sections and ``optim.steps`` (so a run may be extended)."""
    data = config_to_dict(config)
    for key in ("run", "eval"):
        data.pop(key, None)
    data["optim"].pop("steps", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to config data, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        parts = key.split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(raw)
    return data


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML (``.yaml`` / ``.yml``) or JSON config, apply overrides, validate.

    Relative dataset paths are kept as written (they resolve against the working directory, as on the
    command line).
    """
    data = read_config_data(path, overrides)
    try:
        return config_from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def build_config(cls: type[Any], data: dict[str, Any], where: str = "config") -> Any:
    """A config dataclass ``cls`` from plain data, every value converted to its annotated type; unknown keys and
    values of the wrong type raise ``ValueError`` naming the key (``where.section.key``)."""
    return _build(cls, data, where)


def read_config_data(path: str | os.PathLike[str], overrides: list[str] | None = None) -> dict[str, Any]:
    """The plain data of a YAML / JSON config file with ``section.key=value`` overrides applied."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such config file")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{p}: invalid YAML ({exc})") from None
    elif p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: invalid JSON ({exc})") from None
    else:
        raise ValueError(f"{p}: config must be .yaml, .yml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"{p}: top level must be a mapping of sections")
    apply_overrides(data, overrides or [])
    return data


def required_packages(config: TrainConfig) -> dict[str, str]:
    """The optional packages (``{module: extra}``) a run of ``config`` needs, so a command can check them all before
    it starts working (:func:`geovl._optional.require_all`)."""
    need: dict[str, str] = {}
    if config.run.tensorboard:
        need["tensorboard"] = "train"
    if any(_format_of(src) == "git10m" for src in config.data.sources):
        need["datasets"] = "train"
    return need


def _format_of(source: SourceConfig) -> str:
    if source.format != "auto":
        return source.format
    from geovl.data import autodetect

    try:
        return autodetect(source.path)
    except (ValueError, FileNotFoundError):
        return "auto"  # the reader reports the problem when the run opens it
