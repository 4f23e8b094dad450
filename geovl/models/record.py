"""A loaded model's identity for manifests and reports: name, architecture, checkpoint and its sha256."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from geovl.io.fs import sha256_file
from geovl.models.backbone import Backbone

__all__ = ["model_record", "weights_digest"]


def model_record(backbone: Backbone) -> dict[str, Any]:
    """The backbone's identity for manifests and reports, including the sha256 of its weights file(s)."""
    info = backbone.info
    if info.checkpoint and info.checkpoint_sha256 is None:
        info.checkpoint_sha256 = weights_digest(Path(info.checkpoint))
    record = asdict(info)
    record.update(precision=backbone.precision, device=str(backbone.device), dim=backbone.embed_dim)
    return record


def weights_digest(path: Path) -> str | None:
    """sha256 of a weights file; for a model folder, of its weight files' digests (sorted by name)."""
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
        if files:
            return hashlib.sha256("".join(f"{f.name}:{sha256_file(f)}\n" for f in files).encode()).hexdigest()
    return None
