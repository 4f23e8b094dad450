"""Calibrating a change captioner's distance verdict on real pairs with masks, with an honest estimate of how well
the calibrated verdict does on pairs it was not calibrated on.

Rules:

* the verdict's signal is the feature distance of the two dates
  (:func:`geovl.models.change_captioner.feature_distance`: 1 - mean cell cosine similarity of the frozen backbone's
  features), which needs no training; calibration picks one number, the distance threshold that maximises balanced
  accuracy on the calibration pairs (midpoints between neighbouring distances);
* the estimate is **leave-one-group-out**: pairs are grouped by the source tile they were cut from (a window of a
  tile is never scored with a threshold fitted on another window of the same tile); each group is scored with the
  threshold fitted on all the others, and the figures are pooled over groups;
* the threshold shipped is the one fitted on every calibration pair (the estimate describes that procedure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geovl.eval.change_protocol import ChangePair
from geovl.eval.change_scores import VerdictScores, auroc, verdict_scores
from geovl.io.loading import load_image
from geovl.models.change_captioner import ChangeCaptioner, feature_distance

__all__ = ["DistanceCalibration", "best_distance_threshold", "calibrate_distance", "pair_distances", "source_of"]


def source_of(pair: ChangePair) -> str:
    """The source tile of a pair or window id (``name@row,col`` windows of :func:`mask_windows`)."""
    return pair.id.split("@", 1)[0]


def pair_distances(model: ChangeCaptioner, pairs: Sequence[ChangePair], batch_size: int = 32) -> np.ndarray:
    """(P,) feature distances of ``pairs`` (each date through the model's transform and frozen backbone)."""
    out: list[np.ndarray] = []
    transform = model.uint8_transform
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start: start + batch_size]
        before = torch.stack([transform(load_image(p.before)) for p in chunk])
        after = torch.stack([transform(load_image(p.after)) for p in chunk])
        out.append(feature_distance(model.image_features(before), model.image_features(after)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def best_distance_threshold(distances: np.ndarray, changed: np.ndarray) -> float:
    """The midpoint threshold (``d >= t`` is changed) that maximises balanced accuracy (ties: the first)."""
    if not changed.any() or changed.all():
        raise ValueError("calibration needs both changed and unchanged pairs")
    values = np.sort(np.unique(distances))
    candidates = (values[1:] + values[:-1]) / 2 if len(values) > 1 else values
    best, best_score = float(candidates[0]), -1.0
    for t in candidates:
        pred = distances >= t
        score = 0.5 * (float(pred[changed].mean()) + float((~pred[~changed]).mean()))
        if score > best_score + 1e-12:
            best, best_score = float(t), score
    return best


@dataclass
class DistanceCalibration:
    """:func:`calibrate_distance`'s result: the threshold fitted on every pair, the held-out estimate per set."""

    threshold: float
    calibration_pairs: int
    auroc: float | None
    held_out: dict[str, VerdictScores] = field(default_factory=dict)
    distances: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "calibration_pairs": self.calibration_pairs, "auroc": self.auroc,
                "held_out": {k: v.to_dict() for k, v in self.held_out.items()}, "distances": self.distances}


def calibrate_distance(model: ChangeCaptioner, calibration: Sequence[ChangePair],
                       evaluate: Mapping[str, Sequence[ChangePair]] | None = None) -> DistanceCalibration:
    """Fit the distance threshold on ``calibration`` and estimate it leave-one-source-out on each ``evaluate`` set
    (groups by :func:`source_of`; see the module docstring).

    Raises:
        ValueError: calibration pairs of one class only.
    """
    d_cal = pair_distances(model, calibration)
    y_cal = np.array([p.changed for p in calibration])
    g_cal = np.array([source_of(p) for p in calibration])
    result = DistanceCalibration(best_distance_threshold(d_cal, y_cal), len(calibration),
                                 auroc(d_cal.tolist(), y_cal.tolist()))
    result.distances["calibration"] = {p.id: float(d) for p, d in zip(calibration, d_cal, strict=True)}
    for name, pairs in (evaluate or {}).items():
        d = pair_distances(model, pairs)
        y = np.array([p.changed for p in pairs])
        groups = np.array([source_of(p) for p in pairs])
        predicted = np.zeros(len(pairs), bool)
        for group in sorted(set(groups)):
            keep = g_cal != group
            threshold = best_distance_threshold(d_cal[keep], y_cal[keep])
            predicted[groups == group] = d[groups == group] >= threshold
        result.held_out[name] = verdict_scores(y.tolist(), predicted.tolist())
        result.distances[name] = {p.id: float(v) for p, v in zip(pairs, d, strict=True)}
    return result
