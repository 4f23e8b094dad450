"""Saving and loading geovl generators (text-to-image diffusion) by registry name or folder.

A generator folder is a diffusers pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``; what
``GeoDiffusionPipeline.save_pretrained`` writes) plus ``geovl_generator.json``: the format tag, the sha256 of the
UNet weights (checked on load, so a corrupt or swapped file is named), the backbone the text features come from
(name and sha256, checked against the backbone used) and free metadata (training config, evaluation figures).
Folders are written atomically: a crash never leaves half a generator in place of a good one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging as diffusers_logging

from geovl import __version__
from geovl.io.fs import atomic_folder, sha256_file
from geovl.models.backbone import Backbone
from geovl.models.captioner import head_backbone
from geovl.models.diffusion import GeoDiffusionPipeline
from geovl.models.factory import register_loader
from geovl.models.record import model_record
from geovl.models.registry import DEFAULT_GENERATOR, get_checkpoint, list_checkpoints
from geovl.models.weights import CheckpointNotFoundError, fetch_checkpoint

__all__ = ["GENERATOR_CONFIG", "GENERATOR_FORMAT", "load_generator", "load_generator_folder", "save_generator"]

GENERATOR_CONFIG = "geovl_generator.json"
GENERATOR_FORMAT = "geovl_diffusion"
UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


@contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """diffusers' info messages and progress bars off while loading or saving (they name internals, not problems)."""
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)
        diffusers_logging.enable_progress_bar()


def save_generator(pipe: GeoDiffusionPipeline, folder: str | os.PathLike[str], *,
                   metadata: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``pipe`` (UNet stored as ``dtype``) and its ``geovl_generator.json`` to ``folder`` atomically."""
    dest = Path(folder)
    record = model_record(pipe.backbone)
    with atomic_folder(dest) as tmp:
        unet_dtype = next(pipe.unet.parameters()).dtype
        with _quiet_diffusers():  # diffusers warns about casting with .to(); every module of this UNet casts
            if unet_dtype != dtype:
                pipe.unet.to(dtype)
            try:
                pipe.save_pretrained(tmp, safe_serialization=True)
            finally:
                if unet_dtype != dtype:
                    pipe.unet.to(unet_dtype)
        config = {
            "format": GENERATOR_FORMAT,
            "format_version": 1,
            "backbone": {"name": record["name"], "architecture": record["architecture"],
                         "sha256": record.get("checkpoint_sha256")},
            "tile": pipe.tile,
            "sha256": sha256_file(tmp / UNET_WEIGHTS),
            "geovl_version": __version__,
            "metadata": {**pipe.metadata, **(metadata or {})},
        }
        (tmp / GENERATOR_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        for path in tmp.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        tmp.chmod(0o755)
    return dest


def load_generator_folder(path: str | os.PathLike[str], *, backbone: Backbone | None = None,
                          device: str | torch.device = "auto", precision: str = "auto",
                          name: str | None = None) -> GeoDiffusionPipeline:
    """A generator folder, with ``backbone`` (shared) or the backbone it names."""
    folder = Path(path)
    try:
        config = json.loads((folder / GENERATOR_CONFIG).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{folder / GENERATOR_CONFIG}: invalid JSON ({exc})") from exc
    if config.get("format") != GENERATOR_FORMAT:
        raise ValueError(f"{folder / GENERATOR_CONFIG}: format is {config.get('format')!r}, expected "
                         f"{GENERATOR_FORMAT!r}")
    weights = folder / UNET_WEIGHTS
    if not weights.is_file() or not (folder / "model_index.json").is_file():
        raise ValueError(f"{folder}: not a complete generator folder (model_index.json and {UNET_WEIGHTS} needed)")
    digest = sha256_file(weights)
    if config.get("sha256") and digest != config["sha256"]:
        raise ValueError(f"{weights}: sha256 {digest} does not match {GENERATOR_CONFIG}'s {config['sha256']}; "
                         "the checkpoint is corrupt")
    # the text features are cheap next to sampling: keep them in fp32 unless a precision is asked for
    backbone = head_backbone(folder, config["backbone"], backbone, device,
                             "fp32" if precision == "auto" else precision)
    target = backbone.device
    dtype = torch.float32
    if precision in ("fp16", "bf16") or (precision == "auto" and torch.device(target).type == "cuda"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with _quiet_diffusers():
        pipe = GeoDiffusionPipeline.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.to(target).eval()
    pipe.attach_backbone(backbone)
    pipe.name = name or str(folder)
    pipe.metadata = dict(config.get("metadata", {}))
    pipe.metadata["sha256"] = digest
    return pipe


def load_generator(model: str | os.PathLike[str] = DEFAULT_GENERATOR, *, backbone: Backbone | None = None,
                   device: str | torch.device = "auto", precision: str = "auto") -> GeoDiffusionPipeline:
    """Load a generator by registry name (``geovl-gen-small``) or folder.

    Raises:
        CheckpointNotFoundError: the weights are not on this machine.
        KeyError: an unknown name. ValueError: a folder that is not a generator, or a corrupt one.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / GENERATOR_CONFIG).is_file():
            return load_generator_folder(path, backbone=backbone, device=device, precision=precision)
        raise ValueError(f"{path}: not a geovl generator folder (no {GENERATOR_CONFIG})")
    if path.exists():
        raise ValueError(f"{path}: a generator is a folder, not a file")
    try:
        spec = get_checkpoint(text)
    except KeyError:
        known = ", ".join(s.name for s in list_checkpoints(kind="diffusion"))
        raise KeyError(f"unknown generator '{text}'. Known: {known}; or a generator folder") from None
    if spec.kind != "diffusion":
        raise ValueError(f"'{text}' is a {spec.kind}, not a generator")
    if spec.format != GENERATOR_FORMAT:
        raise CheckpointNotFoundError(f"generator '{spec.name}' has format {spec.format!r}, which geovl cannot load")
    folder = fetch_checkpoint(spec)
    return load_generator_folder(folder, backbone=backbone, device=device, precision=precision, name=spec.name)


register_loader("diffusion", load_generator)
