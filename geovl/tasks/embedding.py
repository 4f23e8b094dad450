"""The one way images become embeddings: a decode mapper in DataLoader workers, then the backbone.

Every caller that turns a list of images into embeddings goes through here: the partitioned ``geovl embed``
pipeline (:mod:`geovl.index.pipeline`), zero-shot classification, the eval protocols and the HTTP API. Unreadable
inputs (empty, truncated, not an image, below a chip's valid-pixel fraction) are recorded with the reason and
skipped, never fatal.

Decoding overlaps the model in ``workers`` processes; on a small CPU it runs in the model's process between forward
passes, which is faster there (see :func:`default_decode_workers`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from geovl.data.sources import ChipRef, Record
from geovl.io.images import DEFAULT_MAX_PIXELS, ImageReadError, ImageSource
from geovl.models.backbone import Backbone

__all__ = [
    "SMALL_CPU_CORES",
    "DecodeMapper",
    "EmbeddingPipeline",
    "Embeddings",
    "PixelModel",
    "as_records",
    "batch_workers",
    "chip_metadata",
    "decode_loader",
    "default_decode_workers",
]

logger = logging.getLogger(__name__)

#: A model on a CPU with at most this many cores decodes in its own process by default (see
#: :func:`default_decode_workers`).
SMALL_CPU_CORES = 4


def default_decode_workers(device: torch.device | str, cores: int | None = None) -> int:
    """How many decode processes to run beside a model on ``device``.

    On a GPU: one per spare core, so that decoding overlaps the forward passes. On a CPU with few cores the
    model's threads already occupy every core, and a decode process beside them pre-empts those threads (which
    wait for each other at every layer), so decoding runs in the model's process between forward passes (the
    placements are timed side by side in ``benchmarks/embed_throughput.py``). Larger CPUs keep worker processes.
    """
    cores = cores or os.cpu_count() or 2
    if torch.device(device).type == "cpu" and cores <= SMALL_CPU_CORES:
        return 0
    return max(1, cores - 1)


# ---------------------------------------------------------------- mapper (runs in DataLoader workers)


def polygon_wkb(ring: Sequence[tuple[float, float]]) -> bytes:
    """ISO WKB (little endian) of a one-ring polygon, as GeoParquet stores geometries."""
    pts = list(ring)
    if pts and pts[0] != pts[-1]:
        pts.append(pts[0])
    return struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(pts)) + b"".join(struct.pack("<dd", x, y)
                                                                                for x, y in pts)


def chip_metadata(chip: Any) -> dict[str, Any]:
    """The metadata columns of a decoded chip: GSD, sensor, time, valid fraction, CRS, lon/lat bounds, WKB footprint."""
    meta: dict[str, Any] = {"gsd": chip.gsd, "sensor": chip.sensor, "acquired": chip.acquired,
                            "valid_fraction": float(chip.valid_fraction), "crs": chip.crs}
    if chip.lonlat_bounds is not None:
        meta.update(zip(("lon_min", "lat_min", "lon_max", "lat_max"), map(float, chip.lonlat_bounds), strict=True))
    if chip.footprint:
        meta["geometry"] = polygon_wkb(chip.footprint)
    return meta


Decoded = tuple[int, torch.Tensor | None, dict[str, Any], str | None]


class DecodeMapper(Dataset):
    """Decode + preprocess one record per item; returns ``(position, tensor | None, chip metadata, error)``.

    ``max_pixels`` refuses larger images (decompression bombs) as a recorded failure.
    """

    def __init__(self, records: Sequence[Record], transform: Callable[[Any], torch.Tensor], chip_readers: list[Any],
                 *, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.records = records
        self.transform = transform
        self.chip_readers = chip_readers
        self.max_pixels = max_pixels
        self._open: dict[int, Any] = {}  # per worker process: scene index -> open rasterio dataset

    def __len__(self) -> int:
        return len(self.records)

    def _dataset(self, scene: int) -> Any:
        if scene not in self._open:
            from geovl.io.geotiff import open_raster

            ctx = open_raster(self.chip_readers[scene].path)
            self._open[scene] = (ctx, ctx.__enter__())
        return self._open[scene][1]

    def __getitem__(self, i: int) -> Decoded:
        from PIL import Image

        from geovl.io.loading import load_image

        image = self.records[i].image
        try:
            if isinstance(image, ChipRef):
                chip = self.chip_readers[image.scene].read(image.row, image.col, self._dataset(image.scene))
                if chip is None:
                    return i, None, {}, "below the minimum valid-pixel fraction"
                return i, self.transform(Image.fromarray(chip.image[:, :, :3])), chip_metadata(chip), None
            return i, self.transform(load_image(image, max_pixels=self.max_pixels)), {}, None
        except (ImageReadError, OSError, ValueError) as exc:
            return i, None, {}, str(exc)


def _collate(items: list[Decoded]) -> Any:
    ok = [(i, t, m) for i, t, m, _ in items if t is not None]
    bad = [(i, e or "unreadable") for i, t, _, e in items if t is None]
    pixels = torch.stack([t for _, t, _ in ok]) if ok else None
    return [i for i, _, _ in ok], pixels, [m for _, _, m in ok], bad


class PixelModel(Protocol):
    """What :func:`decode_loader` needs of a model: where it runs and its PIL -> uint8 tensor transform (a
    :class:`~geovl.models.backbone.Backbone`, a captioner)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def uint8_transform(self) -> Callable[[Any], torch.Tensor]: ...


def decode_loader(backbone: PixelModel, records: Sequence[Record], chip_readers: list[Any], batch_size: int,
                  workers: int) -> DataLoader:
    """Batches of ``(positions, pixels | None, chip metadata, failures)``, decoded in ``workers`` processes."""
    cpu = backbone.device.type == "cpu"
    return DataLoader(DecodeMapper(records, backbone.uint8_transform, chip_readers), batch_size=batch_size,
                      num_workers=workers, collate_fn=_collate, pin_memory=not cpu,
                      worker_init_fn=_yield_to_the_model if cpu else None, prefetch_factor=4 if workers else None)


def _yield_to_the_model(_: int) -> None:
    """Decode workers run at a lower CPU priority when the model shares the CPU: the model's OpenMP threads wait
    for each other at every layer, so a worker that pre-empts one of them stalls all of them."""
    with contextlib.suppress(OSError):  # not permitted: keep the default priority
        os.nice(10)


# ---------------------------------------------------------------- the pipeline


def batch_workers(device: torch.device | str, batch_size: int, workers: int | None) -> int:
    """Check a pipeline's ``batch_size`` and ``workers``; the decode workers to use (``None``: the device's
    default, :func:`default_decode_workers`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    return default_decode_workers(device) if workers is None else workers


def as_records(images: Sequence[ImageSource | Record], verb: str) -> list[Record]:
    """A pipeline's input as records.

    Raises:
        ValueError: a single path or bytes object instead of a list; an empty list.
    """
    if isinstance(images, (str, bytes, os.PathLike)):
        raise ValueError("pass a list of images, not a single path or bytes object")
    if len(images) == 0:
        raise ValueError(f"no images to {verb}")
    return [im if isinstance(im, Record) else Record(im) for im in images]


@dataclass
class Embeddings:
    """What :class:`EmbeddingPipeline` made of a list of images.

    Attributes:
        embeddings: (N_kept, D) float32 L2-normalised rows, for the inputs at positions ``kept`` (in order).
        kept: input positions that were embedded.
        failures: ``(position, reason)`` for every input that could not be read.
        seconds: wall time of decode + model, excluding model loading.
    """

    embeddings: np.ndarray
    kept: list[int]
    failures: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.kept) / self.seconds if self.seconds > 0 else 0.0


class EmbeddingPipeline:
    """Images (paths, bytes, PIL images, uint8 arrays or :class:`~geovl.data.sources.Record`) to embeddings.

    Args:
        backbone: the model.
        batch_size: images per forward pass.
        workers: decode processes (default :func:`default_decode_workers`; 0 decodes in the model's process).

    Example::

        result = EmbeddingPipeline(backbone)(["a.png", "b.png", "empty.png"])
        result.embeddings.shape, result.kept, result.failures  # (2, D), [0, 1], [(2, "... file is empty ...")]
    """

    def __init__(self, backbone: Backbone, *, batch_size: int = 64, workers: int | None = None) -> None:
        self.backbone = backbone
        self.batch_size = batch_size
        self.workers = batch_workers(backbone.device, batch_size, workers)

    def __repr__(self) -> str:
        return f"EmbeddingPipeline({self.backbone!r}, batch_size={self.batch_size}, workers={self.workers})"

    def __call__(self, images: Sequence[ImageSource | Record], *, progress: bool = False,
                 desc: str = "embed") -> Embeddings:
        """Embed ``images`` in order, skipping (and recording) the ones that cannot be read.

        Raises:
            ValueError: a single path or bytes object instead of a list; an empty list.
        """
        records = as_records(images, "embed")
        loader = decode_loader(self.backbone, records, [], self.batch_size, self.workers)
        from tqdm.auto import tqdm

        chunks: list[np.ndarray] = []
        kept: list[int] = []
        failures: list[tuple[int, str]] = []
        bar = tqdm(total=len(records), unit="img", desc=desc, disable=not progress, dynamic_ncols=True)
        start = time.perf_counter()
        for idx, pixels, _, bad in loader:
            for i, err in bad:
                failures.append((i, err))
                logger.warning("skipped %s", err)
            if pixels is not None:
                chunks.append(self.backbone.embed_pixels(pixels).cpu().numpy())
                kept.extend(idx)
            bar.update(len(idx) + len(bad))
        seconds = time.perf_counter() - start
        bar.close()
        emb = np.concatenate(chunks) if chunks else np.zeros((0, self.backbone.embed_dim), np.float32)
        return Embeddings(embeddings=emb, kept=kept, failures=failures, seconds=seconds)
