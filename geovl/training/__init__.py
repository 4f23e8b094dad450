"""Training: contrastive fine-tuning (``geovl train clip``); captioners and the diffusion model come later.

This package imports the library; the library never imports it.
"""

from typing import Any

from geovl._lazy import lazy_getattr

_EXPORTS = {
    "TrainConfig": "geovl.training.config",
    "load_config": "geovl.training.config",
    "config_from_dict": "geovl.training.config",
    "TrainResult": "geovl.training.trainer",
    "train_clip": "geovl.training.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return lazy_getattr(__name__, _EXPORTS)(name)
