"""Training tiles for the generator: images at known ground sample distances, their texts, and seeded batches.

Rules:

* every source opens with :func:`geovl.data.open_dataset`; each image is decoded once and kept (as uint8) at every
  configured downsampling factor (``scales``), so that one scene teaches several zoom levels; an image whose short
  side is below a tile at its native resolution is enlarged to one tile (its GSD scaled to match); a downsampled
  copy smaller than a tile is dropped;
* a sample's GSD is its own ``meta["resolution_m"]`` / ``meta["gsd"]`` when present, else its source's ``gsd``,
  else unknown (null level only);
* unreadable images are counted, logged and skipped, never fatal;
* texts are encoded once by the frozen backbone (:class:`~geovl.models.diffusion_conditioning.TextConditioner`)
  and cached on disk keyed by the backbone's weights and the texts, so a resumed run does not re-encode them;
* batch ``s`` is drawn from a generator seeded by ``(seed, s)`` (source by weight, image, scale, crop, flip and
  rotation, text, condition dropout), so a resumed run repeats exactly what an uninterrupted one does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from geovl.data import open_dataset, prettify_class_name
from geovl.data.common import holdout_member
from geovl.data.labelsets import prompt_names
from geovl.io.fs import atomic_path
from geovl.io.loading import load_image
from geovl.models.diffusion_conditioning import NULL_LEVEL, TextConditioner, TextTokens, gsd_level
from geovl.models.record import model_record
from geovl.training.data import mix_seed
from geovl.training.diffusion_config import DiffusionDataConfig, DiffusionSourceConfig

__all__ = ["DiffusionBatch", "TileBank", "sample_gsd"]

logger = logging.getLogger(__name__)

NULL_TEXT = -1


def sample_gsd(meta: dict[str, Any], default: float | None) -> float | None:
    """A sample's metres per pixel: its own ``resolution_m`` / ``gsd`` metadata, else ``default``."""
    for key in ("resolution_m", "gsd"):
        value = meta.get(key)
        if value is not None:
            try:
                gsd = float(value)
            except (TypeError, ValueError):
                continue
            if gsd > 0:
                return gsd
    return default


@dataclass
class DiffusionBatch:
    """``pixels`` (B, 3, S, S) float in [-1, 1], ``text`` row per sample into the text bank (-1: null text),
    ``levels`` zoom level per sample (0: null)."""

    pixels: torch.Tensor
    text: np.ndarray
    levels: torch.Tensor


class TileBank:
    """The decoded images (at each scale) of a run's sources, their zoom levels and texts."""

    def __init__(self, config: DiffusionDataConfig, image_size: int, progress: bool = True) -> None:
        self.config, self.size = config, image_size
        self.images: list[np.ndarray] = []
        self.levels: list[int] = []
        self.source_of: list[int] = []
        self.captions: list[list[int]] = []  # text rows per image
        self.label_texts: list[list[int]] = []
        self.texts: list[str] = []
        self._text_row: dict[str, int] = {}
        self.failures: list[tuple[str, str]] = []
        for index, source in enumerate(config.sources):
            self._add_source(index, source, progress)
        if not self.images:
            raise ValueError("no usable training images in data.sources")
        self.by_source = [np.flatnonzero(np.asarray(self.source_of) == i) for i in range(len(config.sources))]
        empty = [config.sources[i].path for i, rows in enumerate(self.by_source) if len(rows) == 0]
        if empty:
            raise ValueError(f"no usable images in {empty}")
        weights = np.asarray([s.weight for s in config.sources], dtype=np.float64)
        self.source_p = weights / weights.sum()
        self.features: TextTokens | None = None

    def _row(self, text: str) -> int:
        if text not in self._text_row:
            self._text_row[text] = len(self.texts)
            self.texts.append(text)
        return self._text_row[text]

    def _add_source(self, index: int, cfg: DiffusionSourceConfig, progress: bool) -> None:
        from tqdm.auto import tqdm

        kwargs = dict(cfg.options)
        if cfg.split is not None:
            kwargs["split"] = cfg.split
        reader: Any = open_dataset(cfg.format, cfg.path, **kwargs)
        count = len(reader)
        rows = np.arange(count)
        if cfg.limit is not None and cfg.limit < count:
            rows = np.sort(np.random.default_rng(mix_seed(index, 17)).choice(count, size=cfg.limit, replace=False))
        for i in tqdm(rows, desc=f"decoding {Path(cfg.path).name}", disable=not progress, leave=False):
            sample = reader[int(i)]
            if cfg.exclude_split is not None and sample["split"] == cfg.exclude_split:
                continue
            if holdout_member(str(sample["image_id"]), cfg.holdout_fraction):
                continue
            labels = []
            if sample["label"] and cfg.label_prompts:
                name = (prompt_names([sample["label"]], cfg.label_set)[0] if cfg.label_set
                        else prettify_class_name(sample["label"]))
                labels = [self._row(t.format(name)) for t in cfg.label_prompts]
            captions = [self._row(c) for c in sample["captions"] if c.strip()]
            if not captions and not labels:
                continue
            try:
                image = load_image(sample["image"]).convert("RGB")
            except Exception as exc:  # a bad file is recorded and skipped, never fatal
                self.failures.append((str(sample["image_id"]), f"{type(exc).__name__}: {exc}"))
                continue
            self._add_image(index, image, sample_gsd(sample["meta"], cfg.gsd), cfg.scales, captions, labels)
        if self.failures:
            logger.warning("%d unreadable images skipped (first: %s)", len(self.failures), self.failures[0])

    def _add_image(self, source: int, image: Image.Image, gsd: float | None, scales: list[int], captions: list[int],
                   labels: list[int]) -> None:
        short = min(image.size)
        if short < self.size:  # enlarge to one tile
            factor = self.size / short
            image = image.resize((max(self.size, round(image.width * factor)),
                                  max(self.size, round(image.height * factor))), Image.Resampling.BICUBIC)
            gsd = gsd / factor if gsd is not None else None
        for k in sorted(set(scales)):
            w, h = image.width // k, image.height // k
            if min(w, h) < self.size:
                continue
            scaled = image if k == 1 else image.resize((w, h), Image.Resampling.LANCZOS)
            self.images.append(np.asarray(scaled, dtype=np.uint8))
            self.levels.append(gsd_level(gsd * k) if gsd is not None else NULL_LEVEL)
            self.source_of.append(source)
            self.captions.append(captions)
            self.label_texts.append(labels)

    def describe(self) -> dict[str, Any]:
        levels = np.bincount(np.asarray(self.levels), minlength=19)
        return {"images": len(self.images), "texts": len(self.texts), "failures": len(self.failures),
                "per_source": [len(r) for r in self.by_source],
                "levels": {int(lv): int(n) for lv, n in enumerate(levels) if n}}

    # ------------------------------------------------------------------ texts
    def encode_texts(self, conditioner: TextConditioner, cache_dir: Path | None) -> TextTokens:
        """The token features of every text (cached under ``cache_dir`` when given)."""
        key = hashlib.sha256(json.dumps([model_record(conditioner.backbone).get("checkpoint_sha256"),
                                         model_record(conditioner.backbone)["name"], conditioner.length,
                                         self.texts]).encode()).hexdigest()[:16]
        path = cache_dir / f"text-{key}.npz" if cache_dir is not None else None
        if path is not None and path.is_file():
            with np.load(path) as data:
                self.features = TextTokens(torch.from_numpy(data["features"]).float(),
                                           torch.from_numpy(data["mask"]))
            return self.features
        tokens = conditioner.encode(self.texts)
        # stored as float16; a fresh run uses the same rounded values as a resumed one that reads the cache
        self.features = TextTokens(tokens.features.cpu().half().float(), tokens.mask.cpu())
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, suffix=".tmp.npz") as tmp:
                np.savez(tmp, features=self.features.features.half().numpy(), mask=self.features.mask.numpy())
        return self.features

    # ------------------------------------------------------------------ batches
    def batch(self, seed: int, step: int, batch_size: int) -> DiffusionBatch:
        """The seeded batch of step ``step``."""
        cfg, size = self.config, self.size
        rng = np.random.default_rng(mix_seed(seed, step, 23))
        sources = rng.choice(len(self.source_p), size=batch_size, p=self.source_p)
        tiles = np.empty((batch_size, size, size, 3), dtype=np.uint8)
        text = np.empty(batch_size, dtype=np.int64)
        levels = np.empty(batch_size, dtype=np.int64)
        drop = rng.random(batch_size)
        p_text, p_res, p_both = cfg.text_dropout, cfg.resolution_dropout, cfg.both_dropout
        for b, s in enumerate(sources):
            row = int(self.by_source[s][rng.integers(len(self.by_source[s]))])
            img = self.images[row]
            y = int(rng.integers(img.shape[0] - size + 1))
            x = int(rng.integers(img.shape[1] - size + 1))
            tile = img[y:y + size, x:x + size]
            if cfg.dihedral:
                k = int(rng.integers(8))
                tile = np.rot90(tile, k % 4)
                if k >= 4:
                    tile = tile[:, ::-1]
            tiles[b] = tile
            share = self.config.sources[s].label_prompt_share
            pool = self.label_texts[row] if self.label_texts[row] and (
                not self.captions[row] or rng.random() < share) else self.captions[row]
            text[b] = pool[int(rng.integers(len(pool)))]
            levels[b] = self.levels[row]
            u = drop[b]
            if u < p_text or p_text + p_res <= u < p_text + p_res + p_both:
                text[b] = NULL_TEXT
            if p_text <= u < p_text + p_res + p_both:
                levels[b] = NULL_LEVEL
        pixels = torch.from_numpy(tiles).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return DiffusionBatch(pixels=pixels, text=text, levels=torch.from_numpy(levels))

    def text_tokens(self, rows: np.ndarray, null: TextTokens) -> TextTokens:
        """Token features for bank rows (-1: the null text)."""
        if self.features is None:
            raise RuntimeError("encode_texts() first")
        safe = np.where(rows < 0, 0, rows)
        out = self.features.index(torch.from_numpy(safe))
        is_null = torch.from_numpy(rows < 0)
        if is_null.any():
            feats, mask = out.features.clone(), out.mask.clone()
            feats[is_null] = null.features.to(feats.dtype).cpu()
            mask[is_null] = null.mask.cpu()
            out = TextTokens(feats, mask)
        return out
