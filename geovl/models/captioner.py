"""Captioners: one interface, loaded by name with ``load_model(name)`` (registry ``kind="captioner"``).

Two families:

* **geovl captioners** (:class:`BackboneCaptioner`): a shared dual-encoder backbone, frozen, whose patch features and
  pooled embedding feed a small transformer decoder (:mod:`geovl.models.caption_decoder`) over a word vocabulary
  (:mod:`geovl.models.caption_vocab`). The backbone never changes, so the one backbone a server or the demo loads
  serves search, classification and captioning. A checkpoint folder holds only the decoder:
  ``captioner_config.json`` (format ``geovl-captioner``: the backbone's name and sha256, the decoder shape, the
  vocabulary, the weights' sha256) and ``model.safetensors``; the backbone loads by its name, and a backbone whose
  weights differ from the ones the decoder was trained on is refused.
* **BLIP** through transformers (:mod:`geovl.models.blip`): a ``save_pretrained`` folder of
  ``BlipForConditionalGeneration`` with its processor, by hub id (``Salesforce/blip-image-captioning-base``) or path.

Every captioner has ``uint8_transform`` (PIL image -> uint8 tensor, run in decode workers), ``device``,
``caption_pixels(uint8 pixels, decoding) -> captions`` and ``record()`` (its identity for run manifests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from geovl import __version__
from geovl.io.fs import atomic_folder, sha256_file
from geovl.models.backbone import Backbone
from geovl.models.caption_decoder import CaptionDecoder, DecoderConfig, DecodingState, pack_image_features
from geovl.models.caption_vocab import BOS, EOS, PAD, UNK, WordVocab
from geovl.models.decoding import DecodingConfig, generate
from geovl.models.factory import load_backbone, register_loader
from geovl.models.record import model_record
from geovl.models.registry import DEFAULT_CAPTIONER, get_checkpoint, list_checkpoints
from geovl.models.weights import CheckpointNotFoundError, fetch_checkpoint

__all__ = [
    "CAPTIONER_CONFIG",
    "CAPTIONER_FORMAT",
    "BackboneCaptioner",
    "CaptionModel",
    "PackedImageFeatures",
    "load_captioner",
    "save_captioner",
]

CAPTIONER_CONFIG = "captioner_config.json"
CAPTIONER_WEIGHTS = "model.safetensors"
CAPTIONER_FORMAT = "geovl-captioner"


class CaptionModel(Protocol):
    """What every captioner offers (geovl's and BLIP)."""

    name: str

    @property
    def device(self) -> torch.device: ...

    @property
    def uint8_transform(self) -> Callable[[Any], torch.Tensor]: ...

    def caption_pixels(self, pixels: torch.Tensor, decoding: DecodingConfig) -> list[str]: ...

    def record(self) -> dict[str, Any]: ...


class PackedImageFeatures(nn.Module):
    """Normalised pixels -> the backbone's packed (B, N + 1, C) image features (patches, then pooled embedding)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.model = backbone.model  # registered, so parameters() and state_dict() see the weights
        self.eval()  # frozen: batch-norm statistics and dropout as in inference, whoever calls train()

    def train(self, mode: bool = True) -> PackedImageFeatures:
        """The backbone is frozen: it stays in eval mode (``train(True)`` is accepted and changes nothing)."""
        return super().train(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.towers.image_features(pixels)
        return pack_image_features(feats.patches, feats.pooled)


class BackboneCaptioner:
    """A frozen backbone + a trained caption decoder (see the module docstring).

    Args:
        backbone: the image features' source; its weights must be the ones the decoder was trained on.
        decoder: the caption decoder.
        vocab: its word vocabulary.
        name: what the user asked for (registry name or path).
        checkpoint: the folder it came from.
    """

    def __init__(self, backbone: Backbone, decoder: CaptionDecoder, vocab: WordVocab, *, name: str = "captioner",
                 checkpoint: str | None = None, sha256: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        if len(vocab) != decoder.config.vocab_size:
            raise ValueError(f"vocabulary of {len(vocab)} words for a decoder of {decoder.config.vocab_size}")
        self.backbone = backbone
        self.decoder = decoder.to(backbone.device).eval()
        self.vocab = vocab
        self.name = name
        self.checkpoint = checkpoint
        self.sha256 = sha256
        self.metadata = dict(metadata or {})
        self.features = PackedImageFeatures(backbone)

    def __repr__(self) -> str:
        cfg = self.decoder.config
        return (f"BackboneCaptioner(name={self.name!r}, backbone={self.backbone.info.name!r}, words={len(self.vocab)}, "
                f"width={cfg.width}, layers={cfg.layers}, device={self.device})")

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def uint8_transform(self) -> Callable[[Any], torch.Tensor]:
        return self.backbone.uint8_transform

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) pixels (as ``uint8_transform`` makes them) -> packed float32 features."""
        with torch.no_grad():
            return self.features(self.backbone.normalize_uint8(pixels)).float()

    def caption_features(self, features: torch.Tensor, decoding: DecodingConfig) -> list[str]:
        """Captions of images given their packed features (as :meth:`image_features` returns them)."""
        features = features.to(self.device, torch.float32)
        states: dict[str, DecodingState] = {}

        def step(tokens: torch.Tensor, rows: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
            if parents is None:
                states["s"] = self.decoder.start(features, rows)
            else:
                states["s"].reorder(parents)
            return self.decoder.step(states["s"], tokens)

        max_new = min(decoding.max_length, self.decoder.config.max_length - 1)
        if max_new < decoding.max_length:
            decoding = _with_max_length(decoding, max_new)
        with torch.no_grad():
            ids = generate(step, features.shape[0], bos=BOS, eos=EOS, config=decoding, device=self.device,
                           special=[PAD, BOS, UNK])
        return [self.vocab.decode(seq) for seq in ids]

    def caption_pixels(self, pixels: torch.Tensor, decoding: DecodingConfig) -> list[str]:
        """Captions of a uint8 pixel batch."""
        return self.caption_features(self.image_features(pixels), decoding)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "captioner", "family": "geovl", "checkpoint": self.checkpoint,
                "checkpoint_sha256": self.sha256, "backbone": model_record(self.backbone), "words": len(self.vocab)}


def _with_max_length(decoding: DecodingConfig, max_length: int) -> DecodingConfig:
    from dataclasses import replace

    return replace(decoding, max_length=max_length, min_length=min(decoding.min_length, max_length))


# ---------------------------------------------------------------- folders


def save_head_folder(folder: str | os.PathLike[str], *, config_file: str, fmt: str, backbone: Backbone,
                     state: dict[str, torch.Tensor], fields: dict[str, Any], metadata: dict[str, Any],
                     dtype: torch.dtype = torch.float32) -> Path:
    """Write a head trained on a frozen backbone as a folder (atomically: a crash never leaves half a folder):
    ``model.safetensors`` (``state`` stored as ``dtype``) and ``config_file`` (``fmt``, the backbone's name and
    sha256, ``fields``, the weights' sha256, the geovl version and ``metadata``)."""
    from safetensors.torch import save_file

    record = model_record(backbone)
    dest = Path(folder)
    with atomic_folder(dest) as tmp:
        tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items()}
        save_file(tensors, str(tmp / CAPTIONER_WEIGHTS), metadata={"format": fmt})
        config = {
            "format": fmt,
            "format_version": 1,
            "backbone": {"name": record["name"], "architecture": record["architecture"],
                         "sha256": record.get("checkpoint_sha256")},
            **fields,
            "sha256": sha256_file(tmp / CAPTIONER_WEIGHTS),
            "geovl_version": __version__,
            "metadata": metadata,
        }
        (tmp / config_file).write_text(json.dumps(config, indent=2) + "\n")
        for path in (tmp, tmp / CAPTIONER_WEIGHTS, tmp / config_file):  # temporary folders are private
            path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def save_captioner(captioner: BackboneCaptioner, folder: str | os.PathLike[str],
                   metadata: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write the decoder as a geovl captioner folder (atomically: a crash never leaves half a folder).

    The backbone is recorded by its name and sha256, not copied (see the module docstring). ``dtype`` is the storage
    type of the weights (``torch.float16`` halves a shipped folder); they are loaded as float32.
    """
    fields = {"decoder": captioner.decoder.config.to_dict(), "vocab": list(captioner.vocab.words)}
    return save_head_folder(folder, config_file=CAPTIONER_CONFIG, fmt=CAPTIONER_FORMAT, backbone=captioner.backbone,
                            state=captioner.decoder.state_dict(), fields=fields,
                            metadata={**captioner.metadata, **(metadata or {})}, dtype=dtype)


def read_head_config(path: Path, filename: str, fmt: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The JSON config ``path / filename`` of a head folder, checked for its ``format`` and required ``keys``."""
    try:
        config = json.loads((path / filename).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path / filename}: invalid JSON ({exc})") from exc
    if config.get("format") != fmt:
        raise ValueError(f"{path / filename}: format is {config.get('format')!r}, expected {fmt!r}")
    for key in keys:
        if key not in config:
            raise ValueError(f"{path / filename}: missing '{key}'")
    return dict(config)


def head_backbone(folder: Path, wanted: dict[str, Any], backbone: Backbone | None, device: str | torch.device,
                  precision: str) -> Backbone:
    """The backbone a head folder was trained on: ``backbone`` when given (checked by sha256), else loaded by the
    name the folder records (a path relative to the folder when one exists there)."""
    if backbone is None:
        source = str(wanted["name"])
        local = folder / source if not Path(source).is_absolute() and (folder / source).exists() else None
        backbone = load_backbone(local or source, device=device, precision=precision)
    expected = wanted.get("sha256")
    got = model_record(backbone).get("checkpoint_sha256")
    if expected and got != expected:
        raise ValueError(f"{folder}: this model was trained on backbone {wanted.get('name')!r} with weights sha256 "
                         f"{expected[:12]}..., but the backbone given has {str(got)[:12]}...; load it with its own "
                         "backbone")
    return backbone


def load_captioner_folder(path: str | os.PathLike[str], *, backbone: Backbone | None = None,
                          device: str | torch.device = "auto", precision: str = "auto",
                          name: str | None = None) -> BackboneCaptioner:
    """A geovl captioner folder, with ``backbone`` (shared) or the backbone its config names."""
    from safetensors.torch import load_file

    folder = Path(path)
    config = read_head_config(folder, CAPTIONER_CONFIG, CAPTIONER_FORMAT, ("backbone", "decoder", "vocab"))
    weights = folder / CAPTIONER_WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{folder}: {CAPTIONER_WEIGHTS} is missing")
    digest = sha256_file(weights)
    if config.get("sha256") and digest != config["sha256"]:
        raise ValueError(f"{weights}: sha256 {digest} does not match {CAPTIONER_CONFIG}'s {config['sha256']}; "
                         "the checkpoint is corrupt")
    backbone = head_backbone(folder, config["backbone"], backbone, device, precision)
    decoder = CaptionDecoder(DecoderConfig.from_dict(config["decoder"]))
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    missing, unexpected = decoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: does not fit the decoder in {CAPTIONER_CONFIG} (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return BackboneCaptioner(backbone, decoder, WordVocab(tuple(config["vocab"])), name=name or str(folder),
                             checkpoint=str(folder), sha256=digest, metadata=config.get("metadata", {}))


def load_captioner(model: str | os.PathLike[str] = DEFAULT_CAPTIONER, *, backbone: Backbone | None = None,
                   device: str | torch.device = "auto", precision: str = "auto") -> CaptionModel:
    """Load a captioner by registry name, hub id (BLIP) or local folder.

    Args:
        model: a registry name (``geovl-caption-small``, ``blip-base``), a geovl captioner folder, a transformers
            BLIP folder, or a BLIP hub id (``Salesforce/blip-image-captioning-base``, from the local cache).
        backbone: an already loaded backbone to share (geovl captioners); it must be the one the decoder was
            trained on.
        device, precision: as for :func:`geovl.models.load_backbone`.

    Raises:
        CheckpointNotFoundError: the weights are neither on this machine nor downloadable.
        ValueError: a folder that is neither kind of captioner, or a corrupt one.
    """
    from geovl.models import blip

    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / CAPTIONER_CONFIG).is_file():
            return load_captioner_folder(path, backbone=backbone, device=device, precision=precision)
        if blip.is_blip_folder(path):
            return blip.load_blip(path, device=device, precision=precision)
        raise ValueError(f"{path}: neither a geovl captioner folder ({CAPTIONER_CONFIG}) nor a transformers BLIP "
                         "folder (config.json of a BlipForConditionalGeneration)")
    if path.exists():
        raise ValueError(f"{path}: a captioner is a folder, not a file")
    try:
        spec = get_checkpoint(text)
    except KeyError:
        if "/" in text and not text.startswith((".", "/", "~")):  # a hub id
            return blip.load_blip_hub(text, device=device, precision=precision)
        known = ", ".join(s.name for s in list_checkpoints(kind="captioner"))
        raise KeyError(f"unknown captioner '{text}'. Known: {known}; or a captioner folder, or a BLIP hub id "
                       "(Salesforce/blip-image-captioning-base)") from None
    if spec.kind != "captioner":
        raise ValueError(f"'{text}' is a {spec.kind}, not a captioner")
    folder = fetch_checkpoint(spec)
    if spec.format == "hf_blip":
        return blip.load_blip(folder, device=device, precision=precision, name=spec.name)
    if spec.format != "geovl_captioner":
        raise CheckpointNotFoundError(f"captioner '{spec.name}' has format {spec.format!r}, which geovl cannot load")
    return load_captioner_folder(folder, backbone=backbone, device=device, precision=precision, name=spec.name)


register_loader("captioner", load_captioner)
