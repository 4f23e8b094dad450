"""The zero-shot classification HTTP API (``geovl serve``): FastAPI server, micro-batcher and typed client.

The library never imports this package; it needs the ``api`` extra (``pip install 'geovl[api]'``). Names resolve
lazily, so ``from geovl.api import ServeConfig`` does not import FastAPI.
"""

from typing import Any

from geovl._lazy import lazy_getattr

_EXPORTS = {
    "ServeConfig": "geovl.api.config",
    "MicroBatcher": "geovl.api.batching",
    "QueueFullError": "geovl.api.batching",
    "ClassificationService": "geovl.api.service",
    "create_app": "geovl.api.server",
    "serve": "geovl.api.server",
    "GeovlClient": "geovl.api.client",
    "GeovlAPIError": "geovl.api.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return lazy_getattr(__name__, _EXPORTS)(name)
