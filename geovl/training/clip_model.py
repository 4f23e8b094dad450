"""The model side of contrastive training: which parameters train, the temperature / bias parameters, optimizer
parameter groups, the learning-rate schedule, the module DDP wraps and the loss.

Rules:

* ``model.lock_image`` / ``model.lock_text`` freeze a whole tower, except the text projection into the joint
  space, which stays trainable under ``lock_text`` (LiT: a locked encoder with a learned head), and the head of a
  timm image tower (``visual.head``), which stays trainable under ``lock_image`` (its trunk is locked; see
  :mod:`geovl.training.feature_cache`); a model where nothing but the temperature / bias would train is refused;
* ``model.freeze_*_blocks = N`` freezes the first N blocks of a tower and everything before them (embeddings,
  stems); on a timm EfficientNet-style image trunk the blocks are its stages
  (:func:`geovl.training.feature_cache.split_at_block`);
* a SigLIP loss needs a learned bias: a model without one gets ``logit_bias = -10`` and (unless
  ``model.init_logit_scale`` says otherwise) ``logit_scale = ln 10``;
* norms, biases, embeddings and the temperature / bias get no weight decay;
* the CLIP loss gathers features with their gradients from every rank, so DDP's averaged gradient equals the
  single-process gradient of the same global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geovl.models.backbone import Backbone
from geovl.models.towers import OpenClipTowers
from geovl.training.config import OptimConfig, TrainConfig

__all__ = [
    "BuiltinText",
    "ContrastiveForward",
    "ContrastiveLoss",
    "LockedText",
    "ensure_logit_params",
    "lr_lambda",
    "param_groups",
    "set_trainable",
    "text_head_params",
]


def _blocks(tower: Any) -> list[nn.Module]:
    for path in ("transformer.resblocks", "trunk.blocks", "encoder.layer", "transformer.encoder.layer",
                 "encoder.layers"):
        obj = tower
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return list(obj)
    if all(hasattr(tower, n) for n in ("layer1", "layer2", "layer3", "layer4")):  # ModifiedResNet
        return [tower.layer1, tower.layer2, tower.layer3, tower.layer4]
    raise ValueError(f"cannot find the blocks of a {type(tower).__name__} tower to freeze")


def _freeze_first(tower: nn.Module, n: int, what: str) -> None:
    if n <= 0:
        return
    blocks = _blocks(tower)
    if n > len(blocks):
        raise ValueError(f"{what}: cannot freeze {n} blocks, the tower has {len(blocks)}")
    frozen = {id(p) for b in blocks[:n] for p in b.parameters()}
    trained_later = {id(p) for b in blocks[n:] for p in b.parameters()}
    # embeddings / stems come before the first block: freeze everything not in a later block or after them
    for name, p in tower.named_parameters():
        if id(p) in frozen or (id(p) not in trained_later and _is_input_side(name)):
            p.requires_grad_(False)


def _is_input_side(name: str) -> bool:
    return any(k in name for k in ("embed", "conv1", "class_embedding", "positional", "ln_pre", "stem",
                                   "bn1", "conv2", "bn2", "conv3", "bn3", "embeddings"))


def _is_timm(tower: nn.Module) -> bool:
    from open_clip.timm_model import TimmModel

    return isinstance(tower, TimmModel)


def _towers_of(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    m: Any = model
    if hasattr(m, "visual"):
        text = m.text if hasattr(m, "text") else None
        if text is None:  # open_clip CLIP keeps its text modules on the model itself
            return m.visual, BuiltinText(m)
        return m.visual, text
    return m.vision_model, m.text_model  # transformers SigLIP


class BuiltinText(nn.Module):
    """A view of open_clip CLIP's built-in text tower (token embedding, transformer, ln_final, projection)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.transformer = model.transformer
        self.token_embedding = model.token_embedding
        self.ln_final = model.ln_final
        self._extra = [model.positional_embedding] + ([model.text_projection]
                                                      if isinstance(model.text_projection, nn.Parameter) else [])
        if isinstance(model.text_projection, nn.Module):
            self.text_projection = model.text_projection

    def all_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.parameters()
        yield from self._extra


def set_trainable(model: nn.Module, cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """Freeze what ``cfg.model`` locks or freezes; returns the (image, text) towers.

    Raises:
        ValueError: nothing but the temperature / bias would train.
    """
    from geovl.training.feature_cache import split_image_tower

    visual, text = _towers_of(model)
    if cfg.model.lock_image:
        split = split_image_tower(visual)
        for p in (split[0] if split is not None else visual).parameters():
            p.requires_grad_(False)
    if cfg.model.lock_text:
        head = {id(p) for p in text_head_params(model)}
        params = text.all_parameters() if isinstance(text, BuiltinText) else text.parameters()
        for p in params:
            if id(p) not in head:
                p.requires_grad_(False)
    if cfg.model.freeze_image_blocks and not cfg.model.lock_image and _is_timm(visual):
        from geovl.training.feature_cache import split_at_block

        for p in split_at_block(visual, cfg.model.freeze_image_blocks)[0].parameters():
            p.requires_grad_(False)
    else:
        _freeze_first(visual, cfg.model.freeze_image_blocks, "model.freeze_image_blocks")
    _freeze_first(text, cfg.model.freeze_text_blocks, "model.freeze_text_blocks")
    if not any(p.requires_grad for name, p in model.named_parameters() if name not in ("logit_scale", "logit_bias")):
        raise ValueError("model.lock_image / lock_text leave nothing but the temperature to train: this model's "
                         "towers have no separate trainable head")
    return visual, text


def text_head_params(model: nn.Module) -> list[nn.Parameter]:
    """The projection from the text encoder into the joint space, which stays trainable under ``lock_text``
    (LiT: a locked encoder with a learned head). SigLIP text models have no separable head."""
    m: Any = model
    text = getattr(m, "text", None)
    if text is not None and hasattr(text, "proj"):  # open_clip HFTextEncoder
        return list(text.proj.parameters())
    proj = getattr(m, "text_projection", None)
    if isinstance(proj, nn.Parameter):
        return [proj]
    if isinstance(proj, nn.Module):
        return list(proj.parameters())
    return []


class LockedText:
    """Locked text encoder + trainable head: the encoder's pooled features are computed once per distinct
    caption (the encoder is frozen and in eval mode, so they cannot change) and only the head runs per step."""

    def __init__(self, backbone: Backbone, limit: int = 2_000_000) -> None:
        self.backbone = backbone
        self.m: Any = backbone.model
        self.cache: dict[str, torch.Tensor] = {}
        self.limit = limit
        self.split = bool(text_head_params(backbone.model))

    def trunk(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.m
        if not self.split:
            return self.backbone.towers.encode_text(tokens)
        text = getattr(m, "text", None)
        if text is not None and hasattr(text, "proj"):
            mask = (tokens != text.config.pad_token_id).long()
            return text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
        from open_clip.transformer import text_global_pool

        towers: Any = self.backbone.towers
        tokens = towers._trim(tokens)
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[: tokens.shape[1]].to(cast)
        mask = m.attn_mask[: tokens.shape[1], : tokens.shape[1]] if m.attn_mask is not None else None
        x = m.ln_final(m.transformer(x, attn_mask=mask))
        return text_global_pool(x, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        m = self.m
        if not self.split:
            return feats
        text = getattr(m, "text", None)
        if text is not None and hasattr(text, "proj"):
            return text.proj(feats)
        proj = m.text_projection
        return proj(feats) if isinstance(proj, nn.Module) else feats @ proj

    def __call__(self, captions: list[str], tokens: torch.Tensor, device: torch.device, dtype: torch.dtype
                 ) -> torch.Tensor:
        fresh: dict[str, torch.Tensor] = {}
        missing = [i for i, c in enumerate(captions) if c not in self.cache]
        if missing:
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = self.trunk(tokens[missing].to(device)).float()
            fresh = {captions[i]: row for i, row in zip(missing, out, strict=True)}
            if len(self.cache) < self.limit:
                self.cache.update(fresh)
        feats = torch.stack([self.cache[c] if c in self.cache else fresh[c] for c in captions])
        return self.head(feats)


def ensure_logit_params(backbone: Backbone, cfg: TrainConfig) -> None:
    m: Any = backbone.model
    if cfg.loss.kind == "siglip" and getattr(m, "logit_bias", None) is None:
        m.logit_bias = nn.Parameter(torch.tensor(-10.0, device=backbone.device))
        if isinstance(backbone.towers, OpenClipTowers):
            backbone.towers.model_cfg = {**backbone.towers.model_cfg, "init_logit_bias": -10.0}
        if cfg.model.init_logit_scale is None:
            with torch.no_grad():
                m.logit_scale.fill_(math.log(10.0))
    if cfg.model.init_logit_scale is not None:
        with torch.no_grad():
            m.logit_scale.fill_(cfg.model.init_logit_scale)


PRETRAINED_PREFIXES = ("visual.trunk.", "text.transformer.")


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                 pretrained_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups: weight decay except on norms, biases, embeddings and the temperature; with ``lr``, the
    pretrained encoders (:data:`PRETRAINED_PREFIXES`) learn at ``lr * pretrained_lr_scale``. Empty groups are
    left out."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decays = not (p.ndim < 2 or any(k in name for k in ("bn", "ln", "norm", "bias", "logit_scale", "logit_bias",
                                                             "embedding", "class_embedding")))
        pretrained = pretrained_lr_scale != 1.0 and name.startswith(PRETRAINED_PREFIXES)
        groups.setdefault((decays, pretrained), []).append(p)
    out = []
    for decays, pretrained in ((True, False), (False, False), (True, True), (False, True)):  # the PyTorch state
        params = groups.get((decays, pretrained), [])  # of a resumed optimizer needs this order to stay fixed
        if not params:
            continue
        group: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if pretrained and lr is not None:
            group["lr"] = lr * pretrained_lr_scale
        out.append(group)
    return out


def lr_lambda(optim: OptimConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` at ``steps`` (a ``LambdaLR`` factor)."""
    warm, total, floor = optim.warmup_steps, optim.steps, optim.min_lr_ratio

    def fn(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return fn


class ContrastiveForward(nn.Module):
    """The module DDP wraps: both towers' pooled embeddings (the text side may be skipped when cached). With
    ``image_head``, the image input is a locked trunk's cached output and only that head runs."""

    def __init__(self, backbone: Backbone, image_head: nn.Module | None = None) -> None:
        super().__init__()
        self.model = backbone.model
        self.towers = backbone.towers
        self.image_head = image_head

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.image_head is not None:
            img = self.image_head(pixels.to(next(self.image_head.parameters()).dtype))
        else:
            img = self.towers.encode_image(pixels)
        txt = self.towers.encode_text(tokens) if tokens is not None else None
        return img, txt


class ContrastiveLoss:
    """``clip``: symmetric InfoNCE over the global batch (optionally label-smoothed in a single process);
    ``siglip``: pairwise sigmoid with the learned bias. Features are L2-normalised and the temperature capped at 100."""

    def __init__(self, kind: str, rank: int, world: int, label_smoothing: float) -> None:
        from open_clip.loss import ClipLoss, SigLipLoss

        self.kind = kind
        self.smoothing = label_smoothing
        if kind == "siglip":
            self.fn: Any = SigLipLoss(rank=rank, world_size=world)
        else:
            # gather with grad: every rank computes the full-batch loss and gradients reach every feature, so
            # DDP's gradient average equals the single-process gradient of the same global batch
            self.fn = ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=world)
        self.world = world

    def __call__(self, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
        img, txt = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)
        s = scale.float().exp().clamp(max=100.0)
        if self.kind == "siglip":
            return self.fn(img, txt, s, bias.float() if bias is not None else None)
        if self.smoothing and self.world == 1:
            logits = s * img @ txt.T
            labels = torch.arange(len(img), device=img.device)
            return (F.cross_entropy(logits, labels, label_smoothing=self.smoothing)
                    + F.cross_entropy(logits.T, labels, label_smoothing=self.smoothing)) / 2
        return self.fn(img, txt, s)
