"""Change captioners: two dates of one place -> a change caption, a changed / unchanged verdict and a heat map.

Loaded by name with ``load_model(name)`` (registry ``kind="change-captioner"``) or :func:`load_change_captioner`.
geovl's change captioner (:class:`ChangeCaptioner`) reads both dates through the shared backbone (siamese, frozen:
the same image tower as search and captioning) at its own input size, and a trained :class:`~geovl.models.
change_net.ChangeNet` fuses them, judges the pair and writes the caption.

Rules:

* the verdict is P(changed) against the model's ``threshold`` (a caller may pass another one). P(changed) comes
  from one of two sources (:class:`VerdictCalibration`): the trained change head (``"head"``, its threshold
  calibrated on held-out training-like pairs), or the **feature distance** of the two dates (``"distance"``:
  ``d`` = 1 - the mean over grid cells of the cosine similarity of the backbone's cell features, and
  ``P = sigmoid(scale * (d - distance_threshold))``, so ``threshold = 0.5`` means ``d >= distance_threshold``),
  a two-parameter head calibrated on real change pairs with masks. The distance needs no training, does not
  saturate on real imagery the way a head trained on synthetic pairs does, and is what the bundled model uses;
* a pair judged unchanged gets the no-change sentence ``"There is no difference."``
  (:data:`geovl.data.change_sentences.NO_CHANGE_SENTENCES`); a changed pair gets the decoder's caption, written
  with the "changed" verdict token;
* the heat map is the mask head's per-cell probability on the backbone's (h, w) grid over the *after* image;
* a folder holds only the trained part: ``change_captioner_config.json`` (format ``geovl-change-captioner``: the
  backbone's name and sha256, the network's shape, the vocabulary, the threshold, the weights' sha256) and
  ``model.safetensors``; a backbone whose weights differ from the training ones is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from geovl.data.change_sentences import NO_CHANGE_SENTENCES
from geovl.io.fs import sha256_file
from geovl.models.backbone import Backbone, build_uint8_transform
from geovl.models.caption_decoder import DecodingState
from geovl.models.caption_vocab import BOS, EOS, PAD, UNK, WordVocab
from geovl.models.captioner import PackedImageFeatures, head_backbone, read_head_config, save_head_folder
from geovl.models.change_net import ChangeNet, ChangeNetConfig, semantic_histograms
from geovl.models.decoding import DecodingConfig, generate
from geovl.models.factory import register_loader
from geovl.models.record import model_record
from geovl.models.registry import DEFAULT_CHANGE_CAPTIONER, get_checkpoint, list_checkpoints
from geovl.models.weights import CheckpointNotFoundError, fetch_checkpoint

__all__ = [
    "CHANGE_CAPTIONER_CONFIG",
    "CHANGE_CAPTIONER_FORMAT",
    "NO_CHANGE_CAPTION",
    "ChangeCaptionModel",
    "ChangeCaptioner",
    "ChangeResult",
    "VerdictCalibration",
    "feature_distance",
    "load_change_captioner",
    "save_change_captioner",
]

CHANGE_CAPTIONER_CONFIG = "change_captioner_config.json"
CHANGE_CAPTIONER_WEIGHTS = "model.safetensors"
CHANGE_CAPTIONER_FORMAT = "geovl-change-captioner"
#: The caption of a pair judged unchanged.
NO_CHANGE_CAPTION = NO_CHANGE_SENTENCES[0].capitalize() + "."


@dataclass
class ChangeResult:
    """One pair's description.

    Attributes:
        caption: the change caption (the no-change sentence for an unchanged pair).
        changed: the verdict, ``probability >= threshold``.
        probability: P(changed) from the change head.
        heatmap: float32 (h, w) per-cell change probabilities over the after image.
    """

    caption: str
    changed: bool
    probability: float
    heatmap: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"caption": self.caption, "changed": self.changed, "probability": round(self.probability, 6),
                "heatmap": np.round(self.heatmap, 4).tolist()}


@dataclass(frozen=True)
class VerdictCalibration:
    """Where P(changed) comes from (see the module docstring).

    Attributes:
        source: ``"head"`` (the trained change head) or ``"distance"`` (the calibrated feature distance).
        distance_threshold: with ``"distance"``, the feature distance at which P(changed) = 0.5.
        scale: with ``"distance"``, the slope of P(changed) in the distance.
        calibrated_on: what the calibration was fitted on (for records).
    """

    source: str = "head"
    distance_threshold: float = 0.5
    scale: float = 20.0
    calibrated_on: str = ""

    def __post_init__(self) -> None:
        if self.source not in ("head", "distance"):
            raise ValueError(f"verdict source must be 'head' or 'distance', got {self.source!r}")
        if not 0.0 <= self.distance_threshold <= 2.0 or self.scale <= 0:
            raise ValueError("distance_threshold must be in [0, 2] and scale > 0")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "distance_threshold": self.distance_threshold, "scale": self.scale,
                "calibrated_on": self.calibrated_on}


def feature_distance(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(B,) 1 - mean over cells of the cosine similarity of two dates' packed (B, N + 1, C) cell features."""
    cos = torch.nn.functional.cosine_similarity(before[:, :-1].float(), after[:, :-1].float(), dim=-1)
    return 1.0 - cos.mean(dim=1)


class ChangeCaptionModel(Protocol):
    """What every change captioner offers."""

    name: str
    threshold: float

    @property
    def device(self) -> torch.device: ...

    @property
    def image_size(self) -> int: ...

    @property
    def uint8_transform(self) -> Callable[[Any], torch.Tensor]: ...

    def describe_pixels(self, before: torch.Tensor, after: torch.Tensor, decoding: DecodingConfig, *,
                        threshold: float | None = None, semantic_before: torch.Tensor | None = None,
                        semantic_after: torch.Tensor | None = None) -> list[ChangeResult]: ...

    def record(self) -> dict[str, Any]: ...


class ChangeCaptioner:
    """A frozen backbone + a trained :class:`ChangeNet` (see the module docstring).

    Args:
        backbone: the features' source for both dates; its weights must be the ones the network was trained on.
        net: the change network.
        vocab: the decoder's word vocabulary.
        threshold: P(changed) at or above which a pair is called changed.
        verdict: where P(changed) comes from (default: the trained head).
        name, checkpoint, sha256, metadata: identity for records.
    """

    def __init__(self, backbone: Backbone, net: ChangeNet, vocab: WordVocab, *, threshold: float = 0.5,
                 verdict: VerdictCalibration | None = None, name: str = "change-captioner",
                 checkpoint: str | None = None, sha256: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        if len(vocab) != net.config.decoder.vocab_size:
            raise ValueError(f"vocabulary of {len(vocab)} words for a decoder of {net.config.decoder.vocab_size}")
        check_threshold(threshold)
        self.backbone = backbone
        self.net = net.to(backbone.device).eval()
        self.vocab = vocab
        self.threshold = float(threshold)
        self.verdict = verdict or VerdictCalibration()
        self.name = name
        self.checkpoint = checkpoint
        self.sha256 = sha256
        self.metadata = dict(metadata or {})
        self.features = PackedImageFeatures(backbone)
        pre = replace(backbone.preprocess, image_size=net.config.image_size)
        self._uint8_transform = build_uint8_transform(pre)

    def __repr__(self) -> str:
        cfg = self.net.config
        return (f"ChangeCaptioner(name={self.name!r}, backbone={self.backbone.info.name!r}, "
                f"image_size={cfg.image_size}, grid={cfg.grid}, words={len(self.vocab)}, threshold={self.threshold})")

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def image_size(self) -> int:
        return self.net.config.image_size

    @property
    def grid(self) -> tuple[int, int]:
        return self.net.config.grid

    @property
    def uint8_transform(self) -> Callable[[Any], torch.Tensor]:
        """PIL image -> uint8 (3, S, S) at the change captioner's input size (both dates alike)."""
        return self._uint8_transform

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) pixels -> packed float32 (B, N + 1, C) features of the frozen backbone."""
        size = self.image_size
        if pixels.ndim != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[-2:]) != (size, size):
            raise ValueError(f"expected uint8 pixels of shape (B, 3, {size}, {size}) (the change captioner's "
                             f"uint8_transform), got {tuple(pixels.shape)}")
        with torch.no_grad():
            return self.features(self.backbone.normalize_uint8(pixels)).float()

    def semantic_input(self, before: torch.Tensor | None, after: torch.Tensor | None) -> torch.Tensor | None:
        """(B, N, 2K) semantic histograms of both dates' class maps, or ``None`` without maps or a semantic branch."""
        k = self.net.config.semantic_classes
        if before is None and after is None:
            return None
        if before is None or after is None:
            raise ValueError("semantic maps must be given for both dates or neither")
        if not k:
            return None
        grid = self.grid
        return torch.cat([semantic_histograms(before.to(self.device), k, grid),
                          semantic_histograms(after.to(self.device), k, grid)], dim=-1)

    def describe_features(self, before: torch.Tensor, after: torch.Tensor, decoding: DecodingConfig, *,
                          threshold: float | None = None, semantic: torch.Tensor | None = None
                          ) -> list[ChangeResult]:
        """Results for pairs given their packed features (:meth:`image_features` of each date)."""
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        before, after = before.to(self.device, torch.float32), after.to(self.device, torch.float32)
        with torch.no_grad():
            out = self.net(before, after, semantic)
            prob = self.probability(before, after, out.change_logit)
            heat = torch.sigmoid(out.mask_logits.float()).reshape(-1, *self.grid).cpu().numpy()
        changed = prob >= threshold
        captions = [NO_CHANGE_CAPTION] * before.shape[0]
        rows = torch.nonzero(changed).flatten()
        if len(rows):
            memory = self.net.with_verdict(out.memory.index_select(0, rows), torch.ones(len(rows), dtype=torch.bool))
            for row, text in zip(rows.tolist(), self._decode(memory, decoding), strict=True):
                captions[row] = text
        return [ChangeResult(captions[i], bool(changed[i]), float(prob[i]), heat[i].astype(np.float32))
                for i in range(before.shape[0])]

    def probability(self, before: torch.Tensor, after: torch.Tensor, change_logit: torch.Tensor) -> torch.Tensor:
        """(B,) P(changed) of pairs from their packed features and the head's logits, per :attr:`verdict`."""
        v = self.verdict
        if v.source == "distance":
            return torch.sigmoid(v.scale * (feature_distance(before, after) - v.distance_threshold))
        return torch.sigmoid(change_logit.float())

    def _decode(self, memory: torch.Tensor, decoding: DecodingConfig) -> list[str]:
        decoder = self.net.decoder
        states: dict[str, DecodingState] = {}

        def step(tokens: torch.Tensor, rows: torch.Tensor, parents: torch.Tensor | None) -> torch.Tensor:
            if parents is None:
                states["s"] = decoder.start_memory(memory, rows)
            else:
                states["s"].reorder(parents)
            return decoder.step(states["s"], tokens)

        max_new = min(decoding.max_length, decoder.config.max_length - 1)
        if max_new < decoding.max_length:
            decoding = replace(decoding, max_length=max_new, min_length=min(decoding.min_length, max_new))
        with torch.no_grad():
            ids = generate(step, memory.shape[0], bos=BOS, eos=EOS, config=decoding, device=self.device,
                           special=[PAD, BOS, UNK])
        return [self.vocab.decode(seq) for seq in ids]

    def describe_pixels(self, before: torch.Tensor, after: torch.Tensor, decoding: DecodingConfig, *,
                        threshold: float | None = None, semantic_before: torch.Tensor | None = None,
                        semantic_after: torch.Tensor | None = None) -> list[ChangeResult]:
        """Results for uint8 pixel batches of both dates (``uint8_transform`` of each image), optionally with
        (B, H, W) class maps of both dates for the semantic branch."""
        if before.shape != after.shape:
            raise ValueError(f"before and after batches differ in shape: {tuple(before.shape)} vs "
                             f"{tuple(after.shape)}")
        semantic = self.semantic_input(semantic_before, semantic_after)
        return self.describe_features(self.image_features(before), self.image_features(after), decoding,
                                      threshold=threshold, semantic=semantic)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "change-captioner", "family": "geovl", "checkpoint": self.checkpoint,
                "checkpoint_sha256": self.sha256, "backbone": model_record(self.backbone),
                "words": len(self.vocab), "threshold": self.threshold, "verdict": self.verdict.to_dict(),
                "image_size": self.image_size}


def check_threshold(value: float) -> float:
    """``value`` as a float in [0, 1] or a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {value!r}")
    return float(value)


# ---------------------------------------------------------------- folders


def save_change_captioner(model: ChangeCaptioner, folder: str | os.PathLike[str],
                          metadata: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write the trained network as a change-captioner folder (atomically; see the module docstring)."""
    fields = {"network": model.net.config.to_dict(), "threshold": model.threshold,
              "verdict": model.verdict.to_dict(), "vocab": list(model.vocab.words)}
    return save_head_folder(folder, config_file=CHANGE_CAPTIONER_CONFIG, fmt=CHANGE_CAPTIONER_FORMAT,
                            backbone=model.backbone, state=model.net.state_dict(), fields=fields,
                            metadata={**model.metadata, **(metadata or {})}, dtype=dtype)


def load_change_captioner_folder(path: str | os.PathLike[str], *, backbone: Backbone | None = None,
                                 device: str | torch.device = "auto", precision: str = "auto",
                                 name: str | None = None) -> ChangeCaptioner:
    """A geovl change-captioner folder, with ``backbone`` (shared) or the backbone its config names."""
    from safetensors.torch import load_file

    folder = Path(path)
    config = read_head_config(folder, CHANGE_CAPTIONER_CONFIG, CHANGE_CAPTIONER_FORMAT,
                              ("backbone", "network", "vocab"))
    weights = folder / CHANGE_CAPTIONER_WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{folder}: {CHANGE_CAPTIONER_WEIGHTS} is missing")
    digest = sha256_file(weights)
    if config.get("sha256") and digest != config["sha256"]:
        raise ValueError(f"{weights}: sha256 {digest} does not match {CHANGE_CAPTIONER_CONFIG}'s "
                         f"{config['sha256']}; the checkpoint is corrupt")
    backbone = head_backbone(folder, config["backbone"], backbone, device, precision)
    net = ChangeNet(ChangeNetConfig.from_dict(config["network"]))
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: does not fit the network in {CHANGE_CAPTIONER_CONFIG} (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return ChangeCaptioner(backbone, net, WordVocab(tuple(config["vocab"])),
                           threshold=float(config.get("threshold", 0.5)),
                           verdict=VerdictCalibration(**config.get("verdict", {})), name=name or str(folder),
                           checkpoint=str(folder), sha256=digest, metadata=config.get("metadata", {}))


def load_change_captioner(model: str | os.PathLike[str] = DEFAULT_CHANGE_CAPTIONER, *,
                          backbone: Backbone | None = None, device: str | torch.device = "auto",
                          precision: str = "auto") -> ChangeCaptioner:
    """Load a change captioner by registry name or folder.

    Args:
        model: a registry name (``geovl-change-small``) or a geovl change-captioner folder.
        backbone: an already loaded backbone to share; it must be the one the network was trained on.
        device, precision: as for :func:`geovl.models.load_backbone`.

    Raises:
        CheckpointNotFoundError: the weights are not on this machine.
        KeyError: an unknown name. ValueError: a folder that is not a change captioner, or a corrupt one.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / CHANGE_CAPTIONER_CONFIG).is_file():
            return load_change_captioner_folder(path, backbone=backbone, device=device, precision=precision)
        raise ValueError(f"{path}: not a geovl change-captioner folder (no {CHANGE_CAPTIONER_CONFIG})")
    if path.exists():
        raise ValueError(f"{path}: a change captioner is a folder, not a file")
    try:
        spec = get_checkpoint(text)
    except KeyError:
        known = ", ".join(s.name for s in list_checkpoints(kind="change-captioner"))
        raise KeyError(f"unknown change captioner '{text}'. Known: {known}; or a change-captioner folder") from None
    if spec.kind != "change-captioner":
        raise ValueError(f"'{text}' is a {spec.kind}, not a change captioner")
    if spec.format != "geovl_change_captioner":
        raise CheckpointNotFoundError(f"change captioner '{spec.name}' has format {spec.format!r}, which geovl "
                                      "cannot load")
    folder = fetch_checkpoint(spec)
    return load_change_captioner_folder(folder, backbone=backbone, device=device, precision=precision,
                                        name=spec.name)


register_loader("change-captioner", load_change_captioner)
