"""Training data: a weighted mixture of image-text sources with a deterministic, resumable sample order.

Reader -> mapper -> batches:

* each :class:`~geovl.training.config.SourceConfig` opens with :func:`geovl.data.open_dataset`; tar shards are
  indexed once (member offsets) so that every source is random-access;
* :meth:`TrainingSet.epoch_order` is a seeded permutation of (source, item) pairs for an epoch, with each
  source repeated in proportion to its weight, so the position of a batch in the run fully determines its
  samples (exact resume, same batches under any number of DataLoader workers or DDP ranks);
* :class:`EpochDataset` decodes, picks a caption and augments one sample with a generator seeded from
  ``(seed, epoch, position)``.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geovl.data import open_dataset, prettify_class_name
from geovl.data.common import holdout_member
from geovl.data.labelsets import prompt_names
from geovl.data.samples import ImageTextSample
from geovl.data.shards import SHARD_IMAGE_EXTENSIONS, WebDatasetReader, split_member
from geovl.io.loading import load_image
from geovl.training.augment import RSAugment
from geovl.training.config import DataConfig, SourceConfig

logger = logging.getLogger(__name__)

__all__ = ["BatchPlan", "EpochDataset", "IndexedShards", "TrainingSet", "build_image_cache", "collate", "mix_seed",
           "pil_to_uint8"]


class IndexedShards(Sequence[ImageTextSample]):
    """Random access into webdataset tar shards: member offsets are read once, samples are read on demand."""

    def __init__(self, reader: WebDatasetReader) -> None:
        self.reader = reader
        self.entries: list[tuple[Path, str, dict[str, tuple[int, int]]]] = []
        for shard in reader.shards:
            groups: dict[str, dict[str, tuple[int, int]]] = {}
            try:
                with tarfile.open(shard, mode="r:") as tar:
                    for member in tar.getmembers():
                        if member.isfile():
                            key, ext = split_member(member.name)
                            if ext:
                                groups.setdefault(key, {})[ext] = (member.offset_data, member.size)
            except tarfile.TarError as exc:
                raise ValueError(f"{shard.name}: not an uncompressed, readable tar shard ({exc})") from exc
            for key, members in groups.items():
                if any(e in members for e in SHARD_IMAGE_EXTENSIONS):
                    self.entries.append((shard, key, members))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> ImageTextSample:  # type: ignore[override]
        shard, key, members = self.entries[index]
        data: dict[str, bytes] = {}
        with shard.open("rb") as fh:
            for ext, (offset, size) in members.items():
                fh.seek(offset)
                data[ext] = fh.read(size)
        sample = self.reader._make_sample(shard, key, data)
        if sample is None:  # only when the image member vanished between indexing and reading
            raise ValueError(f"{shard.name}: sample {key} has no image member")
        return sample


@dataclass
class _Source:
    config: SourceConfig
    reader: Sequence[ImageTextSample]
    indices: np.ndarray
    name: str


def _open_source(cfg: SourceConfig, seed: int) -> _Source:
    kwargs = dict(cfg.options)
    if isinstance(kwargs.get("columns"), dict):  # table column names from YAML
        from geovl.data.tabular import TableColumns

        kwargs["columns"] = TableColumns(**kwargs["columns"])
    if cfg.split is not None:
        kwargs["split"] = cfg.split
    reader: Any = open_dataset(cfg.format, cfg.path, **kwargs)
    if isinstance(reader, WebDatasetReader):
        reader = IndexedShards(reader)
    n = len(reader)
    needs_filter = cfg.exclude_split is not None or cfg.holdout_fraction > 0 or not _cheap_to_skip_check(reader)
    if needs_filter:
        keep = []
        for i in range(n):
            s = reader[i]
            if cfg.exclude_split is not None and s["split"] == cfg.exclude_split:
                continue
            if holdout_member(s["image_id"], cfg.holdout_fraction):
                continue
            if not s["captions"] and not (s["label"] and cfg.label_prompts):
                continue
            keep.append(i)
        indices = np.asarray(keep, dtype=np.int64)
    else:
        indices = np.arange(n, dtype=np.int64)
    if cfg.limit is not None and cfg.limit < len(indices):
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(indices, size=cfg.limit, replace=False))
    if len(indices) == 0:
        raise ValueError(f"{cfg.path}: no usable samples (each needs captions, or a label and label_prompts)")
    return _Source(cfg, reader, indices, Path(cfg.path).name or str(cfg.path))


def _cheap_to_skip_check(reader: Any) -> bool:
    # Large arrow-backed sources (Git-10M) are not scanned; every row there has a caption.
    return type(reader).__name__ == "Git10MReader"


class TrainingSet:
    """The opened sources of a :class:`DataConfig` and the per-epoch sample order."""

    def __init__(self, config: DataConfig, seed: int = 0) -> None:
        if not config.sources:
            raise ValueError("no training sources configured")
        self.config = config
        self.seed = seed
        self.sources = [_open_source(cfg, seed + i) for i, cfg in enumerate(config.sources)]
        counts = [len(s.indices) * s.config.weight for s in self.sources]
        self.epoch_size = config.samples_per_epoch or max(1, round(sum(counts)))

    def describe(self) -> list[dict[str, Any]]:
        return [{"source": s.config.path, "format": s.config.format, "samples": len(s.indices),
                 "weight": s.config.weight} for s in self.sources]

    def epoch_order(self, epoch: int) -> np.ndarray:
        """(epoch_size, 2) int64 array of (source, item) pairs, seeded by ``(seed, epoch)``.

        Each source's items appear ``weight`` times per epoch in expectation (whole repeats plus a seeded draw
        for the fraction); the epoch is then shuffled and cut or tiled to ``epoch_size``.
        """
        rng = np.random.default_rng([self.seed, epoch, 7919])
        parts = []
        for si, src in enumerate(self.sources):
            n = len(src.indices)
            whole, frac = divmod(src.config.weight, 1.0)
            items = [np.arange(n)] * int(whole)
            extra = round(frac * n)
            if extra:
                items.append(rng.choice(n, size=extra, replace=False))
            if items:
                idx = np.concatenate(items)
                parts.append(np.stack([np.full_like(idx, si), idx], axis=1))
        order = np.concatenate(parts)
        order = order[rng.permutation(len(order))]
        if len(order) < self.epoch_size:
            reps = -(-self.epoch_size // len(order))
            order = np.concatenate([order] * reps)
        return order[: self.epoch_size]

    def sample(self, source: int, item: int) -> ImageTextSample:
        src = self.sources[source]
        return src.reader[int(src.indices[item])]

    def captions_for(self, sample: ImageTextSample, source: int) -> list[str]:
        """The captions of a sample, or its label filled into the source's prompt templates."""
        if sample["captions"]:
            return list(sample["captions"])
        return self.label_prompts_for(sample, source)

    def label_prompts_for(self, sample: ImageTextSample, source: int) -> list[str]:
        """The sample's label filled into the source's prompt templates (empty without a label or templates)."""
        cfg = self.sources[source].config
        label = sample["label"]
        if label and cfg.label_prompts:
            name = prompt_names([label], cfg.label_set)[0] if cfg.label_set else prettify_class_name(label)
            return [t.format(name) for t in cfg.label_prompts]
        return []


@dataclass(frozen=True)
class BatchPlan:
    """Which epoch positions each rank reads at each optimizer step.

    Step ``s`` reads positions ``[w * per_step, (w + 1) * per_step)`` of epoch ``s // steps_per_epoch``, where
    ``w = s % steps_per_epoch``; micro-batch ``m`` of rank ``r`` takes the slice starting at
    ``(m * world + r) * batch_size``. So the samples of a step depend only on the step, not on where a run was
    resumed, and ``world x batch_size`` is what matters, not how it is split across processes.

    Raises:
        ValueError: an epoch of ``epoch_size`` samples is shorter than one optimizer step.
    """

    epoch_size: int
    batch_size: int
    grad_accum: int = 1
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise ValueError(f"an epoch has {self.epoch_size} samples, fewer than one optimizer step's "
                             f"{self.per_step} (batch_size x processes x grad_accum); lower the batch size or set "
                             "data.samples_per_epoch")

    @property
    def per_step(self) -> int:
        """Samples one optimizer step consumes, all ranks and micro-batches together."""
        return self.batch_size * self.world * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        return self.epoch_size // self.per_step

    def epoch_of(self, step: int) -> int:
        """The epoch that 0-based step ``step`` reads from."""
        return step // self.steps_per_epoch

    def positions(self, start_step: int, end_step: int) -> Iterator[list[int]]:
        """This rank's micro-batches (lists of epoch positions) for steps ``start_step`` to ``end_step - 1``."""
        for step in range(start_step, end_step):
            base = (step % self.steps_per_epoch) * self.per_step
            for m in range(self.grad_accum):
                first = base + (m * self.world + self.rank) * self.batch_size
                yield list(range(first, first + self.batch_size))


class EpochDataset(Dataset[dict[str, Any]]):
    """Position ``p`` of an epoch -> ``{"pixels", "caption", "position"}``, deterministic in (seed, epoch, p).

    With ``features`` (a :class:`geovl.training.feature_cache.FeatureCache`), ``"pixels"`` holds the cached output
    of a locked image trunk for one of the sample's cached views instead of augmented pixels.
    """

    def __init__(
        self,
        data: TrainingSet,
        order: np.ndarray,
        epoch: int,
        augment: RSAugment,
        image_cache: torch.Tensor | None = None,
        cache_index: dict[tuple[int, int], int] | None = None,
        features: Any = None,
    ) -> None:
        self.data = data
        self.features = features
        self.order = order
        self.epoch = epoch
        self.augment = augment
        self.image_cache = image_cache
        self.cache_index = cache_index

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(mix_seed(self.data.seed, self.epoch, position))
        source, item = (int(v) for v in self.order[position])
        sample = self.data.sample(source, item)
        captions = self.data.captions_for(sample, source)
        for step in range(1, 17):
            if captions:
                break
            # a sample without text (possible in unscanned large sources): deterministically take the next
            source, item = (int(v) for v in self.order[(position + step) % len(self.order)])
            sample = self.data.sample(source, item)
            captions = self.data.captions_for(sample, source)
        if not captions:
            raise ValueError(f"16 consecutive samples from position {position} have no caption")
        share = self.data.sources[source].config.label_prompt_share
        if share > 0 and sample["captions"] and float(torch.rand((), generator=gen)) < share:
            captions = self.data.label_prompts_for(sample, source) or captions
        caption = captions[int(torch.randint(len(captions), (1,), generator=gen))]
        if self.features is not None:  # a locked image trunk's cached output for one of the sample's views
            view = int(torch.randint(self.features.views, (1,), generator=gen))
            return {"pixels": self.features.row(source, item, view), "caption": caption, "position": position}
        if self.image_cache is not None and self.cache_index is not None:
            image = self.image_cache[self.cache_index[(source, item)]]
        else:
            image = pil_to_uint8(load_image(sample["image"]))
        return {"pixels": self.augment(image, gen), "caption": caption, "position": position}


def pil_to_uint8(image: Any) -> torch.Tensor:
    """(3, H, W) uint8 tensor from a PIL image."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def mix_seed(*values: int) -> int:
    digest = hashlib.blake2b(np.asarray(values, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def collate(tokenize: Callable[[list[str]], torch.Tensor]) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """Collate function: stacked pixels, captions, and their token ids."""

    def fn(items: list[dict[str, Any]]) -> dict[str, Any]:
        captions = [it["caption"] for it in items]
        return {
            "pixels": torch.stack([it["pixels"] for it in items]),
            "captions": captions,
            "tokens": tokenize(captions),
            "positions": torch.tensor([it["position"] for it in items]),
        }

    return fn


class _CacheDecode(Dataset[torch.Tensor]):
    def __init__(self, data: TrainingSet, keys: list[tuple[int, int]], size: int) -> None:
        self.data, self.keys, self.size = data, keys, size

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        s, item = self.keys[i]
        img = pil_to_uint8(load_image(self.data.sample(s, item)["image"]))
        img = TF.resize(img, [self.size], antialias=True)
        return TF.center_crop(img, [self.size, self.size])


def build_image_cache(data: TrainingSet, size: int, workers: int, progress: bool = True
                      ) -> tuple[torch.Tensor, dict[tuple[int, int], int]]:
    """Decode every training image once to a (N, 3, size, size) uint8 tensor (shared with forked workers)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    keys = [(si, i) for si, src in enumerate(data.sources) for i in range(len(src.indices))]
    cache = torch.empty((len(keys), 3, size, size), dtype=torch.uint8)
    loader = DataLoader(_CacheDecode(data, keys, size), batch_size=64, num_workers=workers)
    pos = 0
    with tqdm(total=len(keys), unit="img", desc="decoding images", disable=not progress) as bar:
        for batch in loader:
            cache[pos : pos + len(batch)] = batch
            pos += len(batch)
            bar.update(len(batch))
    return cache, {k: i for i, k in enumerate(keys)}
