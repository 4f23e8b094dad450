"""Zero-shot scene classification as a pipeline object: class prompts embedded once, images scored many times.

:class:`ZeroShotClassifier` holds prompt-ensemble class embeddings (:func:`geovl.tasks.zeroshot.prompts.
build_class_embeddings`). ``classifier(images)`` reads images through the one embedding path and predicts;
``classifier.predict(embeddings)`` scores embeddings made elsewhere (the HTTP micro-batcher, an index, a label map),
so the CLI, the HTTP server, the demo and the label-map writer all score images the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from geovl.data.labelsets import LABEL_SETS, missing_labels, prompt_names, resolve_label_set
from geovl.io.images import ImageSource
from geovl.models.backbone import Backbone
from geovl.tasks.embedding import EmbeddingPipeline
from geovl.tasks.zeroshot.prompts import RS_TEMPLATES, build_class_embeddings, zero_shot_scores

__all__ = ["BACKGROUND_PROMPTS", "Classification", "Prediction", "ZeroShotClassifier", "check_threshold", "check_top_k",
           "resolve_classes"]

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
        backbone: the model (see :func:`geovl.models.load_backbone`).
        labels: class names to report; see :func:`resolve_classes` for how they combine with ``label_set``.
        label_set: a name from :data:`geovl.data.labelsets.LABEL_SETS` (``"eurosat"``, ``"aid"``, ...).
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
        self.class_embeddings = build_class_embeddings(backbone, self.prompts, self.templates)
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

    def predict(self, embeddings: np.ndarray, *, top_k: int = 5, threshold: float | None = None) -> list[Prediction]:
        """One :class:`Prediction` per row of (N, D) image embeddings.

        Without ``threshold``: the ``top_k`` classes by softmax probability (:meth:`probabilities`). With it
        (multi-label): every class whose independent :meth:`scores` value is >= ``threshold``, best first, at most
        ``top_k`` (possibly none). Ties keep class order, so results are deterministic.

        Raises:
            ValueError: ``top_k`` not a positive integer; ``threshold`` outside the open interval (0, 1).
        """
        check_top_k(top_k)
        if threshold is not None:
            check_threshold(threshold)
        values = self.probabilities(embeddings) if threshold is None else self.scores(embeddings)
        k = min(top_k, len(self.classes))
        order = np.argsort(-values, axis=1, kind="stable")[:, :k]
        cut = -np.inf if threshold is None else threshold
        return [
            Prediction(labels=[self.classes[j] for j in row if v[j] >= cut],
                       scores=[float(v[j]) for j in row if v[j] >= cut])
            for v, row in zip(values, order, strict=True)
        ]

    def __call__(
        self,
        images: Sequence[ImageSource],
        *,
        top_k: int = 5,
        threshold: float | None = None,
        batch_size: int = 64,
        workers: int | None = None,
        progress: bool = False,
    ) -> Classification:
        """Classify images (paths, bytes, PIL images or HxWx3 uint8 arrays) through the one embedding path
        (:class:`~geovl.tasks.embedding.EmbeddingPipeline`): unreadable images are recorded in
        ``failures`` and skipped, never fatal. See :meth:`predict` for ``top_k`` and ``threshold``.

        Raises:
            ValueError: bad ``top_k`` / ``threshold`` (checked before any image is read); no images.
        """
        check_top_k(top_k)
        if threshold is not None:
            check_threshold(threshold)
        result = EmbeddingPipeline(self.backbone, batch_size=batch_size, workers=workers)(
            images, progress=progress, desc="classify")
        predictions = self.predict(result.embeddings, top_k=top_k, threshold=threshold) if result.kept else []
        return Classification(classes=list(self.classes), predictions=predictions, kept=result.kept,
                              failures=result.failures, threshold=threshold)


@dataclass
class Classification:
    """What :meth:`ZeroShotClassifier.__call__` made of a list of images.

    Attributes:
        classes: the class names, in column order.
        predictions: one per readable image, in input order; ``kept[i]`` is the input position of ``predictions[i]``.
        kept: input positions that were classified.
        failures: ``(input position, reason)`` of every image that could not be read.
        threshold: the multi-label threshold, or None for top-k probabilities.
    """

    classes: list[str]
    predictions: list[Prediction]
    kept: list[int]
    failures: list[tuple[int, str]] = field(default_factory=list)
    threshold: float | None = None

    @property
    def multi_label(self) -> bool:
        return self.threshold is not None


def check_top_k(top_k: int) -> None:
    """``ValueError`` unless ``top_k`` is a positive integer."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")


def check_threshold(threshold: float) -> None:
    """``ValueError`` unless ``threshold`` is a number in the open interval (0, 1) (NaN and booleans are not)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be a number in the open interval (0, 1), got {threshold!r}")
