"""Serving resources shared by every front end (the HTTP API and the demo): the model, the micro-batcher, cached
class embeddings and the searcher, loaded once (:class:`~geovl.serving.resources.Resources`), with domain errors
(:mod:`geovl.serving.errors`)."""

from geovl._lazy import lazy_getattr

_EXPORTS = {
    "ServeConfig": "geovl.serving.config",
    "tokens_from_env": "geovl.serving.config",
    "MicroBatcher": "geovl.serving.batching",
    "QueueFullError": "geovl.serving.batching",
    "Resources": "geovl.serving.resources",
    "ImageInput": "geovl.serving.resources",
    "ServiceError": "geovl.serving.errors",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
