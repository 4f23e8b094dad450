"""Zero-shot scene classification: prompt-ensemble class embeddings, a classifier object and scene label maps."""

from geovl._lazy import lazy_getattr

_EXPORTS = {
    "RS_TEMPLATES": "geovl.tasks.zeroshot.prompts",
    "build_class_embeddings": "geovl.tasks.zeroshot.prompts",
    "zero_shot_scores": "geovl.tasks.zeroshot.prompts",
    "BACKGROUND_PROMPTS": "geovl.tasks.zeroshot.classifier",
    "Prediction": "geovl.tasks.zeroshot.classifier",
    "ZeroShotClassifier": "geovl.tasks.zeroshot.classifier",
    "check_threshold": "geovl.tasks.zeroshot.classifier",
    "resolve_classes": "geovl.tasks.zeroshot.classifier",
    "LabelMap": "geovl.tasks.zeroshot.labelmap",
    "classify_scene": "geovl.tasks.zeroshot.labelmap",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
