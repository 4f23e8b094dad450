"""Zero-shot scene classification as a reusable object: class prompts embedded once, images scored many times.

:class:`ZeroShotClassifier` wraps :func:`geovl.vlm.zeroshot.build_classifier` (prompt-ensemble class embeddings)
and :func:`geovl.vlm.zeroshot.zero_shot_scores` (softmax over the model's scaled logits), so the CLI, the HTTP
server and the label-map writer all score images the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geovl.io.images import ImageSource
from geovl.vlm.backbone import Backbone
from geovl.vlm.labelsets import LABEL_SETS, missing_labels, prompt_names, resolve_label_set
from geovl.vlm.zeroshot import RS_TEMPLATES, build_classifier, zero_shot_scores

__all__ = ["BACKGROUND_PROMPTS", "Prediction", "ZeroShotClassifier", "check_threshold", "resolve_classes"]

#: Generic "no particular class" prompts. For models without a logit bias (CLIP), :meth:`ZeroShotClassifier.scores`
#: rates each class against these alone, so a class's multi-label score does not depend on the other classes.
BACKGROUND_PROMPTS: tuple[str, ...] = (
    "a satellite image.",
    "an aerial photograph.",
    "a remote sensing image.",
    "an overhead view of the ground.",
)


@dataclass
class Prediction:
    """The top-k classes of one image.

    Attributes:
        labels: top-k class names, best first (multi-label: every class at or above the threshold, best first).
        scores: their probabilities (softmax of the model's logits over all classes), same order; for
            :meth:`ZeroShotClassifier.multi_label`, the per-class scores of :meth:`ZeroShotClassifier.scores`.
    """

    labels: list[str]
    scores: list[float]

    def to_dict(self) -> dict[str, list[str] | list[float]]:
        return {"labels": list(self.labels), "scores": list(self.scores)}


def resolve_classes(labels: Sequence[str] | None, label_set: str | None) -> tuple[list[str], list[str]]:
    """``(class names, prompt phrases)`` from user labels and / or a label set name.

    * ``labels`` only: the labels are the class names, prompted as written except that ``_``, ``-`` and camel case
      become spaces (:func:`geovl.data.prettify_class_name`); no benchmark set is guessed, so free text stays the
      user's own.
    * ``label_set`` only: every class of the set, with its prompt phrases.
    * both: the given labels (a subset of the set, matched ignoring case, spaces, ``_`` and ``-``), reported as
      given and prompted with the set's phrases.

    Raises:
        ValueError: neither given, an unknown set, empty or duplicate names, or labels missing from the set.
    """
    if isinstance(labels, str):
        raise ValueError("labels must be a list of class names, not a single string (split it on commas first)")
    if labels is None and label_set is None:
        raise ValueError("no classes: give labels (e.g. ['forest', 'river']) or a label set "
                         f"(one of {', '.join(sorted(LABEL_SETS))})")
    table = resolve_label_set(label_set) if label_set is not None else None
    if labels is None:
        table = table or {}
        return list(table), list(table.values())
    names = [str(lab).strip() for lab in labels]
    if not names:
        raise ValueError("labels is empty; give at least one class name")
    if any(not n for n in names):
        raise ValueError(f"empty class name in labels {list(labels)!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate class names: {dupes}")
    if table is None:
        from geovl.data import prettify_class_name

        return names, [prettify_class_name(n) for n in names]
    missing = missing_labels(names, table)
    if missing:
        raise ValueError(f"label set '{label_set}' has no class {missing[:5]}; its classes are: {', '.join(table)}")
    return names, prompt_names(names, table)


class ZeroShotClassifier:
    """Classify images into a fixed set of classes with a backbone's image-text similarity.

    Args:
        backbone: the model (see :func:`geovl.vlm.load_backbone`).
        labels: class names to report; see :func:`resolve_classes` for how they combine with ``label_set``.
        label_set: a name from :data:`geovl.vlm.labelsets.LABEL_SETS` (``"eurosat"``, ``"aid"``, ...).
        templates: prompt templates, each with one ``{}``.

    Attributes:
        classes: the C class names reported, in column order of :meth:`probabilities`.
        prompts: the C phrases put into the templates.
        class_embeddings: (C, D) float32 L2-normalised prompt-ensemble embeddings.

    Raises:
        ValueError: see :func:`resolve_classes`; bad templates.
    """

    def __init__(
        self,
        backbone: Backbone,
        labels: Sequence[str] | None = None,
        *,
        label_set: str | None = None,
        templates: Sequence[str] = RS_TEMPLATES,
    ) -> None:
        self.backbone = backbone
        self.label_set = label_set
        self.templates = tuple(templates)
        self.classes, self.prompts = resolve_classes(labels, label_set)
        self.class_embeddings = build_classifier(backbone, self.prompts, self.templates)
        self._background: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"ZeroShotClassifier(classes={len(self.classes)}, label_set={self.label_set!r}, model={self.backbone!r})"

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, C) float32 class probabilities for (N, D) image embeddings (L2-normalised, as the backbone gives)."""
        emb = self._check_embeddings(embeddings)
        if len(emb) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return zero_shot_scores(self.backbone, emb, self.class_embeddings)

    def _check_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None, :]
        if emb.ndim != 2 or emb.shape[1] != self.class_embeddings.shape[1]:
            raise ValueError(f"embeddings must be (N, {self.class_embeddings.shape[1]}), got shape {emb.shape}")
        return emb

    @property
    def has_logit_bias(self) -> bool:
        """Whether the model carries a learned logit bias (SigLIP-style sigmoid training)."""
        return self.backbone.towers.logit_scale_bias()[1] is not None

    def background_embeddings(self) -> np.ndarray:
        """(B, D) float32 L2-normalised embeddings of :data:`BACKGROUND_PROMPTS` (computed once)."""
        if self._background is None:
            bg = np.asarray(self.backbone.encode_texts(list(BACKGROUND_PROMPTS)), np.float32)
            self._background = bg / np.linalg.norm(bg, axis=1, keepdims=True)
        return self._background

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, C) float32 per-class scores in (0, 1), each independent of which other classes are present.

        The rule, with ``l_c = exp(logit_scale) * cos(image, class c)`` the model's scaled logit:

        * models with a logit bias ``b`` (SigLIP, trained with a per-pair sigmoid loss):
          ``score_c = sigmoid(l_c + b)``;
        * models without one (CLIP): a softmax of class ``c`` against the fixed generic prompts
          :data:`BACKGROUND_PROMPTS` only, ``score_c = exp(l_c) / (exp(l_c) + sum_b exp(l_b))`` where ``l_b`` are
          the scaled logits of the background prompts (embedded as written, without templates).

        Rows need not sum to 1; several classes (or none) can pass a threshold.
        """
        emb = self._check_embeddings(embeddings)
        n_classes = len(self.classes)
        if len(emb) == 0:
            return np.zeros((0, n_classes), np.float32)
        logits = np.asarray(self.backbone.logits(emb, self.class_embeddings), np.float64)
        if self.has_logit_bias:  # backbone.logits already added the bias
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        bg = np.asarray(self.backbone.logits(emb, self.background_embeddings()), np.float64)
        # log(exp(l_c) + sum_b exp(l_b)), computed stably
        top = np.maximum(logits, bg.max(axis=1, keepdims=True))  # (N, C)
        bg_sum = np.exp(bg[:, None, :] - top[:, :, None]).sum(axis=-1)  # (N, C)
        return (np.exp(logits - top) / (np.exp(logits - top) + bg_sum)).astype(np.float32)

    def multi_label_embeddings(self, embeddings: np.ndarray, *, threshold: float = 0.5) -> list[Prediction]:
        """Per row of (N, D) image embeddings: every class whose :meth:`scores` value is >= ``threshold``, best
        first (possibly none).

        Raises:
            ValueError: ``threshold`` outside the open interval (0, 1).
        """
        check_threshold(threshold)
        scores = self.scores(embeddings)
        order = np.argsort(-scores, axis=1, kind="stable")
        return [
            Prediction(labels=[self.classes[j] for j in row if s[j] >= threshold],
                       scores=[float(s[j]) for j in row if s[j] >= threshold])
            for s, row in zip(scores, order, strict=True)
        ]

    def multi_label(self, images: Sequence[ImageSource], *, threshold: float = 0.5,
                    batch_size: int = 64) -> list[Prediction]:
        """Multi-label classification: per image, every class scoring at least ``threshold`` (see :meth:`scores`
        for the per-class score), best first, in input order.

        Raises:
            ValueError: ``threshold`` outside (0, 1); no images.
        """
        check_threshold(threshold)
        return self.multi_label_embeddings(self.embed(images, batch_size=batch_size), threshold=threshold)

    def classify_embeddings(self, embeddings: np.ndarray, *, top_k: int = 5) -> list[Prediction]:
        """One :class:`Prediction` per row of (N, D) image embeddings, with at most ``top_k`` classes."""
        probs = self.probabilities(embeddings)
        return self.top_k(probs, top_k=top_k)

    def top_k(self, probabilities: np.ndarray, *, top_k: int = 5) -> list[Prediction]:
        """Predictions from (N, C) probabilities (as from :meth:`probabilities`)."""
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        k = min(top_k, len(self.classes))
        # Stable sort on -p keeps ties in class order, so results are deterministic.
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [
            Prediction(labels=[self.classes[j] for j in row], scores=[float(p[j]) for j in row])
            for p, row in zip(probabilities, order, strict=True)
        ]

    def embed(self, images: Sequence[ImageSource], *, batch_size: int = 64) -> np.ndarray:
        """(N, D) float32 image embeddings of paths, bytes, PIL images or uint8 arrays."""
        if isinstance(images, (str, bytes)):
            raise ValueError("pass a list of images, not a single path or bytes object")
        if len(images) == 0:
            raise ValueError("no images given")
        return self.backbone.encode_images(images, batch_size=batch_size)

    def classify(self, images: Sequence[ImageSource], *, top_k: int = 5, batch_size: int = 64) -> list[Prediction]:
        """One :class:`Prediction` per image (paths, bytes, PIL images or HxWx3 uint8 arrays), in input order."""
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        return self.classify_embeddings(self.embed(images, batch_size=batch_size), top_k=top_k)


def check_threshold(threshold: float) -> None:
    """``ValueError`` unless ``threshold`` is a number in the open interval (0, 1) (NaN and booleans are not)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be a number in the open interval (0, 1), got {threshold!r}")
