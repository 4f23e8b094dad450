"""Generic image-text tables: CSV / TSV, JSON Lines and Parquet, with configurable columns.

Each row is one sample. The image cell holds a path (relative to ``image_root`` or the table's folder),
encoded bytes, or a Hugging Face image struct ``{"bytes", "path"}`` (as in parquet exports of image datasets).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geovl._optional import require
from geovl.data.common import (
    FolderListing,
    MissingPolicy,
    PathLike,
    SampleList,
    SplitArg,
    check_policy,
    check_splits_present,
    clean_caption,
    report_missing,
    split_set,
)
from geovl.data.samples import ImageTextSample
from geovl.io.images import ImageSource

__all__ = ["TableColumns", "TableFormat", "TableReader", "read_table"]

TableFormat = Literal["csv", "tsv", "jsonl", "parquet"]

_SUFFIX_FORMAT: dict[str, TableFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_NUMBER = re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class TableColumns:
    """Which columns of a table mean what.

    Attributes:
        image: column with the image path / bytes.
        text: caption column(s); each non-empty cell (or each item of a list cell) becomes one caption.
        label: class-label column, or ``None``.
        split: split column, used when the table has it (``None`` to ignore).
        id: column with a unique sample id; default the image cell (a path) or the row number.
        meta: columns copied into ``meta``; ``None`` means every column not used above.
    """

    image: str = "image"
    text: Sequence[str] = ("text",)
    label: str | None = None
    split: str | None = "split"
    id: str | None = None
    meta: Sequence[str] | None = None
    _text: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = (self.text,) if isinstance(self.text, str) else tuple(self.text)
        object.__setattr__(self, "_text", text)

    @property
    def text_columns(self) -> tuple[str, ...]:
        return self._text

    def required(self) -> list[str]:
        """Columns that must exist in the table."""
        cols = [self.image, *self._text]
        cols += [c for c in (self.label, self.id) if c is not None]
        cols += list(self.meta or [])
        return cols


def _csv_number(value: Any) -> Any:
    """Plain decimal numbers in CSV text (no leading zeros, so ids like ``"00012"`` stay text) -> numbers."""
    if isinstance(value, str) and _NUMBER.match(value):
        return float(value) if any(c in value for c in ".eE") else int(value)
    return value


def read_table(path: Path, fmt: TableFormat | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Read a table into ``(column names, rows)``; empty CSV cells become ``None``, others stay strings."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a CSV, JSONL or parquet table)")
    fmt = fmt or _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path.name}: unknown table suffix {path.suffix!r}; expected one of {sorted(_SUFFIX_FORMAT)}")
    if fmt in ("csv", "tsv"):
        with path.open("r", encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",")
            columns = list(reader.fieldnames or [])
            rows = [{k: (v if v != "" else None) for k, v in row.items() if k is not None} for row in reader]
        return columns, rows
    if fmt == "jsonl":
        rows = []
        seen: dict[str, None] = {}
        with path.open("r", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path.name}: line {line_no} is not valid JSON ({exc})") from exc
                if not isinstance(row, dict):
                    raise ValueError(f"{path.name}: line {line_no} is not a JSON object")
                seen.update(dict.fromkeys(row))
                rows.append(row)
        return list(seen), rows
    pq = require("pyarrow.parquet", extra=None, feature="reading parquet tables")
    table = pq.read_table(path)
    columns = list(table.column_names)
    data = table.to_pydict()
    rows = [dict(zip(columns, values, strict=True)) for values in zip(*(data[c] for c in columns), strict=True)]
    return columns, rows


def _image_cell(value: Any, root: Path, where: str) -> tuple[ImageSource, str | None]:
    """``(image source, relative path or None)`` for one image cell."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"]), value.get("path")
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)) and value:
        return bytes(value), None
    if isinstance(value, str) and value.strip():
        rel = value.strip()
        return str(root / rel), rel
    raise ValueError(f"{where} has no image (expected a path string, bytes or a {{'bytes', 'path'}} struct)")


def _text_cell(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [clean_caption(str(v)) for v in items if v is not None and str(v).strip()]


def table_samples(
    name: str,
    columns: list[str],
    rows: list[dict[str, Any]],
    cols: TableColumns,
    root: Path,
    *,
    split: SplitArg,
    require_images: bool,
    on_missing: MissingPolicy,
    expected: str,
    parse_numbers: bool,
) -> tuple[list[ImageTextSample], list[str]]:
    """Turn table rows into samples (shared by :class:`TableReader` and the SkyScript reader).

    ``parse_numbers`` converts plain decimal numbers in ``meta`` cells (CSV text) to ``int`` / ``float``.
    """
    check_policy(on_missing)
    absent = [c for c in cols.required() if c not in columns]
    if absent:
        raise ValueError(
            f"{name}: missing column(s) {', '.join(absent)}; found {', '.join(columns) or 'none'} (expected {expected})"
        )
    split_col = cols.split if cols.split is not None and cols.split in columns else None
    wanted = split_set(split)
    if split_col is not None:
        check_splits_present(wanted, (None if r.get(split_col) is None else str(r[split_col]) for r in rows), name)
    elif wanted is not None and len(wanted) != 1:
        raise ValueError(f"{name}: the table has no split column, so split= must be one name to tag it with")
    tag = next(iter(wanted)) if wanted is not None and split_col is None else None
    used = {cols.image, *cols.text_columns, cols.label, cols.id, split_col}
    meta_cols = list(cols.meta) if cols.meta is not None else [c for c in columns if c not in used]

    listing = FolderListing()
    samples: list[ImageTextSample] = []
    missing: list[tuple[str, Path]] = []
    for i, row in enumerate(rows):
        row_split = (None if row.get(split_col) is None else str(row[split_col])) if split_col else tag
        if split_col and wanted is not None and row_split not in wanted:
            continue
        where = f"{name}: row {i + 1}"
        image, rel = _image_cell(row.get(cols.image), root, where)
        if cols.id is not None:
            if row.get(cols.id) is None:
                raise ValueError(f"{where} has an empty id column {cols.id!r}")
            image_id = str(row[cols.id])
        else:
            image_id = rel if rel is not None else str(i)
        if require_images and isinstance(image, str) and not listing.exists(Path(image)):
            missing.append((image_id, Path(image)))
            continue
        captions = [c for col in cols.text_columns for c in _text_cell(row.get(col))]
        label = row.get(cols.label) if cols.label is not None else None
        samples.append(
            ImageTextSample(
                image_id=image_id,
                image=image,
                captions=captions,
                label=None if label is None else str(label),
                split=row_split,
                meta={c: _csv_number(row.get(c)) if parse_numbers else row.get(c) for c in meta_cols},
            )
        )
    report_missing(name, missing, len(samples) + len(missing), on_missing, f"under {root}")
    return samples, [m[0] for m in missing]


class TableReader(SampleList[ImageTextSample]):
    """Image-text samples from a CSV / TSV / JSONL / parquet table.

    Args:
        path: the table; its format comes from the suffix unless ``format`` is given.
        columns: a :class:`TableColumns` naming the image, text, label, split, id and meta columns.
        image_root: folder relative image paths are resolved against; default the table's folder.
        split: with a split column, keep only this split (or splits); without one, tag every sample with it.
        format: ``"csv"``, ``"tsv"``, ``"jsonl"`` or ``"parquet"`` (parquet needs ``geovl[data]``).
        require_images, on_missing: as for :class:`geovl.data.KarpathyReader` (path cells only).

    CSV cells are text: empty cells become ``None`` and plain decimal numbers become ``int`` / ``float`` in
    ``meta`` (values with leading zeros, like ``"00012"``, stay strings).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        columns: TableColumns | None = None,
        image_root: PathLike | None = None,
        split: SplitArg = None,
        format: TableFormat | None = None,
        require_images: bool = True,
        on_missing: MissingPolicy = "error",
    ) -> None:
        table_path = Path(path)
        cols = columns or TableColumns()
        fmt = format or _SUFFIX_FORMAT.get(table_path.suffix.lower())
        names, rows = read_table(table_path, fmt)
        root = Path(image_root) if image_root is not None else table_path.parent
        samples, missing = table_samples(
            table_path.name,
            names,
            rows,
            cols,
            root,
            split=split,
            require_images=require_images,
            on_missing=on_missing,
            expected=f"image column {cols.image!r} and text column(s) {', '.join(cols.text_columns)}",
            parse_numbers=fmt in ("csv", "tsv"),
        )
        super().__init__(samples, str(table_path))
        self.columns = cols
        self.image_root = root
        self.missing = missing
