"""Classification metrics from class scores: accuracy, top-5, per-class accuracy, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClassificationScores:
    """Figures in percent.

    Attributes:
        accuracy: overall accuracy (share of correct top-1 predictions).
        top5: share of samples whose class is among the 5 highest scores (None with fewer than 6 classes).
        mean_per_class: mean of the per-class accuracies (balanced accuracy).
        per_class: ``{class name: accuracy}`` (recall of each class).
        confusion: (C, C) counts, rows = true class, columns = predicted class.
        class_names: names in index order.
        predictions: (N,) top-1 predicted class index.
    """

    accuracy: float
    top5: float | None
    mean_per_class: float
    per_class: dict[str, float]
    confusion: np.ndarray = field(repr=False)
    class_names: list[str] = field(repr=False)
    predictions: np.ndarray = field(repr=False)

    def figures(self) -> dict[str, float | None]:
        return {"accuracy": self.accuracy, "top5": self.top5, "mean_per_class": self.mean_per_class}


def classification_scores(
    scores: np.ndarray, labels: Sequence[int] | np.ndarray, class_names: Sequence[str]
) -> ClassificationScores:
    """Metrics for (N, C) class scores (probabilities or logits) against (N,) true class indexes.

    Ties in the scores are broken towards the lower class index (``argmax``), as every framework does.
    """
    s = np.asarray(scores)
    y = np.asarray(labels, np.int64)
    c = len(class_names)
    if s.ndim != 2 or s.shape[1] != c:
        raise ValueError(f"scores must be (N, {c}) for {c} classes, got {s.shape}")
    if y.shape != (s.shape[0],):
        raise ValueError(f"labels must be ({s.shape[0]},), got {y.shape}")
    if s.shape[0] == 0:
        raise ValueError("no samples to score")
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"labels must be class indexes in [0, {c})")
    pred = s.argmax(axis=1)
    confusion = np.zeros((c, c), np.int64)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(axis=1)
    per_class = {
        name: 100.0 * float(confusion[i, i] / support[i]) for i, name in enumerate(class_names) if support[i] > 0
    }
    top5 = None
    if c > 5:
        top = np.argsort(-s, axis=1, kind="stable")[:, :5]
        top5 = 100.0 * float((top == y[:, None]).any(axis=1).mean())
    return ClassificationScores(
        accuracy=100.0 * float((pred == y).mean()),
        top5=top5,
        mean_per_class=float(np.mean(list(per_class.values()))),
        per_class=per_class,
        confusion=confusion,
        class_names=list(class_names),
        predictions=pred,
    )
