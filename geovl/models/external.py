"""Weights a geovl checkpoint leaves out and takes from installed packages instead (``external_weights``).

``save_backbone(external={prefix: entry})`` omits every state-dict key under ``prefix`` from ``model.safetensors``
and records ``entry`` in ``geovl_config.json``; loading builds those towers pretrained from their packages and loads
the file over the rest. Rules:

* Two prefixes exist. :data:`EXTERNAL_TEXT_PREFIX` (``"text.transformer."``): a locked pretrained transformers text
  tower (``text_cfg.hf_model_name``); its entry's ``sha256`` is the packaged ``model.safetensors``' digest, checked
  by :func:`geovl.models.text_models.check_text_model` on load. :data:`EXTERNAL_IMAGE_PREFIX` (``"visual.trunk."``):
  a timm image trunk with packaged weights (:func:`geovl.models.packaged.packaged_image_tower`); its entry names the
  packaged ``source`` and its ``sha256``.
* An image trunk may only be external while it holds exactly the packaged weights (BatchNorm running statistics
  included); :func:`checked_external` compares it with the package before anything is written, so a trained trunk
  is never silently replaced by the ImageNet one on load.
* On load, :func:`verify_external_sources` refuses an entry whose source or sha256 differs from what is installed
  and known here; the packaged file itself is sha256-checked when it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from geovl.models.packaged import packaged_image_tower, trunk_difference
from geovl.models.text_models import check_text_model

__all__ = [
    "EXTERNAL_IMAGE_PREFIX",
    "EXTERNAL_TEXT_PREFIX",
    "checked_external",
    "packaged_trunk_external",
    "verify_external_sources",
]

EXTERNAL_TEXT_PREFIX = "text.transformer."
EXTERNAL_IMAGE_PREFIX = "visual.trunk."


def verify_external_sources(model_cfg: dict[str, Any], external: dict[str, Any], where: Path) -> None:
    """Refuse a checkpoint whose external towers are not the ones installed here (by sha256)."""
    hf_name = model_cfg.get("text_cfg", {}).get("hf_model_name")
    for prefix, raw in external.items():
        entry = raw if isinstance(raw, dict) else {}
        if prefix == EXTERNAL_TEXT_PREFIX:
            if hf_name:
                check_text_model(hf_name, entry.get("sha256"))
        elif prefix == EXTERNAL_IMAGE_PREFIX:
            packaged = packaged_image_tower(model_cfg)
            if packaged is None or entry.get("source", packaged.name) != packaged.name:
                raise ValueError(f"{where}: the external image weights {entry.get('source')!r} do not fit the "
                                 f"image tower {model_cfg.get('vision_cfg', {}).get('timm_model_name')!r}")
            if entry.get("sha256") and entry["sha256"] != packaged.sha256:
                raise ValueError(f"{where}: the image trunk was trained with '{packaged.name}' weights of sha256 "
                                 f"{entry['sha256'][:12]}..., not the packaged file geovl knows "
                                 f"({packaged.sha256[:12]}...)")
        else:
            raise ValueError(f"{where}: unknown external weights {prefix!r}; expected "
                             f"{EXTERNAL_TEXT_PREFIX!r} or {EXTERNAL_IMAGE_PREFIX!r}")


def packaged_trunk_external(model_cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``save_backbone(external=...)`` entry that leaves a locked packaged image trunk out of a checkpoint:
    ``{"visual.trunk.": {"source": <packaged name>, "locked": True, "sha256": <its sha256>}}``.

    Raises:
        ValueError: the config's image tower has no packaged weights.
    """
    packaged = packaged_image_tower(model_cfg)
    if packaged is None:
        raise ValueError("the image tower has no packaged weights (vision_cfg.timm_model_name: "
                         f"{model_cfg.get('vision_cfg', {}).get('timm_model_name')!r})")
    return {EXTERNAL_IMAGE_PREFIX: {"source": packaged.name, "locked": True, "sha256": packaged.sha256}}


def checked_external(model: nn.Module, model_cfg: dict[str, Any],
                     external: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``external`` validated for :func:`geovl.models.factory.save_backbone` (see the module docstring); an image
    entry gets its packaged ``source`` and ``sha256`` filled in.

    Raises:
        ValueError: an unknown prefix, a text entry without a transformers text tower, an image entry for a tower
            without packaged weights, naming another source / sha256, or whose trunk differs from the package.
    """
    out: dict[str, dict[str, Any]] = {}
    for prefix, entry in external.items():
        if prefix == EXTERNAL_TEXT_PREFIX:
            if not model_cfg.get("text_cfg", {}).get("hf_model_name"):
                raise ValueError("external text weights need a transformers text tower (text_cfg.hf_model_name)")
            out[prefix] = entry
            continue
        if prefix != EXTERNAL_IMAGE_PREFIX:
            raise ValueError(f"only the transformers text tower ({EXTERNAL_TEXT_PREFIX!r}) and a packaged timm image "
                             f"trunk ({EXTERNAL_IMAGE_PREFIX!r}) can be external, not {prefix!r}")
        expected = packaged_trunk_external(model_cfg)[prefix]
        for key in ("source", "sha256"):
            if entry.get(key, expected[key]) != expected[key]:
                raise ValueError(f"external image weights: {key} {entry[key]!r} is not the packaged "
                                 f"{expected[key]!r} of this image tower")
        visual: Any = getattr(model, "visual", None)
        why = trunk_difference(visual.trunk, expected["source"])
        if why is not None:
            raise ValueError(f"the image trunk is not the packaged '{expected['source']}' weights ({why}): it was "
                             "trained (or its BatchNorm statistics moved), so it must be saved, not left external")
        out[prefix] = {**entry, "source": expected["source"], "sha256": expected["sha256"]}
    return out
