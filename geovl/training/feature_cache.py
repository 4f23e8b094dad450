"""Cached image-trunk features for a locked image tower: the trunk runs once per (image, view), not per step.

Rules:

* Only an open_clip timm image tower with a separate head (``visual.trunk`` + a non-empty ``visual.head``, i.e.
  ``timm_proj: linear`` or ``mlp``) is split: under ``model.lock_image`` its trunk is frozen and stays in eval
  mode (BatchNorm statistics frozen, so an export can leave it out), and its head trains. Other image towers are
  locked whole and run every step.
* ``data.cached_views = V`` (>= 1) caches V views of every training image: view 0 is the plain preprocessing
  (resize + centre crop, no random augmentation); views 1 .. V-1 are ``data.augment`` draws seeded by
  ``(seed, source, item, view)``. Each step picks one view per sample from the sample's own generator, so a
  resumed run reads the same features as an uninterrupted one. ``V = 0`` turns the cache off (the trunk runs every
  step on freshly augmented pixels).
* ``model.freeze_image_blocks = K`` (without ``lock_image``) on a timm EfficientNet / MobileNet-style trunk
  (``conv_stem``, ``bn1``, ``blocks``, ``conv_head``, ``bn2``) splits the tower at a stage boundary instead
  (:func:`split_at_block`): the stem and the first K stages are frozen, stay in eval mode and are cached; the last
  stages, the head convolution and ``visual.head`` train on the cached (C, h, w) maps.
* The features are the cached part's output (the trained part's input), computed under the run's autocast
  precision and kept in memory as float32, or float16 for spatial maps (14k images x 1280 floats x V views is
  tens of MB; 112 x 10 x 10 maps are about 1 GB for 4 views).
* The cache is also written to ``<output>/feature-cache/features-<key>.pt`` (atomically); ``key`` hashes what the
  features depend on (each source's dataset fingerprint, the selected samples, the seed, views, augmentation and
  preprocessing, the trunk's weights and the precision), so a resumed run reuses it and anything else recomputes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from geovl.io.fs import atomic_path
from geovl.io.loading import load_image
from geovl.models.registry import Preprocess
from geovl.training.augment import RSAugment
from geovl.training.config import AugmentConfig
from geovl.training.data import TrainingSet, mix_seed, pil_to_uint8

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_FOLDER",
    "CachedViews",
    "FeatureCache",
    "build_feature_cache",
    "feature_cache_key",
    "load_or_build_feature_cache",
    "split_at_block",
    "split_image_tower",
]

CACHE_FOLDER = "feature-cache"


def split_image_tower(visual: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(trunk, head)`` of an open_clip timm image tower with a non-empty head, else ``None``."""
    from open_clip.timm_model import TimmModel

    if isinstance(visual, TimmModel) and isinstance(visual.head, nn.Sequential) and len(visual.head) > 0:
        return visual.trunk, visual.head
    return None


_STAGED_TRUNK = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool", "classifier")


def split_at_block(visual: nn.Module, frozen: int) -> tuple[nn.Module, nn.Module]:
    """``(prefix, rest)`` of an open_clip timm tower with an EfficientNet / MobileNet-style trunk: ``prefix`` is the
    stem and the first ``frozen`` stages, ``rest`` the later stages, the head convolution, the pooling and
    ``visual.head``, so that ``rest(prefix(x))`` equals ``visual(x)``. Both share the tower's modules.

    Raises:
        ValueError: another kind of tower, or ``frozen`` outside ``1 .. number of stages``.
    """
    from open_clip.timm_model import TimmModel

    trunk: Any = getattr(visual, "trunk", None)
    if not isinstance(visual, TimmModel) or not all(hasattr(trunk, n) for n in _STAGED_TRUNK) \
            or not isinstance(trunk.blocks, nn.Sequential):
        raise ValueError("model.freeze_image_blocks on a timm tower needs an EfficientNet / MobileNet-style trunk "
                         f"(conv_stem, bn1, blocks, conv_head, bn2); got {type(trunk).__name__}")
    stages = len(trunk.blocks)
    if not 1 <= frozen <= stages:
        raise ValueError(f"model.freeze_image_blocks must be in 1..{stages} for this trunk, got {frozen}")
    prefix = nn.Sequential(trunk.conv_stem, trunk.bn1, *trunk.blocks[:frozen])
    rest = nn.Sequential(*trunk.blocks[frozen:], trunk.conv_head, trunk.bn2, trunk.global_pool, trunk.classifier,
                         visual.head)
    return prefix, rest


@dataclass
class FeatureCache:
    """``features[row(source, item, view)]``: the trunk's output for one view of one training image."""

    features: torch.Tensor
    index: dict[tuple[int, int], int]
    views: int

    def row(self, source: int, item: int, view: int) -> torch.Tensor:
        return self.features[self.index[(source, item)] * self.views + view]


class CachedViews(Dataset[torch.Tensor]):
    """Image ``i`` -> its (V, 3, S, S) normalised views (view 0 plain, the others seeded augmentations)."""

    def __init__(self, data: TrainingSet, keys: list[tuple[int, int]], views: int, augment: AugmentConfig,
                 preprocess: Preprocess) -> None:
        self.data, self.keys, self.views = data, keys, views
        self.plain = RSAugment(augment, preprocess, train=False)
        self.augment = RSAugment(augment, preprocess, train=True)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> torch.Tensor:
        source, item = self.keys[i]
        image = pil_to_uint8(load_image(self.data.sample(source, item)["image"]))
        gen = torch.Generator()
        out = [self.plain(image, gen)]
        for view in range(1, self.views):
            gen.manual_seed(mix_seed(self.data.seed, source, item, view))
            out.append(self.augment(image, gen))
        return torch.stack(out)


def build_feature_cache(data: TrainingSet, trunk: nn.Module, *, views: int, augment: AugmentConfig,
                        preprocess: Preprocess, device: torch.device, dtype: torch.dtype, workers: int = 0,
                        batch_size: int = 64, progress: bool = True) -> FeatureCache:
    """Run ``trunk`` (in eval mode, without gradients) once over every view of every training image."""
    from tqdm.auto import tqdm

    if views < 1:
        raise ValueError(f"data.cached_views must be >= 1 to build a feature cache, got {views}")
    keys = [(si, i) for si, src in enumerate(data.sources) for i in range(len(src.indices))]
    per_batch = max(1, batch_size // views)
    loader = DataLoader(CachedViews(data, keys, views, augment, preprocess), batch_size=per_batch, num_workers=workers)
    trunk_dtype = next(trunk.parameters()).dtype
    rows: list[torch.Tensor] = []
    was_training = trunk.training
    trunk.eval()
    try:
        with tqdm(total=len(keys), unit="img", desc="caching image features", disable=not progress) as bar, \
                torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            for batch in loader:
                pixels = batch.flatten(0, 1).to(device, trunk_dtype)
                out = trunk(pixels)
                rows.append(out.to(torch.float16 if out.ndim > 2 else torch.float32).cpu())
                bar.update(len(batch))
    finally:
        trunk.train(was_training)
    features = torch.cat(rows).contiguous()
    return FeatureCache(features, {k: i for i, k in enumerate(keys)}, views)


def feature_cache_key(data: TrainingSet, trunk: nn.Module, *, views: int, augment: AugmentConfig,
                      preprocess: Preprocess, dtype: torch.dtype) -> str:
    """A hash of everything the cached features depend on (see the module docstring)."""
    from geovl.eval.fingerprint import dataset_fingerprint

    weights = hashlib.sha256()
    for name, value in sorted(trunk.state_dict().items()):
        weights.update(name.encode())
        weights.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    sources = [{"path": str(src.config.path), "format": src.config.format, "split": src.config.split,
                "fingerprint": dataset_fingerprint(src.config.path) if Path(src.config.path).exists() else None,
                "indices": hashlib.sha256(src.indices.tobytes()).hexdigest()} for src in data.sources]
    spec = {"sources": sources, "seed": data.seed, "views": views, "augment": asdict(augment),
            "preprocess": preprocess.to_dict(), "trunk": weights.hexdigest(), "dtype": str(dtype), "version": 1}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]


def load_or_build_feature_cache(folder: Path | None, data: TrainingSet, trunk: nn.Module, *, views: int,
                                augment: AugmentConfig, preprocess: Preprocess, device: torch.device,
                                dtype: torch.dtype, workers: int = 0, progress: bool = True,
                                write: bool = True) -> FeatureCache:
    """The feature cache stored in ``folder`` under its key, or a fresh one (written there when ``write``)."""
    options: dict[str, Any] = {"views": views, "augment": augment, "preprocess": preprocess}
    path = None
    if folder is not None:
        key = feature_cache_key(data, trunk, dtype=dtype, **options)
        path = folder / f"features-{key}.pt"
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            logger.info("reusing the image feature cache %s", path)
            index = {(int(s), int(i)): r for r, (s, i) in enumerate(stored["keys"].tolist())}
            return FeatureCache(stored["features"], index, int(stored["views"]))
    cache = build_feature_cache(data, trunk, device=device, dtype=dtype, workers=workers, progress=progress,
                                **options)
    if path is not None and write:
        keys = torch.tensor(sorted(cache.index, key=cache.index.__getitem__), dtype=torch.int64)
        with atomic_path(path) as tmp:
            torch.save({"features": cache.features, "keys": keys, "views": cache.views}, tmp)
    return cache
