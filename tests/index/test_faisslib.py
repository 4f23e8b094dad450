"""faiss' bundled OpenBLAS is told the kernel family the CPU supports, unless the user chose one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from geovl._cpu import cpu_flags
from geovl.index.faisslib import openblas_core

_PROBE = ("import json, os; from geovl.index.faisslib import faiss_module; faiss_module(); "
          "print(json.dumps(os.environ.get('OPENBLAS_CORETYPE')))")


def _probe(env: dict[str, str]) -> str | None:
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_openblas_core_from_flags() -> None:
    avx2 = {"sse4_2", "avx", "avx2", "fma"}
    assert openblas_core(avx2) == "Haswell"
    assert openblas_core(avx2 | {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}) == "SkylakeX"
    assert openblas_core(avx2 | {"avx512f"}) == "Haswell"  # AVX-512 foundation alone is not SkylakeX
    assert openblas_core({"sse4_2", "avx"}) is None
    assert openblas_core([]) is None


def test_faiss_import_sets_the_core_for_this_cpu_and_keeps_the_users() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    assert _probe(env) == openblas_core(cpu_flags())
    assert _probe({**env, "OPENBLAS_CORETYPE": "Haswell"}) == "Haswell"
