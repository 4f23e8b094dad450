"""The one import of ``faiss``, with its BLAS set up for this CPU.

The ``faiss-cpu`` wheels bundle an OpenBLAS (0.3.15 in faiss 1.15) that picks its kernels from the CPU model
number. On CPUs newer than its tables, and on virtual machines that report a generic model, it falls back to its
SSE3 "Prescott" kernels: on this project's 2-core Intel machine that made faiss' matrix products 4x slower than
numpy's (42 against 170 GFLOP/s), and IVF training and adding, which are such products, slower in proportion. Before
faiss is first imported, :func:`faiss_module` therefore names the kernel family the CPU's flags support
(``OPENBLAS_CORETYPE``: SkylakeX with AVX-512, Haswell with AVX2 and FMA), which the library reads when it loads.
A value the user has set is left alone, and nothing is changed once faiss is imported.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Iterable
from typing import Any

from geovl._cpu import cpu_flags
from geovl._optional import require

__all__ = ["faiss_module", "openblas_core"]

logger = logging.getLogger(__name__)

#: OpenBLAS kernel families by the CPU flags they need, best first.
_CORES: tuple[tuple[str, frozenset[str]], ...] = (
    ("SkylakeX", frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})),
    ("Haswell", frozenset({"avx2", "fma"})),
)


def openblas_core(flags: Iterable[str]) -> str | None:
    """The best OpenBLAS kernel family for x86-64 CPU ``flags`` (as in ``/proc/cpuinfo``), or None."""
    have = set(flags)
    return next((core for core, need in _CORES if need <= have), None)


def faiss_module() -> Any:
    """The ``faiss`` module (a core dependency), or an error saying the installation is incomplete."""
    if "faiss" not in sys.modules and "OPENBLAS_CORETYPE" not in os.environ:
        core = openblas_core(cpu_flags()) if platform.machine().lower() in ("x86_64", "amd64") else None
        if core is not None:
            os.environ["OPENBLAS_CORETYPE"] = core
            logger.debug("OPENBLAS_CORETYPE=%s for faiss' bundled OpenBLAS", core)
    return require("faiss", None, "building and searching faiss indexes")
