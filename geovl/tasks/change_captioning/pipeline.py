"""Image pairs to change captions: decode workers for both dates, then the change captioner, batch by batch.

The CLI (single pairs, GeoTIFF chips and resumable ``--pairs`` runs), the HTTP API, the demo and the benchmarks all
describe pairs through :class:`ChangeCaptioningPipeline`. A pair whose before or after image cannot be read is
recorded with the reason (naming the date) and skipped, never fatal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from geovl.data.sources import Record
from geovl.io.images import ImageSource
from geovl.models.change_captioner import ChangeCaptionModel, ChangeResult, check_threshold
from geovl.models.decoding import DecodingConfig
from geovl.tasks.embedding import as_records, batch_workers, decode_loader

__all__ = ["ChangeBatch", "ChangeCaptioningPipeline", "ChangeCaptions"]

logger = logging.getLogger(__name__)


@dataclass
class ChangeBatch:
    """One model call's worth of results: input positions, their results, and the failures."""

    positions: list[int]
    results: list[ChangeResult]
    failures: list[tuple[int, str]]


@dataclass
class ChangeCaptions:
    """What :class:`ChangeCaptioningPipeline` made of a list of pairs.

    Attributes:
        results: one :class:`~geovl.models.change_captioner.ChangeResult` per kept pair, in input order.
        kept: input positions that were described.
        failures: ``(position, reason)`` for every pair that could not be read.
        seconds: wall time of decode + model, excluding model loading.
    """

    results: list[ChangeResult]
    kept: list[int]
    failures: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def captions(self) -> list[str]:
        return [r.caption for r in self.results]

    @property
    def pairs_per_second(self) -> float:
        return len(self.kept) / self.seconds if self.seconds > 0 else 0.0


class ChangeCaptioningPipeline:
    """(before, after) image pairs to change captions, verdicts and heat maps.

    Args:
        model: a change captioner (``geovl.models.load_model("geovl-change-small")``).
        decoding: greedy / beam / nucleus settings for the captions of changed pairs.
        threshold: P(changed) at or above which a pair is changed (default: the model's calibrated one).
        batch_size: pairs per model call.
        workers: decode processes per date (default :func:`~geovl.tasks.embedding.default_decode_workers`).

    Example::

        out = ChangeCaptioningPipeline(load_model("geovl-change-small"))(["2019/a.png"], ["2023/a.png"])
        out.results[0].caption, out.results[0].changed, out.results[0].heatmap.shape
    """

    def __init__(self, model: ChangeCaptionModel, *, decoding: DecodingConfig | None = None,
                 threshold: float | None = None, batch_size: int = 16, workers: int | None = None) -> None:
        self.model = model
        self.decoding = decoding or DecodingConfig()
        self.threshold = None if threshold is None else check_threshold(threshold)
        self.batch_size = batch_size
        self.workers = batch_workers(model.device, batch_size, workers)

    def __repr__(self) -> str:
        return (f"ChangeCaptioningPipeline({self.model!r}, decoding={self.decoding}, threshold={self.threshold}, "
                f"batch_size={self.batch_size}, workers={self.workers})")

    def batches(self, before: Sequence[Record], after: Sequence[Record]) -> Iterator[ChangeBatch]:
        """Describe the pairs ``zip(before, after)`` batch by batch."""
        if len(before) != len(after):
            raise ValueError(f"{len(before)} before images but {len(after)} after images; pass one of each per pair")
        workers = self.workers // 2 if self.workers > 1 else self.workers
        loader_a = decode_loader(self.model, before, [], self.batch_size, workers)
        loader_b = decode_loader(self.model, after, [], self.batch_size, workers)
        for (idx_a, pix_a, _, bad_a), (idx_b, pix_b, _, bad_b) in zip(loader_a, loader_b, strict=True):
            failures = [(i, f"before image: {err}") for i, err in bad_a]
            failed = {i for i, _ in failures}
            failures += [(i, f"after image: {err}") for i, err in bad_b if i not in failed]
            for _, err in failures:
                logger.warning("skipped pair: %s", err)
            rows_a = {i: r for r, i in enumerate(idx_a)}
            rows_b = {i: r for r, i in enumerate(idx_b)}
            positions = [i for i in idx_a if i in rows_b]
            results: list[ChangeResult] = []
            if positions and pix_a is not None and pix_b is not None:
                a = pix_a[[rows_a[i] for i in positions]]
                b = pix_b[[rows_b[i] for i in positions]]
                results = self.model.describe_pixels(a, b, self.decoding, threshold=self.threshold)
            yield ChangeBatch(positions, results, sorted(failures))

    def __call__(self, before: Sequence[ImageSource | Record], after: Sequence[ImageSource | Record], *,
                 progress: bool = False, desc: str = "change-caption") -> ChangeCaptions:
        """Describe the pairs ``zip(before, after)`` in order, skipping (and recording) unreadable ones.

        Raises:
            ValueError: a single path instead of a list; empty lists; lists of different lengths.
        """
        records_a = as_records(before, "describe")
        records_b = as_records(after, "describe")
        from tqdm.auto import tqdm

        out = ChangeCaptions([], [])
        bar = tqdm(total=len(records_a), unit="pair", desc=desc, disable=not progress, dynamic_ncols=True)
        start = time.perf_counter()
        for batch in self.batches(records_a, records_b):
            out.results.extend(batch.results)
            out.kept.extend(batch.positions)
            out.failures.extend(batch.failures)
            bar.update(len(batch.positions) + len(batch.failures))
        out.seconds = time.perf_counter() - start
        bar.close()
        return out
