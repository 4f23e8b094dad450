"""BLIP captioning through transformers (``BlipForConditionalGeneration``), behind geovl's captioner interface.

A BLIP folder is what ``BlipForConditionalGeneration.save_pretrained`` and ``BlipProcessor.save_pretrained`` write
(a hub snapshot of ``Salesforce/blip-image-captioning-base`` is one): ``config.json``, the weights
(``model.safetensors`` or ``pytorch_model.bin``, possibly sharded), the tokenizer (``tokenizer.json`` or
``vocab.txt``) and the image processor (``preprocessor_config.json``, or ``processor_config.json`` from
transformers 5).

Rules:

* **Pixels**: ``uint8_transform`` squashes an image to the processor's size (no crop) with its resampling filter
  (bicubic for BLIP); :meth:`BlipCaptioner.caption_pixels` rescales the uint8 pixels (``rescale_factor``, 1/255)
  and normalises them with the processor's ``image_mean`` / ``image_std``.
* **Decoding** (:class:`~geovl.models.decoding.DecodingConfig` -> ``generate``): greedy is ``num_beams=1``
  without sampling; beam is ``num_beams=beam_size`` with ``length_penalty`` and early stopping (one beam is
  greedy); nucleus samples with ``top_p`` and ``temperature`` (no top-k cut) from the torch RNG seeded with
  ``seed`` inside a forked RNG state, so a seed gives the same captions for the same batch on the same device and
  the caller's RNG is left untouched. ``max_length`` / ``min_length`` count generated tokens (``max_new_tokens`` /
  ``min_new_tokens``, capped by the text model's positions); ``no_repeat_ngram_size`` and ``repetition_penalty``
  apply as given.
* **Prompt**: none by default (unconditional captioning); with a prompt (``"an aerial photograph of"``) BLIP
  continues it and the caption starts with the prompt, as transformers returns it.
* **Captions** are decoded without special tokens, stripped, first letter upper-cased.
* **Precision**: fp32 on the CPU; on CUDA what :func:`~geovl.models.device.resolve_precision` picks (bf16 / fp16
  allowed).
* **Loading** never touches the network for a folder; a hub id resolves as registry ``HubRepo`` checkpoints do
  (:func:`~geovl.models.weights.fetch_checkpoint`: ``<checkpoint_dir>/<org>--<name>``, then the Hugging Face
  cache, then a download unless offline), and raises :class:`~geovl.models.weights.CheckpointNotFoundError`
  saying what to download and where to put it. A folder with missing files, or whose weights do not cover the
  captioning model, raises ``ValueError``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from geovl.models.backbone import build_uint8_transform
from geovl.models.decoding import DecodingConfig
from geovl.models.device import precision_name, resolve_device, resolve_precision
from geovl.models.record import weights_digest
from geovl.models.registry import CheckpointSpec, HubRepo, Preprocess
from geovl.models.weights import fetch_checkpoint

__all__ = ["BLIP_ARCHITECTURE", "BlipCaptioner", "is_blip_folder", "load_blip", "load_blip_hub"]

logger = logging.getLogger(__name__)

BLIP_ARCHITECTURE = "BlipForConditionalGeneration"

#: PIL resampling codes (as image processors store them) -> geovl's interpolation names.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


class BlipCaptioner:
    """A transformers BLIP captioning model and its processor (see the module docstring for the rules).

    Args:
        model: the ``BlipForConditionalGeneration``, already on its device and dtype.
        tokenizer: its tokenizer (decodes the generated ids; encodes ``prompt``).
        preprocess: the processor's image size, resampling, mean and std.
        name: what the user asked for (registry name, hub id or path).
        checkpoint: the folder it came from.
        rescale_factor: what uint8 pixels are multiplied by before normalising (1/255).
        prompt: text BLIP continues; ``None`` for unconditional captions.
    """

    def __init__(self, model: Any, tokenizer: Any, preprocess: Preprocess, *, name: str = "blip",
                 checkpoint: str | None = None, rescale_factor: float = 1 / 255, prompt: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.name = name
        self.checkpoint = checkpoint
        self.rescale_factor = float(rescale_factor)
        self.prompt = prompt
        self._uint8_transform = build_uint8_transform(preprocess)
        self._mean = torch.tensor(preprocess.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocess.std, device=self.device).view(1, 3, 1, 1)
        self._digest: str | None = None

    def __repr__(self) -> str:
        return (f"BlipCaptioner(name={self.name!r}, image_size={self.preprocess.image_size}, "
                f"precision={precision_name(self.dtype)}, device={self.device})")

    @property
    def device(self) -> torch.device:
        device: torch.device = next(self.model.parameters()).device
        return device

    @property
    def dtype(self) -> torch.dtype:
        dtype: torch.dtype = next(self.model.parameters()).dtype
        return dtype

    @property
    def uint8_transform(self) -> Callable[[Any], torch.Tensor]:
        """PIL image -> (3, S, S) uint8 tensor, squashed to the processor's size."""
        return self._uint8_transform

    def pixel_values(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) pixels (as :attr:`uint8_transform` makes them) -> the model's normalised input."""
        size = self.preprocess.image_size
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) pixel batch, got shape {tuple(pixels.shape)}")
        if pixels.dtype != torch.uint8:
            raise ValueError(f"expected uint8 pixels (from uint8_transform), got {pixels.dtype}")
        if tuple(pixels.shape[2:]) != (size, size):
            raise ValueError(f"expected {size}x{size} pixels (this BLIP model's input size), got "
                             f"{pixels.shape[2]}x{pixels.shape[3]}")
        x = pixels.to(self.device, non_blocking=True).float().mul_(self.rescale_factor)
        return x.sub_(self._mean).div_(self._std).to(self.dtype)

    def generate_kwargs(self, decoding: DecodingConfig, prompt_length: int = 1) -> dict[str, Any]:
        """The ``generate`` options for ``decoding`` (see the module docstring)."""
        positions = int(getattr(self.model.config.text_config, "max_position_embeddings", 512))
        max_new = max(1, min(decoding.max_length, positions - prompt_length))
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "min_new_tokens": min(decoding.min_length, max_new),
            "no_repeat_ngram_size": decoding.no_repeat_ngram_size,
            "repetition_penalty": decoding.repetition_penalty,
            "num_beams": 1,
            "do_sample": False,
        }
        if decoding.method == "beam" and decoding.beam_size > 1:
            kwargs.update(num_beams=decoding.beam_size, length_penalty=decoding.length_penalty, early_stopping=True)
        elif decoding.method == "nucleus":
            kwargs.update(do_sample=True, top_p=decoding.top_p, temperature=decoding.temperature, top_k=0)
        return kwargs

    def _prompt_ids(self, batch: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.prompt:
            return None, None
        enc = self.tokenizer(self.prompt, return_tensors="pt")
        ids = enc["input_ids"].to(self.device).repeat(batch, 1)
        mask = enc["attention_mask"].to(self.device).repeat(batch, 1)
        return ids, mask

    def caption_pixels(self, pixels: torch.Tensor, decoding: DecodingConfig) -> list[str]:
        """Captions of a uint8 pixel batch, one per image."""
        if pixels.ndim == 4 and pixels.shape[0] == 0:
            return []
        values = self.pixel_values(pixels)
        input_ids, attention_mask = self._prompt_ids(values.shape[0])
        # BLIP drops the prompt's last token ([SEP]) and replaces its first with the decoder's start token
        prompt_length = 1 if input_ids is None else input_ids.shape[1] - 1
        kwargs = self.generate_kwargs(decoding, prompt_length)
        with torch.inference_mode():
            if decoding.method == "nucleus":
                devices = [self.device] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(decoding.seed)
                    ids = self.model.generate(pixel_values=values, input_ids=input_ids,
                                              attention_mask=attention_mask, **kwargs)
            else:
                ids = self.model.generate(pixel_values=values, input_ids=input_ids, attention_mask=attention_mask,
                                          **kwargs)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [tidy_caption(text) for text in texts]

    def record(self) -> dict[str, Any]:
        """The captioner's identity for run manifests (the sha256 covers the weight files)."""
        if self._digest is None and self.checkpoint:
            self._digest = weights_digest(Path(self.checkpoint))
        return {"name": self.name, "kind": "captioner", "family": "BLIP", "checkpoint": self.checkpoint,
                "checkpoint_sha256": self._digest}


def tidy_caption(text: str) -> str:
    """Strip a decoded caption and upper-case its first letter."""
    text = " ".join(text.split())
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------- folders


def _read_config(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_blip_folder(path: str | os.PathLike[str]) -> bool:
    """True for a folder whose ``config.json`` is a BLIP model's (``model_type`` ``blip`` or the captioning
    architecture)."""
    folder = Path(path)
    config = _read_config(folder) if folder.is_dir() else None
    if config is None:
        return False
    return config.get("model_type") == "blip" or BLIP_ARCHITECTURE in (config.get("architectures") or [])


def _check_files(folder: Path) -> None:
    """Raise ``ValueError`` naming every file group a BLIP folder lacks."""
    config = _read_config(folder)
    missing = []
    if config is None:
        missing.append("config.json (a readable JSON file)")
    groups = (("weights", _WEIGHT_FILES), ("tokenizer", _TOKENIZER_FILES), ("image processor", _PROCESSOR_FILES))
    for what, names in groups:
        if not any((folder / n).is_file() for n in names):
            missing.append(f"{what} ({' or '.join(names)})")
    if missing:
        raise ValueError(f"{folder}: not a complete BLIP folder; missing {'; '.join(missing)}. Save one with "
                         "BlipForConditionalGeneration.save_pretrained and BlipProcessor.save_pretrained, or "
                         "download the whole hub repository")
    architectures = (config or {}).get("architectures") or []
    if architectures and BLIP_ARCHITECTURE not in architectures:
        raise ValueError(f"{folder}: a {', '.join(architectures)} model, not a BLIP captioning model "
                         f"({BLIP_ARCHITECTURE})")


def _dtype_for(device: torch.device, precision: str) -> torch.dtype:
    dtype = resolve_precision(precision, device)  # validates the name
    if device.type == "cpu" and dtype != torch.float32:
        if precision != "auto":
            logger.warning("BLIP runs in fp32 on the CPU; ignoring precision=%s", precision)
        return torch.float32
    return dtype


def _rgb(values: Any, what: str) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        values = [values] * 3
    if len(values) != 3:
        raise ValueError(f"the image processor's {what} {values!r} is not one value per RGB channel")
    return float(values[0]), float(values[1]), float(values[2])


def preprocess_of(image_processor: Any) -> tuple[Preprocess, float]:
    """The squash-resize :class:`Preprocess` and the rescale factor a BLIP image processor describes."""
    size = image_processor.size
    height = getattr(size, "height", None) or (size.get("height") if isinstance(size, dict) else None)
    width = getattr(size, "width", None) or (size.get("width") if isinstance(size, dict) else None)
    if not height or not width:
        raise ValueError(f"the image processor's size {size!r} gives no height and width")
    if height != width:
        raise ValueError(f"the image processor resizes to {height}x{width}; geovl runs BLIP on square inputs only")
    resample = int(getattr(image_processor, "resample", 3) or 3)
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if getattr(image_processor, "do_normalize", True):
        mean, std = _rgb(image_processor.image_mean, "image_mean"), _rgb(image_processor.image_std, "image_std")
    rescale = float(image_processor.rescale_factor) if getattr(image_processor, "do_rescale", True) else 1.0
    pre = Preprocess(image_size=int(height), mean=mean, std=std, interpolation=_RESAMPLE.get(resample, "bicubic"),
                     resize_mode="squash")
    return pre, rescale


def load_blip(folder: str | os.PathLike[str], *, device: str | torch.device = "auto", precision: str = "auto",
              name: str | None = None, prompt: str | None = None) -> BlipCaptioner:
    """Load a transformers BLIP captioning folder (never touches the network).

    Raises:
        ValueError: the folder lacks files (named in the message), holds another BLIP model, or its weights do not
            cover the captioning model.
    """
    from transformers import BlipForConditionalGeneration, BlipProcessor

    path = Path(folder)
    _check_files(path)
    dev = resolve_device(device)
    dtype = _dtype_for(dev, precision)
    try:
        loaded: Any = BlipForConditionalGeneration.from_pretrained(str(path), local_files_only=True, dtype=dtype,
                                                                   output_loading_info=True)
        model, info = loaded
        processor = BlipProcessor.from_pretrained(str(path), local_files_only=True)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a loadable BLIP folder ({type(exc).__name__}: {exc})") from exc
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise ValueError(f"{path}: the weights do not cover the BLIP captioning model ({len(missing)} missing, "
                         f"e.g. {', '.join(sorted(missing)[:3])}); is it a complete {BLIP_ARCHITECTURE} checkpoint?")
    pre, rescale = preprocess_of(processor.image_processor)
    return BlipCaptioner(model.to(dev), processor.tokenizer, pre, name=name or str(path), checkpoint=str(path),
                         rescale_factor=rescale, prompt=prompt)


def hub_spec(hub_id: str) -> CheckpointSpec:
    """A registry-style checkpoint row for a BLIP hub id, so it resolves like the named ones."""
    return CheckpointSpec(hub_id, "BLIP", "blip", HubRepo(hub_id), "hf_blip", kind="captioner",
                          preprocess=Preprocess(image_size=384, resize_mode="squash"))


def load_blip_hub(hub_id: str, *, device: str | torch.device = "auto", precision: str = "auto",
                  prompt: str | None = None) -> BlipCaptioner:
    """Load a BLIP hub repository (``Salesforce/blip-image-captioning-base``).

    Looks in ``<checkpoint_dir>/<org>--<name>``, then the Hugging Face cache, then downloads unless offline.

    Raises:
        CheckpointNotFoundError: not on this machine and offline (or the download failed); the message says what
            to download and where to place it.
    """
    folder = fetch_checkpoint(hub_spec(hub_id))
    return load_blip(folder, device=device, precision=precision, name=hub_id, prompt=prompt)
