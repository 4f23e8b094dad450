"""geovl: remote-sensing vision-language toolkit.

The library (``geovl.models``, ``geovl.io``, ``geovl.data``, ``geovl.index``, ``geovl.eval``) imports without the
training, demo or server packages. Heavy optional dependencies are imported where they are used and name the
extra to install when missing (see :func:`geovl._optional.require`).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
