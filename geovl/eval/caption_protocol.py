"""The captioning protocol: caption a caption set's split with a captioner and score it against its references.

Images are taken in the dataset's order (the first ``limit`` of the split when a limit is given, so repeated
evaluations see the same images); every reference sentence of an image counts; an image that cannot be read is
an error here (a benchmark set must be complete).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

from geovl.data import open_dataset
from geovl.data.common import holdout_member
from geovl.eval.caption_scores import CaptionScores
from geovl.eval.captioning import caption_metrics
from geovl.models.captioner import CaptionModel
from geovl.models.decoding import DecodingConfig
from geovl.tasks.captioning import CaptioningPipeline

__all__ = ["CaptionEvaluation", "ReferenceSet", "evaluate_captioner", "reference_set"]


@dataclass
class ReferenceSet:
    """The images of a split and their reference captions, in dataset order."""

    ids: list[str]
    images: list[object]
    references: dict[str, list[str]]


def reference_set(dataset: str | os.PathLike[str], split: str | list[str] | None = "test", limit: int | None = None,
                  format: str = "auto", holdout_fraction: float = 0.0) -> ReferenceSet:
    """The captioned images of ``split`` (a list of splits, or all for ``None``), at most ``limit``; with
    ``holdout_fraction`` only the images a training source with the same ``holdout_fraction`` keeps out
    (:func:`geovl.data.common.holdout_member`), a selection set drawn from training splits.

    Raises:
        ValueError: the split holds no captioned image.
    """
    reader = open_dataset(format, dataset, **({"split": split} if split is not None else {}))
    ids: list[str] = []
    images: list[object] = []
    refs: dict[str, list[str]] = {}
    for item in reader:
        sample = cast(dict[str, Any], item)
        if not sample.get("captions") or "image" not in sample or sample["image_id"] in refs:
            continue
        if holdout_fraction > 0 and not holdout_member(sample["image_id"], holdout_fraction):
            continue
        ids.append(sample["image_id"])
        images.append(sample["image"])
        refs[sample["image_id"]] = list(sample["captions"])
        if limit is not None and len(ids) >= limit:
            break
    if not ids:
        raise ValueError(f"{dataset}: the {split or 'whole'} split holds no captioned image")
    return ReferenceSet(ids, images, refs)


@dataclass
class CaptionEvaluation:
    """Scores and the predictions they were computed from (id -> caption)."""

    scores: CaptionScores
    predictions: dict[str, str]
    images_per_second: float


def evaluate_captioner(model: CaptionModel, dataset: str | os.PathLike[str] | ReferenceSet, *,
                       split: str | list[str] | None = "test", holdout_fraction: float = 0.0,
                       limit: int | None = None, decoding: DecodingConfig | None = None,
                       batch_size: int = 32, meteor: bool = False) -> CaptionEvaluation:
    """Caption the split with ``model`` and score it (BLEU-1..4, ROUGE-L, CIDEr-D; METEOR and S*m when ``meteor``)."""
    refs = dataset if isinstance(dataset, ReferenceSet) else reference_set(dataset, split, limit,
                                                                           holdout_fraction=holdout_fraction)
    result = CaptioningPipeline(model, decoding=decoding, batch_size=batch_size)(refs.images)  # type: ignore[arg-type]
    if result.failures:
        pos, why = result.failures[0]
        raise ValueError(f"{len(result.failures)} evaluation image(s) could not be read, e.g. {refs.ids[pos]}: {why}")
    predictions = {refs.ids[i]: c for i, c in zip(result.kept, result.captions, strict=True)}
    scores = caption_metrics(refs.references, predictions, meteor=meteor)
    return CaptionEvaluation(scores, predictions, result.images_per_second)
