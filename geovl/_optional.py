"""Import optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional package is needed for this feature but is not installed."""


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``pip install 'geovl[extra]'``.

    Args:
        module: dotted module name to import (e.g. ``"rasterio"``).
        extra: the geovl extra that provides it (e.g. ``"geo"``).
        feature: what the caller wanted to do, for the message (e.g. ``"reading GeoTIFF files"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {feature}" if feature else ""
        raise MissingDependencyError(
            f"The optional package '{module.split('.')[0]}' is needed{what} but is not installed. "
            f"Install it with: pip install 'geovl[{extra}]'"
        ) from exc
