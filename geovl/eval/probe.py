"""Linear-probe and k-NN classification on frozen embeddings, the standard complements to zero-shot.

Both take L2-normalised embeddings of a training and a test set. The linear probe is a multinomial logistic
regression (scikit-learn, L-BFGS) whose inverse regularisation ``C`` is chosen on a held-out part of the training
set, then refit on all of it. The k-NN classifier votes with the k most cosine-similar training embeddings,
weighted by ``exp(similarity / T)`` (T = 0.07, as in DINO's k-NN protocol).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geovl._optional import require

DEFAULT_C_GRID = (0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0)


@dataclass
class ProbeResult:
    """Test-set class scores (N_test, C) and the settings that produced them."""

    scores: np.ndarray
    settings: dict[str, float | int | str]


def _check(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, n_classes: int) -> None:
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(f"embeddings must be (N, D) with equal D, got {train.shape} and {test.shape}")
    if train_y.shape != (train.shape[0],):
        raise ValueError("one training label per training embedding is needed")
    if len(np.unique(train_y)) < 2:
        raise ValueError("the training set needs at least two classes")
    if train_y.min() < 0 or train_y.max() >= n_classes:
        raise ValueError(f"labels must be class indexes in [0, {n_classes})")


def linear_probe(
    train: np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    test: np.ndarray,
    n_classes: int,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
) -> ProbeResult:
    """Fit logistic regression on ``train`` (choosing C on a stratified validation split), score ``test``."""
    lm = require("sklearn.linear_model", extra=None, feature="the linear probe")
    ms = require("sklearn.model_selection", extra=None, feature="the linear probe")
    x, y, t = np.asarray(train, np.float32), np.asarray(train_labels, np.int64), np.asarray(test, np.float32)
    _check(x, y, t, n_classes)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    counts = np.bincount(y)
    present = int((counts > 0).sum())
    n_val = int(np.ceil(val_fraction * len(y)))
    # C is tuned only when the validation split can hold every class (else scikit-learn cannot stratify).
    tune = len(c_grid) > 1 and counts[counts > 0].min() >= 2 and n_val >= present and len(y) - n_val >= present
    best_c, best_acc = (float(c_grid[0]), -1.0) if tune else (1.0, float("nan"))
    if tune:
        xa, xb, ya, yb = ms.train_test_split(x, y, test_size=val_fraction, random_state=seed, stratify=y)
        for c in c_grid:
            model = lm.LogisticRegression(C=c, max_iter=max_iter)
            model.fit(xa, ya)
            acc = float((model.predict(xb) == yb).mean())
            if acc > best_acc:
                best_c, best_acc = float(c), acc
    model = lm.LogisticRegression(C=best_c, max_iter=max_iter)
    model.fit(x, y)
    proba = model.predict_proba(t)
    scores = np.zeros((t.shape[0], n_classes), np.float32)
    scores[:, model.classes_] = proba
    settings: dict[str, float | int | str] = {"C": best_c, "max_iter": max_iter, "seed": seed,
                                              "C_tuned": "yes" if tune else "no (too few training images)"}
    if tune:
        settings["val_accuracy"] = round(100 * best_acc, 2)
    return ProbeResult(scores=scores, settings=settings)


def knn_classify(
    train: np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    test: np.ndarray,
    n_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
    block: int = 1024,
) -> ProbeResult:
    """Weighted k-NN votes by cosine similarity; returns (N_test, C) normalised vote scores."""
    x, y, t = np.asarray(train, np.float32), np.asarray(train_labels, np.int64), np.asarray(test, np.float32)
    _check(x, y, t, n_classes)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k = min(k, x.shape[0])
    scores = np.zeros((t.shape[0], n_classes), np.float32)
    for start in range(0, t.shape[0], block):
        sims = t[start:start + block] @ x.T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, idx, axis=1)
        weights = np.exp((top - top.max(axis=1, keepdims=True)) / temperature)
        rows = np.repeat(np.arange(idx.shape[0]), k)
        np.add.at(scores[start:start + block], (rows, y[idx].ravel()), weights.ravel())
    scores /= scores.sum(axis=1, keepdims=True)
    return ProbeResult(scores=scores, settings={"k": k, "temperature": temperature})
