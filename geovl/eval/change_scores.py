"""Change / no-change verdict scores and the agreement of change heat maps with change masks (numpy only).

Rules:

* "changed" is the positive class. Balanced accuracy is the mean of the recall of each class present in the truth;
  precision, recall and F1 are ``None`` where their denominator is 0.
* AUROC is the Mann-Whitney U statistic with average ranks for ties (a tie between a positive and a negative
  counts half), ``None`` when one class is absent; 0.5 is chance, 1.0 a perfect ranking.
* A mask is compared with a heat map on the heat map's grid: the mask is first cut to its centred square (what a
  shortest-side resize + centre crop keeps), then each cell's changed fraction is taken; a cell is changed when that
  fraction is > 0. The heat-map AUROC pools every cell of every pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["VerdictScores", "auroc", "heat_agreement", "mask_cells", "verdict_scores"]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class VerdictScores:
    """Changed / unchanged verdicts against the truth ("changed" is the positive class)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n_pairs(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def n_changed(self) -> int:
        return self.tp + self.fn

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.n_pairs)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float | None:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def balanced_accuracy(self) -> float | None:
        """The mean recall of the classes present in the truth."""
        recalls = [r for r in (self.recall, self.specificity) if r is not None]
        return sum(recalls) / len(recalls) if recalls else None

    def to_dict(self) -> dict[str, Any]:
        names = ("n_pairs", "n_changed", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "tp", "fp",
                 "tn", "fn")
        return {k: getattr(self, k) for k in names}


def verdict_scores(truth: Sequence[bool], predicted: Sequence[bool]) -> VerdictScores:
    """Confusion counts of ``predicted`` against ``truth`` (changed = True).

    Raises:
        ValueError: lists of different lengths.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} truths but {len(predicted)} verdicts")
    pairs = [(bool(t), bool(p)) for t, p in zip(truth, predicted, strict=True)]
    return VerdictScores(tp=pairs.count((True, True)), fp=pairs.count((False, True)),
                         tn=pairs.count((False, False)), fn=pairs.count((True, False)))


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for ``labels`` (Mann-Whitney U with average ranks for ties);
    ``None`` when one class is absent.

    Raises:
        ValueError: shapes differ.
    """
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels, bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # the average 1-based rank of each tie group
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mask_cells(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The changed fraction of each cell of ``grid`` over the centred square of ``mask`` (see the module
    docstring): float64 ``grid``."""
    m = np.asarray(mask, bool)
    if m.ndim != 2 or not m.size:
        raise ValueError(f"a mask must be a non-empty (H, W) array, got shape {m.shape}")
    side = min(m.shape)
    top, left = (m.shape[0] - side) // 2, (m.shape[1] - side) // 2
    m = m[top:top + side, left:left + side].astype(np.float64)
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"a grid needs at least one row and one column, got {grid}")
    factor = -(-max(rows, cols) // side)  # repeat pixels so that every cell holds at least one
    if factor > 1:
        m = np.repeat(np.repeat(m, factor, axis=0), factor, axis=1)
        side *= factor
    r_edges = np.linspace(0, side, rows + 1).round().astype(int)
    c_edges = np.linspace(0, side, cols + 1).round().astype(int)
    sums = np.add.reduceat(np.add.reduceat(m, r_edges[:-1], axis=0), c_edges[:-1], axis=1)
    return sums / np.outer(np.diff(r_edges), np.diff(c_edges))


def heat_agreement(heatmaps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> tuple[float | None, int, int]:
    """``(AUROC, cells, changed cells)`` of the heat maps' cells against their masks' (see the module docstring)."""
    if len(heatmaps) != len(masks):
        raise ValueError(f"{len(heatmaps)} heat maps but {len(masks)} masks")
    if not heatmaps:
        return None, 0, 0
    heat = np.concatenate([np.asarray(h, np.float64).ravel() for h in heatmaps])
    truth = np.concatenate([(mask_cells(m, np.asarray(h).shape) > 0).ravel()
                            for h, m in zip(heatmaps, masks, strict=True)])
    return auroc(heat, truth), int(truth.size), int(truth.sum())
