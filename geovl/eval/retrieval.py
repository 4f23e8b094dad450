"""Cross-modal retrieval metrics (image-to-text and text-to-image recall@k), as in RemoteCLIP / GeoRSCLIP.

Protocol: every image comes with its captions (5 in the Karpathy sets). Image-to-text R@k is the share of images
for which *any* of their captions ranks in the top k; text-to-image R@k is the share of captions whose image ranks
in the top k. Mean recall (mR) is the mean of the six numbers R@1/5/10 in both directions. Ties are broken
against the query (a tie with a wrong item counts as ranked ahead), so a constant model scores 0, not 100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

HEADLINE_K = (1, 5, 10)
CURVE_K = (1, 2, 3, 5, 10, 20, 50, 100)


@dataclass
class RetrievalScores:
    """Recall@k in percent for both directions.

    Attributes:
        i2t, t2i: ``{k: recall in %}`` for every k in the curve.
        mean_recall: mean of i2t and t2i R@1/5/10 (%).
        i2t_ranks: (N_images,) 0-based rank of the best-ranked correct caption per image.
        t2i_ranks: (N_texts,) 0-based rank of the correct image per caption.
    """

    i2t: dict[int, float]
    t2i: dict[int, float]
    mean_recall: float
    i2t_ranks: np.ndarray = field(repr=False)
    t2i_ranks: np.ndarray = field(repr=False)

    def figures(self) -> dict[str, float]:
        """Headline numbers, named like the papers' tables."""
        out = {f"i2t_R@{k}": self.i2t[k] for k in HEADLINE_K}
        out |= {f"t2i_R@{k}": self.t2i[k] for k in HEADLINE_K}
        out["mean_recall"] = self.mean_recall
        return out


def _ranks_of_targets(scores: np.ndarray, target_mask: np.ndarray) -> np.ndarray:
    """0-based rank of the best-scoring target per row, counting ties with non-targets against the row."""
    best_target = np.where(target_mask, scores, -np.inf).max(axis=1)
    higher_or_tied = (scores >= best_target[:, None]) & ~target_mask
    return np.asarray(higher_or_tied.sum(axis=1))


def retrieval_scores(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_to_image: Sequence[int] | np.ndarray,
    *,
    curve_k: Sequence[int] = CURVE_K,
    block: int = 1024,
) -> RetrievalScores:
    """Recall@k for L2-normalised embeddings.

    Args:
        image_embeddings: (N_i, D).
        text_embeddings: (N_t, D).
        text_to_image: (N_t,) index of each caption's image.
        curve_k: the k values to report (must include 1, 5 and 10).
        block: rows scored at a time, bounding memory at ``block * max(N_i, N_t)`` floats.
    """
    img = np.asarray(image_embeddings, np.float32)
    txt = np.asarray(text_embeddings, np.float32)
    owner = np.asarray(text_to_image, np.int64)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise ValueError(f"embeddings must be (N, D) with equal D, got {img.shape} and {txt.shape}")
    if owner.shape != (txt.shape[0],):
        raise ValueError(f"text_to_image needs one image index per text ({txt.shape[0]}), got shape {owner.shape}")
    if owner.size and (owner.min() < 0 or owner.max() >= img.shape[0]):
        raise ValueError(f"text_to_image indexes must be in [0, {img.shape[0]})")
    without = np.setdiff1d(np.arange(img.shape[0]), owner)
    if without.size:
        raise ValueError(f"{without.size} image(s) have no caption (e.g. index {int(without[0])})")
    if not set(HEADLINE_K) <= set(curve_k):
        raise ValueError("curve_k must include 1, 5 and 10")

    i2t_ranks = np.empty(img.shape[0], np.int64)
    for start in range(0, img.shape[0], block):
        rows = np.arange(start, min(start + block, img.shape[0]))
        scores = img[rows] @ txt.T
        i2t_ranks[rows] = _ranks_of_targets(scores, owner[None, :] == rows[:, None])
    t2i_ranks = np.empty(txt.shape[0], np.int64)
    cols = np.arange(img.shape[0])
    for start in range(0, txt.shape[0], block):
        rows = np.arange(start, min(start + block, txt.shape[0]))
        scores = txt[rows] @ img.T
        t2i_ranks[rows] = _ranks_of_targets(scores, cols[None, :] == owner[rows][:, None])

    i2t = {k: 100.0 * float((i2t_ranks < k).mean()) for k in curve_k}
    t2i = {k: 100.0 * float((t2i_ranks < k).mean()) for k in curve_k}
    mean = float(np.mean([i2t[k] for k in HEADLINE_K] + [t2i[k] for k in HEADLINE_K]))
    return RetrievalScores(i2t=i2t, t2i=t2i, mean_recall=mean, i2t_ranks=i2t_ranks, t2i_ranks=t2i_ranks)
