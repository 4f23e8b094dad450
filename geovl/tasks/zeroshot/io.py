"""Prediction files written by ``geovl classify --out``.

Rules: ``.json`` gets the rows as a JSON list; any other suffix gets CSV with one line per (image, rank) and the
columns ``image, rank, label, score`` (ranks from 1, scores with 6 decimals). Files are written atomically
(:func:`geovl.io.fs.atomic_write_text`), so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geovl.io.fs import atomic_write_text
from geovl.io.jsonable import to_jsonable

__all__ = ["CSV_COLUMNS", "write_predictions"]

CSV_COLUMNS = ("image", "rank", "label", "score")


def write_predictions(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write predictions, one row per image: ``{"image": ..., "labels": [...], "scores": [...]}`` (the shape of
    ``{"image": path, **Prediction.to_dict()}``), as JSON or CSV by the suffix of ``path``.

    Raises:
        ValueError: a row whose labels and scores differ in length.
    """
    target = Path(path)
    for row in rows:
        if len(row["labels"]) != len(row["scores"]):
            raise ValueError(f"prediction for {row['image']} has {len(row['labels'])} labels but "
                             f"{len(row['scores'])} scores")
    if target.suffix.lower() == ".json":
        text = json.dumps(to_jsonable(list(rows)), indent=2)
    else:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            for rank, (label, score) in enumerate(zip(row["labels"], row["scores"], strict=True), start=1):
                writer.writerow([str(row["image"]), rank, label, f"{score:.6f}"])
        text = buffer.getvalue()
    return atomic_write_text(target, text)
