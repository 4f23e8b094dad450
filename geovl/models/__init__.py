"""The shared vision-language backbone: registry, checkpoint loading and the :class:`Backbone` object."""

from geovl.models.backbone import Backbone, ModelInfo
from geovl.models.factory import (
    CheckpointMismatchError,
    build_openclip_model,
    create_backbone,
    load_backbone,
    load_model,
    register_loader,
    save_backbone,
)
from geovl.models.features import ImageFeatures, TextFeatures
from geovl.models.registry import (
    CHECKPOINTS,
    DEFAULT_CAPTIONER,
    DEFAULT_CHANGE_CAPTIONER,
    DEFAULT_GENERATOR,
    DEFAULT_MODEL,
    MODEL_KINDS,
    CheckpointSpec,
    Preprocess,
    architecture_config,
    get_checkpoint,
    list_architectures,
    list_checkpoints,
)
from geovl.models.weights import CheckpointNotFoundError, ChecksumError, local_checkpoint

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_CAPTIONER",
    "DEFAULT_CHANGE_CAPTIONER",
    "DEFAULT_GENERATOR",
    "DEFAULT_MODEL",
    "MODEL_KINDS",
    "Backbone",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointSpec",
    "ChecksumError",
    "ImageFeatures",
    "ModelInfo",
    "Preprocess",
    "TextFeatures",
    "architecture_config",
    "build_openclip_model",
    "create_backbone",
    "get_checkpoint",
    "list_architectures",
    "list_checkpoints",
    "load_backbone",
    "load_model",
    "local_checkpoint",
    "register_loader",
    "save_backbone",
]
