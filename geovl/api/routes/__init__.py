"""The API's routers, one module per endpoint group, each a few lines over :class:`~geovl.serving.resources.Resources`.

A new endpoint goes in its own module here with a ``router(ctx)`` factory, included by :func:`geovl.api.app.create_app`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geovl.api.metrics import ApiMetrics
from geovl.serving.resources import ImageFailure, Resources

__all__ = ["ApiContext", "failure_models"]


@dataclass
class ApiContext:
    """What every router needs: the shared resources, the metrics, and the auth dependency and its docs."""

    resources: Resources
    metrics: ApiMetrics
    protected: list[Any] = field(default_factory=list)
    auth_docs: dict[int | str, dict[str, Any]] = field(default_factory=dict)


def failure_models(failures: list[ImageFailure]) -> list[Any]:
    from geovl.api.schemas import ImageFailureModel

    return [ImageFailureModel(index=f.index, filename=f.name, error=f.error) for f in failures]
