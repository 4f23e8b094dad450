"""The HTTP API (``geovl serve``): a FastAPI app of routers over :class:`geovl.serving.resources.Resources`, and a
typed client. Names resolve lazily, so ``from geovl.api import GeovlClient`` does not import FastAPI."""

from typing import Any

from geovl._lazy import lazy_getattr

_EXPORTS = {
    "ServeConfig": "geovl.serving.config",
    "MicroBatcher": "geovl.serving.batching",
    "QueueFullError": "geovl.serving.batching",
    "Resources": "geovl.serving.resources",
    "create_app": "geovl.api.app",
    "serve": "geovl.api.app",
    "GeovlClient": "geovl.api.client",
    "GeovlAPIError": "geovl.api.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return lazy_getattr(__name__, _EXPORTS)(name)
