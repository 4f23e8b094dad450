"""Print (and write as ``summary.json``) the headline figure of every report ``evaluate.sh`` wrote under a folder.

Usage: python runs/bundled-small/summarise.py OUT [OUT ...]   (several folders print side by side)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from geovl.io.fs import atomic_write_json

#: report folder -> (figure key in the report's JSON, label)
FIGURES = {
    "ucm-test-retrieval": ("mean_recall", "UCM test retrieval, mean recall"),
    "rsicd-val-retrieval": ("mean_recall", "RSICD val retrieval, mean recall"),
    "eurosat-holdout-zeroshot": ("accuracy", "EuroSAT hold-out zero-shot, %"),
    "ucm-test-zeroshot": ("accuracy", "UCM test zero-shot (21 classes), %"),
    "rsicd-val-aid-zeroshot": ("accuracy", "RSICD val zero-shot by AID class, %"),
    "ucm-linear-probe": ("linear_accuracy", "UCM linear probe, %"),
}


def summarise(folder: Path) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, (key, _) in FIGURES.items():
        reports = sorted((folder / name).glob("*.json"))
        out[name] = json.loads(reports[0].read_text())["figures"].get(key) if reports else None
    return out


def main() -> None:
    folders = [Path(p) for p in sys.argv[1:]]
    if not folders:
        raise SystemExit(__doc__)
    tables = [summarise(f) for f in folders]
    for folder, table in zip(folders, tables, strict=True):
        atomic_write_json(folder / "summary.json", table)
    print(" | ".join(["figure", *(str(f) for f in folders)]))
    for name, (_, label) in FIGURES.items():
        cells = ["-" if t[name] is None else f"{t[name]:.2f}" for t in tables]
        print(" | ".join([label, *cells]))


if __name__ == "__main__":
    main()
