"""The two baselines every captioner is measured against, on the same images in the same run.

* **Most frequent caption**: the training caption that occurs most often (ties: the first in dataset order),
  given to every test image. A captioner that does not beat it has learned nothing about the image.
* **Nearest-neighbour retrieval**: embed the training and test images with a dual encoder; each test image gets a
  caption of its most similar training image (cosine similarity), namely the one of that image's captions the
  dual encoder scores highest against the test image. This is what a search index alone can do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from geovl.eval.caption_protocol import ReferenceSet
from geovl.models.backbone import Backbone
from geovl.tasks.embedding import EmbeddingPipeline

__all__ = ["most_frequent_caption", "nearest_neighbour_captions"]


def most_frequent_caption(captions: Sequence[str]) -> str:
    """The most common caption (compared lower-cased and stripped; returned as first written).

    Raises:
        ValueError: no captions.
    """
    if not captions:
        raise ValueError("no training captions")
    counts = Counter(c.strip().lower() for c in captions)
    best = max(counts.values())
    return next(c for c in captions if counts[c.strip().lower()] == best)


def _embed(backbone: Backbone, images: Sequence[object], what: str) -> np.ndarray:
    result = EmbeddingPipeline(backbone)(images)  # type: ignore[arg-type]
    if result.failures:
        raise ValueError(f"{len(result.failures)} {what} image(s) could not be read: {result.failures[0][1]}")
    return result.embeddings


def nearest_neighbour_captions(backbone: Backbone, train: ReferenceSet, test: ReferenceSet) -> Mapping[str, str]:
    """Test image id -> the caption retrieved for it (see the module docstring)."""
    train_emb = _embed(backbone, train.images, "training")
    test_emb = _embed(backbone, test.images, "test")
    nearest = (test_emb @ train_emb.T).argmax(axis=1)
    out: dict[str, str] = {}
    for row, neighbour in enumerate(nearest.tolist()):
        candidates = train.references[train.ids[neighbour]]
        texts = backbone.encode_texts(candidates)
        out[test.ids[row]] = candidates[int((texts @ test_emb[row]).argmax())]
    return out
