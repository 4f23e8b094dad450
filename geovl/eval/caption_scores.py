"""Results of the caption metrics: corpus and per-image scores, change-captioning subsets, no-change detection.

Scales: :class:`CaptionScores` stores every figure as pycocoevalcap returns it (fractions, CIDEr-D on its native
0..10 scale). :meth:`CaptionScores.as_percent` multiplies *every* figure by 100, which is how RSICC papers print
them (CIDEr-D 1.3661 -> 136.61); S*m is the mean of the four stored figures, so its percent form equals the mean of
the four printed figures.

The figures are computed by :mod:`geovl.eval.captioning`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "METRIC_NAMES",
    "CaptionScores",
    "ChangeCaptionScores",
    "ImageCaptionScores",
    "NoChangeDetection",
]

#: Display names of the figures, in table order (the keys of :meth:`CaptionScores.as_percent`).
METRIC_NAMES: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "S*m")

_FIELDS: dict[str, str] = {
    "BLEU-1": "bleu1",
    "BLEU-2": "bleu2",
    "BLEU-3": "bleu3",
    "BLEU-4": "bleu4",
    "METEOR": "meteor",
    "ROUGE-L": "rouge_l",
    "CIDEr-D": "cider_d",
    "S*m": "s_m",
}


def _field(metric: str) -> str:
    if metric in _FIELDS:
        return _FIELDS[metric]
    if metric in _FIELDS.values():
        return metric
    raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRIC_NAMES)}")


def _s_m(bleu4: float, meteor: float | None, rouge_l: float, cider_d: float) -> float | None:
    return None if meteor is None else (bleu4 + meteor + rouge_l + cider_d) / 4.0


@dataclass(frozen=True)
class ImageCaptionScores:
    """The scores of one image's candidate against its references (same scales as :class:`CaptionScores`).

    Per-image BLEU uses the image's own brevity penalty, and per-image CIDEr-D uses the idf of the whole evaluated
    set, as in coco-caption's ``imgToEval``.
    """

    image_id: str
    candidate: str
    references: tuple[str, ...]
    bleu1: float
    bleu2: float
    bleu3: float
    bleu4: float
    meteor: float | None
    rouge_l: float
    cider_d: float

    @property
    def s_m(self) -> float | None:
        """(BLEU-4 + METEOR + ROUGE-L + CIDEr-D) / 4, or ``None`` without METEOR."""
        return _s_m(self.bleu4, self.meteor, self.rouge_l, self.cider_d)

    def score(self, metric: str) -> float | None:
        """One figure by display name (``"CIDEr-D"``) or field name (``"cider_d"``)."""
        value: float | None = getattr(self, _field(metric))
        return value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: id, candidate, references and every figure (field names, stored scales)."""
        out: dict[str, Any] = {"image_id": self.image_id, "candidate": self.candidate,
                               "references": list(self.references)}  # fmt: skip
        out.update({f: getattr(self, f) for f in _FIELDS.values()})
        return out


@dataclass(frozen=True)
class CaptionScores:
    """Corpus-level caption metrics, as coco-caption computes them.

    Attributes:
        bleu1, bleu2, bleu3, bleu4: corpus BLEU-n, fractions in [0, 1].
        meteor: METEOR 1.5 in [0, 1], or ``None`` when it was skipped (``meteor=False`` or no Java; see ``notes``).
        rouge_l: mean per-image ROUGE-L F-measure (beta 1.2), in [0, 1].
        cider_d: mean per-image CIDEr-D on pycocoevalcap's scale (0-10; papers print it x100, e.g. 136.61).
        n_images: number of images (or image pairs) scored.
        tokenizer: the backend that tokenised the captions, ``"python"`` or ``"java"``
            (see :func:`geovl.eval.ptb_tokenizer.ptb_tokenize`).
        per_image: one :class:`ImageCaptionScores` per image, in sorted id order.
        notes: anything the reader should know (a metric that was skipped and why).
    """

    bleu1: float
    bleu2: float
    bleu3: float
    bleu4: float
    meteor: float | None
    rouge_l: float
    cider_d: float
    n_images: int
    tokenizer: str
    per_image: tuple[ImageCaptionScores, ...] = field(default=(), repr=False)
    notes: tuple[str, ...] = ()

    @property
    def s_m(self) -> float | None:
        """S*m = (BLEU-4 + METEOR + ROUGE-L + CIDEr-D) / 4 on the stored scales, ``None`` without METEOR.

        ``100 * s_m`` is the S*m of the change-captioning tables (mean of the four figures as printed there).
        """
        return _s_m(self.bleu4, self.meteor, self.rouge_l, self.cider_d)

    def score(self, metric: str) -> float | None:
        """One figure by display name (``"BLEU-4"``, ``"S*m"``) or field name (``"bleu4"``), on the stored scale."""
        value: float | None = getattr(self, _field(metric))
        return value

    def as_percent(self) -> dict[str, float | None]:
        """Every figure x100, keyed by :data:`METRIC_NAMES`, as RSICC papers print them (CIDEr-D 1.3661 -> 136.61)."""
        out: dict[str, float | None] = {}
        for name in METRIC_NAMES:
            v = self.score(name)
            out[name] = None if v is None else 100.0 * v
        return out

    def ranked(self, metric: str = "CIDEr-D", k: int = 5, *, worst: bool = True) -> list[ImageCaptionScores]:
        """The ``k`` worst (or best) images by ``metric`` (ties broken by id), for example tables in reports."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        name = _field(metric)
        rows = [r for r in self.per_image if getattr(r, name) is not None]
        rows.sort(key=lambda r: (getattr(r, name) if worst else -getattr(r, name), r.image_id))
        return rows[:k]

    def to_dict(self, *, per_image: bool = False) -> dict[str, Any]:
        """Plain JSON-able dict of the figures (stored scales, field names), ``s_m``, counts and notes.

        ``percent`` holds :meth:`as_percent`; ``per_image=True`` adds the per-image rows.
        """
        out: dict[str, Any] = {f: getattr(self, f) for f in _FIELDS.values()}
        out.update(
            n_images=self.n_images,
            tokenizer=self.tokenizer,
            notes=list(self.notes),
            percent=self.as_percent(),
            scale="fractions; cider_d on pycocoevalcap's 0-10 scale; 'percent' = x100 as printed in papers",
        )
        if per_image:
            out["per_image"] = [r.to_dict() for r in self.per_image]
        return out


@dataclass(frozen=True)
class NoChangeDetection:
    """How well the candidates say "no change" exactly for the unchanged pairs (positive class: unchanged).

    Attributes:
        accuracy: fraction of pairs where "the candidate is a no-change sentence" equals "the pair is unchanged".
        precision, recall, f1: for the unchanged class; ``None`` when undefined (no predicted / actual positives).
        n_pairs, n_unchanged, n_predicted_unchanged, n_correct_unchanged: the counts behind them.
    """

    accuracy: float
    precision: float | None
    recall: float | None
    f1: float | None
    n_pairs: int
    n_unchanged: int
    n_predicted_unchanged: int
    n_correct_unchanged: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ChangeCaptionScores:
    """Change-captioning metrics (LEVIR-CC protocol): all pairs, the changed and unchanged subsets, no-change hits.

    Each subset is scored as a corpus of its own (its own BLEU brevity penalty and CIDEr-D idf), the way the
    RSICCformer-style papers report their changed / unchanged tables.

    Attributes:
        overall: metrics over every pair.
        changed: metrics over the changed pairs, ``None`` when there are none.
        unchanged: metrics over the unchanged pairs, ``None`` when there are none.
        no_change: :class:`NoChangeDetection` of the candidates.
    """

    overall: CaptionScores
    changed: CaptionScores | None
    unchanged: CaptionScores | None
    no_change: NoChangeDetection

    def as_percent(self) -> dict[str, dict[str, float | None] | None]:
        """``{"all" | "changed" | "unchanged": CaptionScores.as_percent()}``."""
        return {
            "all": self.overall.as_percent(),
            "changed": self.changed.as_percent() if self.changed else None,
            "unchanged": self.unchanged.as_percent() if self.unchanged else None,
        }

    def to_dict(self, *, per_image: bool = False) -> dict[str, Any]:
        """Plain JSON-able dict with the three :meth:`CaptionScores.to_dict` and the no-change detection."""
        return {
            "all": self.overall.to_dict(per_image=per_image),
            "changed": self.changed.to_dict(per_image=per_image) if self.changed else None,
            "unchanged": self.unchanged.to_dict(per_image=per_image) if self.unchanged else None,
            "no_change_detection": self.no_change.to_dict(),
        }
