"""Adapters that give open_clip and transformers (SigLIP) models one interface.

Each adapter exposes the same operations on tensors: tokenize, pooled image / text embeddings, patch / token
features, and patch embeddings in the joint space. :class:`geovl.models.backbone.Backbone` builds everything else on
top of these.

Patch embeddings put each patch (ViT token, ResNet or timm feature-map cell) through the image tower's own pooling
head, so that its cosine similarity to a text embedding is meaningful (dense CLIP features in the manner of
MaskCLIP, Zhou et al. 2022). Per tower:

* open_clip ViT: the tower's embedding is ``ln_post(t) @ proj`` of the class token ``t`` (``pool_type='tok'``) or
  of the patch mean (``'avg'``); a patch's embedding is the same map applied to its own output token. open_clip
  returns the tokens after ``ln_post`` unless ``final_ln_after_pool`` is set, in which case it is applied here.
  With ``'avg'`` pooling the pooled embedding is exactly the mean of the patch embeddings. Towers with an
  attentional pooler (CoCa-style: their tokens are learned queries, not patches) or without pooling are refused.
* open_clip ModifiedResNet: the attention pool's value and output projections (``c_proj(v_proj(cell))``) applied to
  every cell of the last feature map, without the positional embedding (a fixed per-position bias that is not image
  content). The pooled embedding is ``c_proj`` of an attention-weighted mean of ``v_proj`` values, so it is (up to
  the positional terms) a convex combination of the cell embeddings.
* open_clip ``TimmModel`` with a convolutional trunk (EfficientNet-Lite): the trunk's last feature map
  (``trunk.forward_features``, (B, C, h, w)) gives the patches; the pooled embedding is
  ``head(trunk.forward_head(map))``, exactly what the tower outputs. A cell's embedding is that same path applied to
  the cell alone (a 1 x 1 map: average pooling of one cell is the cell): the trunk's pooling head (pool, plus its
  classifier when ``timm_proj`` is empty: the classifier is then the projection) and the adapter's ``head``
  (linear or mlp projection). With average pooling and an affine projection the pooled embedding is exactly the
  mean of the cell embeddings; an mlp keeps them in the pooled embeddings' space. Refused: trunks that do not
  average-pool (max, attention pooling in the head, no pooling) and trunks whose features are not an NCHW map
  (timm ViTs, NHWC models).
* transformers SigLIP: the multihead-attention-pooling head run on each patch token alone, i.e. the embedding the
  tower would output if its pooling attended to that one patch. The head's residual MLP is non-linear, so the
  pooled embedding is not an average of these, but each lies in the pooled embeddings' space. Towers without the
  head are refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import nn

from geovl.models.features import ImageFeatures, TextFeatures


class Towers(Protocol):
    """What the backbone needs from a dual-encoder model."""

    module: nn.Module
    embed_dim: int
    context_length: int

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor: ...

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def image_features(self, pixels: torch.Tensor) -> ImageFeatures: ...

    def text_features(self, tokens: torch.Tensor) -> TextFeatures: ...

    def logit_scale_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def patch_embeddings_error(self) -> str | None: ...

    def patch_embeddings(self, pixels: torch.Tensor) -> torch.Tensor: ...


@contextmanager
def _output_tokens(tower: Any) -> Iterator[None]:
    """Temporarily make an open_clip tower return ``(pooled, tokens)``."""
    previous = getattr(tower, "output_tokens", False)
    tower.output_tokens = True
    try:
        yield
    finally:
        tower.output_tokens = previous


def _square_grid(n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    return (side, n // side) if side * side == n else (1, n)


def _to_grid(tokens: torch.Tensor, pixels: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """(B, N, D) patch tokens of ``pixels`` -> (B, h, w, D) in raster order."""
    h, w = pixels.shape[-2] // patch[0], pixels.shape[-1] // patch[1]
    if h * w != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} patch tokens do not fill a {h}x{w} grid for input {tuple(pixels.shape)}")
    return tokens.reshape(tokens.shape[0], h, w, tokens.shape[2])


def vit_patch_embeddings(visual: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) patch embeddings of an open_clip ``VisionTransformer`` (see the module docstring)."""
    with _output_tokens(visual):
        _, tokens = visual(pixels)
    if visual.final_ln_after_pool:  # open_clip then returns the tokens before ln_post
        tokens = visual.ln_post(tokens)
    if visual.proj is not None:
        tokens = tokens @ visual.proj
    patch = visual.patch_size
    return _to_grid(tokens, pixels, (patch, patch) if isinstance(patch, int) else tuple(patch))


def resnet_feature_map(visual: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) last feature map of an open_clip ``ModifiedResNet`` (before the attention pool)."""
    x = visual.stem(pixels)
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    return x


def resnet_patch_embeddings(visual: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) cell embeddings of an open_clip ``ModifiedResNet``: ``c_proj(v_proj(cell))``."""
    cells = resnet_feature_map(visual, pixels).permute(0, 2, 3, 1)
    pool = visual.attnpool
    return pool.c_proj(pool.v_proj(cells))


def timm_feature_map(visual: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) last feature map of an open_clip ``TimmModel``'s trunk (``forward_features``)."""
    fmap = visual.trunk.forward_features(pixels)
    if not isinstance(fmap, torch.Tensor) or fmap.ndim != 4 or getattr(visual.trunk, "output_fmt", "NCHW") != "NCHW":
        raise ValueError(f"patch-level features of timm image towers need a (B, C, h, w) feature map; "
                         f"{type(visual.trunk).__name__} gives another layout")
    return fmap


def timm_pooled(visual: Any, fmap: torch.Tensor) -> torch.Tensor:
    """A ``TimmModel``'s output from its trunk's feature map: the trunk's pooling head, then the adapter's head."""
    return visual.head(visual.trunk.forward_head(fmap))


def timm_patch_embeddings_error(visual: Any) -> str | None:
    """Why a ``TimmModel`` has no patch embeddings (see the module docstring), or ``None``."""
    from timm.layers import SelectAdaptivePool2d

    name = type(visual.trunk).__name__
    if "pool" in visual.head._modules:
        return "patch embeddings are not available for a timm image tower with attention pooling"
    pool = getattr(visual.trunk, "global_pool", None)
    if not isinstance(pool, SelectAdaptivePool2d):
        return f"patch embeddings are not available for timm {name} image towers (no global average pool)"
    if pool.pool_type.lower() not in ("avg", "fast", "fastavg"):
        return f"patch embeddings are not available for a timm image tower with {pool.pool_type!r} pooling"
    return None


def timm_patch_embeddings(visual: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) cell embeddings of an open_clip ``TimmModel``: each cell through the tower's pooling head and
    projection on its own."""
    fmap = timm_feature_map(visual, pixels)
    b, c, h, w = fmap.shape
    cells = fmap.permute(0, 2, 3, 1).reshape(b * h * w, c, 1, 1)
    return timm_pooled(visual, cells).reshape(b, h, w, -1)


class OpenClipTowers:
    """An open_clip ``CLIP`` / ``CustomTextCLIP`` model.

    Text is encoded with the context cut to the longest sequence in the batch when the text tower is causal and
    pools at the end-of-text token: positions after it cannot influence earlier ones under a causal mask, so the
    result equals the full-length forward while costing a fraction of it for short queries.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, model_cfg: dict[str, Any] | None = None,
                 quick_gelu: bool = False) -> None:
        self.module = model
        self._m: Any = model
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg or {}
        self.quick_gelu = quick_gelu
        visual: Any = self._m.visual
        # timm image towers carry no output_dim: the config's embed_dim says it
        self.embed_dim = int(getattr(visual, "output_dim", 0) or self.model_cfg.get("embed_dim", 0)
                             or self._probe_dim())
        text: Any = getattr(self._m, "text", None)
        context: Any = getattr(text, "context_length", None) or getattr(self._m, "context_length", 77)
        self.context_length = int(context)

    def _probe_dim(self) -> int:
        proj = getattr(self._m, "text_projection", None)
        if isinstance(proj, nn.Linear):
            return int(proj.out_features)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[1])
        raise ValueError("cannot determine the embedding dimension of this open_clip model")

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    # ---- image
    def _visual_dtype(self) -> torch.dtype:
        return next(self._m.visual.parameters()).dtype

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self._m.visual(pixels.to(self._visual_dtype()))
        return out[0] if isinstance(out, tuple) else out

    def image_features(self, pixels: torch.Tensor) -> ImageFeatures:
        visual = self._m.visual
        pixels = pixels.to(self._visual_dtype())
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        if isinstance(visual, TimmModel):
            fmap = timm_feature_map(visual, pixels)
            return ImageFeatures(pooled=timm_pooled(visual, fmap), patches=fmap.flatten(2).transpose(1, 2),
                                 grid=(fmap.shape[-2], fmap.shape[-1]))
        if isinstance(visual, VisionTransformer):
            with _output_tokens(visual):
                pooled, tokens = visual(pixels)
            return ImageFeatures(pooled=pooled, patches=tokens, grid=_square_grid(tokens.shape[1]))
        if isinstance(visual, ModifiedResNet):
            x = resnet_feature_map(visual, pixels)
            pooled = visual.attnpool(x)
            h, w = x.shape[-2:]
            return ImageFeatures(pooled=pooled, patches=x.flatten(2).transpose(1, 2), grid=(h, w))
        raise ValueError(
            f"patch-level features are available for ViT, ResNet and timm image towers, not {type(visual).__name__}"
        )

    def patch_embeddings_error(self) -> str | None:
        """Why :meth:`patch_embeddings` is unavailable for this image tower, or ``None`` when it is available."""
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        visual = self._m.visual
        if isinstance(visual, ModifiedResNet):
            return None
        if isinstance(visual, TimmModel):
            return timm_patch_embeddings_error(visual)
        if not isinstance(visual, VisionTransformer):
            return f"patch embeddings are not available for {type(visual).__name__} image towers"
        if visual.attn_pool is not None:
            return ("patch embeddings are not available for a ViT with an attentional pooler: its output tokens are "
                    "learned queries, not image patches")
        if visual.pool_type not in ("tok", "avg"):
            return f"patch embeddings are not available for a ViT with pool_type {visual.pool_type!r}"
        return None

    def patch_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) patch embeddings in the joint space (see the module docstring); ``ValueError`` when the
        tower has none."""
        reason = self.patch_embeddings_error()
        if reason is not None:
            raise ValueError(reason)
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        visual = self._m.visual
        pixels = pixels.to(self._visual_dtype())
        if isinstance(visual, VisionTransformer):
            return vit_patch_embeddings(visual, pixels)
        if isinstance(visual, ModifiedResNet):
            return resnet_patch_embeddings(visual, pixels)
        return timm_patch_embeddings(visual, pixels)

    # ---- text
    def _is_builtin_text(self) -> bool:
        return hasattr(self._m, "token_embedding")

    def _trim(self, tokens: torch.Tensor) -> torch.Tensor:
        model: Any = self.module
        if getattr(model, "attn_mask", None) is None or getattr(model, "text_pool_type", None) != "argmax":
            return tokens
        length = int(tokens.argmax(dim=-1).max().item()) + 1
        return tokens[:, :length]

    def _builtin_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from open_clip.transformer import text_global_pool

        model: Any = self.module
        tokens = self._trim(tokens)
        length = tokens.shape[1]
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast)
        x = x + model.positional_embedding[:length].to(cast)
        mask = model.attn_mask
        if mask is not None:
            mask = mask[:length, :length]
        x = model.transformer(x, attn_mask=mask)
        x = model.ln_final(x)
        pooled = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        proj = model.text_projection
        if proj is not None:
            pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return pooled, x

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._is_builtin_text():
            return self._builtin_text(tokens)[0]
        return self._m.encode_text(tokens)

    def text_features(self, tokens: torch.Tensor) -> TextFeatures:
        if self._is_builtin_text():
            trimmed = self._trim(tokens)
            pooled, feats = self._builtin_text(trimmed)
            return TextFeatures(pooled=pooled, tokens=feats, mask=trimmed != 0)
        text = self._m.text
        with _output_tokens(text):
            pooled, feats = text(tokens)
        mask = tokens[:, : feats.shape[1]] != getattr(self.tokenizer, "pad_token_id", 0)
        return TextFeatures(pooled=pooled, tokens=feats, mask=mask)

    def logit_scale_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._m.logit_scale, getattr(self._m, "logit_bias", None)


class SiglipTowers:
    """A transformers SigLIP model (Git-RSCLIP). Text is padded to a fixed length, as SigLIP was trained."""

    def __init__(self, model: nn.Module, tokenizer: Any, context_length: int = 64) -> None:
        self.module = model
        self._m: Any = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        cfg: Any = model.config
        self.embed_dim = int(cfg.vision_config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self.tokenizer(
            list(texts), padding="max_length", max_length=self.context_length, truncation=True, return_tensors="pt"
        )
        return enc["input_ids"]

    def _vision(self, pixels: torch.Tensor) -> Any:
        vision: Any = self._m.vision_model
        return vision(pixel_values=pixels.to(next(vision.parameters()).dtype))

    def _text(self, tokens: torch.Tensor) -> Any:
        return self._m.text_model(input_ids=tokens)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._vision(pixels).pooler_output

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._text(tokens).pooler_output

    def image_features(self, pixels: torch.Tensor) -> ImageFeatures:
        out = self._vision(pixels)
        patches = out.last_hidden_state
        return ImageFeatures(pooled=out.pooler_output, patches=patches, grid=_square_grid(patches.shape[1]))

    def text_features(self, tokens: torch.Tensor) -> TextFeatures:
        out = self._text(tokens)
        pad = self.tokenizer.pad_token_id
        mask = tokens != pad if pad is not None else torch.ones_like(tokens, dtype=torch.bool)
        return TextFeatures(pooled=out.pooler_output, tokens=out.last_hidden_state, mask=mask)

    def logit_scale_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._m.logit_scale, getattr(self._m, "logit_bias", None)

    def patch_embeddings_error(self) -> str | None:
        """Why :meth:`patch_embeddings` is unavailable for this image tower, or ``None`` when it is available."""
        if getattr(self._m.vision_model, "head", None) is None:
            return "patch embeddings are not available for a SigLIP image tower without its attention-pooling head"
        return None

    def patch_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D): the pooling head run on each patch token alone (see the module docstring)."""
        reason = self.patch_embeddings_error()
        if reason is not None:
            raise ValueError(reason)
        vision: Any = self._m.vision_model
        tokens = self._vision(pixels).last_hidden_state
        b, n, c = tokens.shape
        single = vision.head(tokens.reshape(b * n, 1, c)).reshape(b, n, -1)
        patch = int(self._m.config.vision_config.patch_size)
        return _to_grid(single, pixels, (patch, patch))
