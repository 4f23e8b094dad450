"""Images to captions: decode workers, then the captioner, batch by batch (the one captioning path).

The CLI's batch runs (:mod:`geovl.tasks.captioning.batch`), the HTTP API, the demo and the evaluation protocol all
caption through :class:`CaptioningPipeline`. Unreadable inputs are recorded with the reason and skipped, never fatal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from geovl.data.sources import Record
from geovl.io.images import ImageSource
from geovl.models.captioner import CaptionModel
from geovl.models.decoding import DecodingConfig
from geovl.tasks.embedding import as_records, batch_workers, decode_loader

__all__ = ["CaptionBatch", "CaptioningPipeline", "Captions"]

logger = logging.getLogger(__name__)


@dataclass
class CaptionBatch:
    """One model call's worth of results: input positions, their captions and chip metadata, and the failures."""

    positions: list[int]
    captions: list[str]
    meta: list[dict[str, Any]]
    failures: list[tuple[int, str]]


@dataclass
class Captions:
    """What :class:`CaptioningPipeline` made of a list of images.

    Attributes:
        captions: one caption per kept input, in input order.
        kept: input positions that were captioned.
        failures: ``(position, reason)`` for every input that could not be read.
        seconds: wall time of decode + model, excluding model loading.
    """

    captions: list[str]
    kept: list[int]
    failures: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.kept) / self.seconds if self.seconds > 0 else 0.0


class CaptioningPipeline:
    """Images (paths, bytes, PIL images, arrays or :class:`~geovl.data.sources.Record`) to captions.

    Args:
        model: a captioner (``geovl.models.load_model("geovl-caption-small")``).
        decoding: greedy / beam / nucleus settings.
        batch_size: images per model call.
        workers: decode processes (default :func:`~geovl.tasks.embedding.default_decode_workers`).

    Example::

        result = CaptioningPipeline(load_model("geovl-caption-small"))(["a.jpg", "b.jpg"])
        result.captions  # ['Many buildings and some green trees are in a dense residential area.', ...]
    """

    def __init__(self, model: CaptionModel, *, decoding: DecodingConfig | None = None, batch_size: int = 32,
                 workers: int | None = None) -> None:
        self.model = model
        self.decoding = decoding or DecodingConfig()
        self.batch_size = batch_size
        self.workers = batch_workers(model.device, batch_size, workers)

    def __repr__(self) -> str:
        return (f"CaptioningPipeline({self.model!r}, decoding={self.decoding}, batch_size={self.batch_size}, "
                f"workers={self.workers})")

    def batches(self, records: Sequence[Record], chip_readers: list[Any] | None = None) -> Iterator[CaptionBatch]:
        """Caption ``records`` batch by batch (chips read through ``chip_readers``)."""
        loader = decode_loader(self.model, records, chip_readers or [], self.batch_size, self.workers)
        for idx, pixels, meta, bad in loader:
            for _, err in bad:
                logger.warning("skipped: %s", err)
            captions = self.model.caption_pixels(pixels, self.decoding) if pixels is not None else []
            yield CaptionBatch(list(idx), captions, list(meta), list(bad))

    def __call__(self, images: Sequence[ImageSource | Record], *, progress: bool = False,
                 desc: str = "caption") -> Captions:
        """Caption ``images`` in order, skipping (and recording) the ones that cannot be read.

        Raises:
            ValueError: a single path or bytes object instead of a list; an empty list.
        """
        records = as_records(images, "caption")
        from tqdm.auto import tqdm

        out = Captions([], [])
        bar = tqdm(total=len(records), unit="img", desc=desc, disable=not progress, dynamic_ncols=True)
        start = time.perf_counter()
        for batch in self.batches(records):
            out.captions.extend(batch.captions)
            out.kept.extend(batch.positions)
            out.failures.extend(batch.failures)
            bar.update(len(batch.positions) + len(batch.failures))
        out.seconds = time.perf_counter() - start
        bar.close()
        return out
