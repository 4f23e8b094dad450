"""Training checkpoints: written to a temporary folder and renamed into place, so a crash never leaves a
half-written checkpoint, and the ``latest`` pointer only ever names a complete one.

Layout of ``<output>/checkpoints/step-0000123/``:

* ``model.safetensors``: every parameter and buffer of the model being trained (float32);
* ``training_state.pt``: the ``state_dict`` of each stateful training object (optimizer, scheduler, grad scaler...)
  and every rank's RNG states, read with ``torch.load(weights_only=True)``;
* ``state.json``: step, samples seen, the config hash, and when it was written.

Temporary names follow :mod:`geovl.io.fs`, so what a killed save leaves behind is removed by the next one.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geovl.io.fs import atomic_folder, atomic_write_text, remove_stale_temps

__all__ = ["INFO_FILE", "LATEST", "MODEL_FILE", "STATE_FILE", "TrainingState", "keep_best", "latest_checkpoint",
           "load_checkpoint", "save_checkpoint"]

LATEST = "latest"
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
INFO_FILE = "state.json"


@dataclass
class TrainingState:
    """Where a run is: optimizer steps done and samples consumed."""

    step: int = 0
    samples: int = 0
    config_hash: str = ""


def save_checkpoint(
    folder: Path,
    model: nn.Module,
    state: TrainingState,
    extra: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step-<step>`` under ``folder`` atomically, point ``latest`` at it, keep the newest
    ``keep`` checkpoints."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{state.step:07d}"
    dest = folder / name
    with atomic_folder(dest) as tmp:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / MODEL_FILE))
        torch.save(extra, tmp / STATE_FILE)
        info = {"step": state.step, "samples": state.samples, "config_hash": state.config_hash,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    atomic_write_text(folder / LATEST, name + "\n")
    done = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    remove_stale_temps(folder)  # what a killed save left behind
    return dest


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint ``latest`` names, or ``None`` when the run has none."""
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    if not (path / INFO_FILE).is_file():
        raise ValueError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def load_checkpoint(path: Path, model: nn.Module) -> tuple[TrainingState, dict[str, Any]]:
    """Load model weights in place; return the training state and the optimizer / scheduler / RNG bundle."""
    from safetensors.torch import load_file

    tensors = load_file(str(path / MODEL_FILE))
    result = model.load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("attn_mask")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: checkpoint does not fit the model ({len(missing)} missing, "
                         f"{len(result.unexpected_keys)} unexpected keys); was the config changed?")
    info = json.loads((path / INFO_FILE).read_text())
    extra = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    return TrainingState(int(info["step"]), int(info["samples"]), str(info.get("config_hash", ""))), extra


def keep_best(folder: Path, config_file: str, figures: dict[str, float], key: str, step: int,
              export: Any) -> bool:
    """Write ``folder`` (an exported model, by ``export(selection)``) when ``figures[key]`` beats the value recorded
    in ``folder / config_file``'s ``metadata.selection`` (higher is better); whether it did.

    Raises:
        ValueError: ``key`` is not one of ``figures``.
    """
    if key not in figures:
        raise ValueError(f"eval.select_by {key!r} is not one of the evaluation figures: {', '.join(figures)}")
    best = -float("inf")
    if (folder / config_file).is_file():
        best = json.loads((folder / config_file).read_text())["metadata"]["selection"]["value"]
    if figures[key] <= best:
        return False
    export({"figure": key, "value": figures[key], "step": step})
    return True
