"""Pick the device and the numeric precision for inference."""

from __future__ import annotations

import logging
from typing import Literal

import torch

from geovl._cpu import cpu_flags

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when present, else CPU; anything else is passed to ``torch.device`` and checked."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device '{device}'; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was requested but CUDA is not available on this machine")
    return dev


def cpu_has_bf16_matmul() -> bool:
    """True when the CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The weight dtype for ``precision`` on ``device``.

    ``"auto"`` picks bf16 on CUDA GPUs that support it (fp16 on older ones) and on CPUs with bf16 matrix units,
    where it is much faster than fp32 at the same embeddings to within 1e-4 cosine (docs/benchmarks.md); fp32
    elsewhere.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            logger.warning("fp16 on the CPU is slow and inaccurate; prefer bf16 or fp32")
        return _DTYPES[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16_matmul():
        return torch.bfloat16
    return torch.float32


def precision_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"``."""
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    return str(dtype)
