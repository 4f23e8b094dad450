"""Import optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional package is needed for this feature but is not installed."""


#: The extras of ``pyproject.toml``: only what is heavy or special. Everything else is a core dependency.
EXTRAS = ("train", "dist", "gpu", "fid", "dev")


def require(module: str, extra: str | None = None, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` saying how to install it.

    Args:
        module: dotted module name to import (e.g. ``"ray"``).
        extra: the geovl extra that provides it (one of :data:`EXTRAS`), or None for a core dependency (then the
            message says the installation is incomplete).
        feature: what the caller wanted to do, for the message (e.g. ``"--runner ray"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(_message(module, extra, feature)) from exc


def require_all(modules: Mapping[str, str | None], feature: str) -> None:
    """Check every ``{module: extra}`` a command needs before it starts working, naming all that are missing."""
    missing = [(m, e) for m, e in modules.items() if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        raise MissingDependencyError("; ".join(_message(m, e, feature) for m, e in missing))


def _message(module: str, extra: str | None, feature: str | None) -> str:
    package = module.split(".")[0]
    what = f" for {feature}" if feature else ""
    if extra is None:
        return (f"The package '{package}' is needed{what} but is not installed, although geovl depends on it: "
                "reinstall geovl (pip install geovl) or install it by hand")
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; extras are {', '.join(EXTRAS)}")
    return (f"The optional package '{package}' is needed{what} but is not installed. "
            f"Install it with: pip install 'geovl[{extra}]'")
