"""Training: contrastive fine-tuning (``geovl train clip``); captioners and the diffusion model come later.

Every trainer is a short loop over :class:`geovl.training.runtime.Runtime`, which owns the run folder, resume,
checkpoints, RNG state, logging, the evaluation schedule and DDP set-up. This package imports the library; the
library never imports it.
"""

from typing import Any

from geovl._lazy import lazy_getattr

_EXPORTS = {
    "TrainConfig": "geovl.training.config",
    "load_config": "geovl.training.config",
    "config_from_dict": "geovl.training.config",
    "RunSpec": "geovl.training.runtime",
    "Runtime": "geovl.training.runtime",
    "TrainResult": "geovl.training.runtime",
    "train_clip": "geovl.training.clip",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return lazy_getattr(__name__, _EXPORTS)(name)
