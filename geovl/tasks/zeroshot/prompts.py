"""Zero-shot classification with the backbone: prompt-ensemble class embeddings and scoring.

The class embedding of a label is the normalised mean of its normalised prompt embeddings over a template
ensemble (as in CLIP and the remote-sensing CLIP papers), so every class gets the same number of prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geovl.models.backbone import Backbone

#: Prompt templates for overhead imagery. ``{}`` is replaced by the class name.
RS_TEMPLATES: tuple[str, ...] = (
    "a satellite image of {}.",
    "a satellite photo of {}.",
    "an aerial image of {}.",
    "an aerial photograph of {}.",
    "a remote sensing image of {}.",
    "an overhead view of {}.",
    "a top-down view of {}.",
    "a high resolution satellite image of {}.",
)


def _check_templates(templates: Sequence[str]) -> None:
    if not templates:
        raise ValueError("at least one prompt template is needed")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"each template needs exactly one '{{}}' placeholder; bad: {bad[:3]}")


def build_class_embeddings(
    backbone: Backbone, class_names: Sequence[str], templates: Sequence[str] = RS_TEMPLATES
) -> np.ndarray:
    """(C, D) float32 L2-normalised class embeddings from a prompt ensemble."""
    if isinstance(class_names, str) or len(class_names) == 0:
        raise ValueError("class_names must be a non-empty list of strings")
    dupes = sorted({c for c in class_names if list(class_names).count(c) > 1})
    if dupes:
        raise ValueError(f"duplicate class names: {dupes}")
    _check_templates(templates)
    prompts = [t.format(c) for c in class_names for t in templates]
    emb = backbone.encode_texts(prompts).reshape(len(class_names), len(templates), -1)
    mean = emb.mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def zero_shot_scores(backbone: Backbone, image_embeddings: np.ndarray, classifier: np.ndarray) -> np.ndarray:
    """(N, C) class probabilities: softmax over the model's scaled image-class similarities.

    SigLIP models (which carry a logit bias and were trained with sigmoids) still give a softmax over classes
    here, the usual choice for single-label classification.
    """
    logits = backbone.logits(image_embeddings, classifier)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
