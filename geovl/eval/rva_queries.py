"""Query files of the recall-vs-area evaluation (:mod:`geovl.eval.rva`): queries with known target footprints.

A file is JSONL (one object per line; blank lines skipped) or CSV (``.csv``, with a header row) with the fields
:data:`QUERY_FIELDS`:

* exactly one of ``text`` (a text query) or ``image`` (an image file, relative to the query file's folder);
* a target: a box ``lon_min, lat_min, lon_max, lat_max`` (degrees, positive area; ``lon_min > lon_max`` crosses
  the antimeridian, as in index metadata) or a point ``lon, lat``;
* optionally ``id`` (a string or an integer, unique; default: the line number).

Empty CSV cells and JSON ``null`` count as absent. Any other field is refused, so that a misspelt one is not
silently ignored. Every error is a ``ValueError`` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geovl.index.filters import BOUNDS_COLUMNS
from geovl.io.fs import iter_jsonl_numbered

__all__ = ["QUERY_FIELDS", "RvaQuery", "read_rva_queries"]

QUERY_FIELDS = ("id", "text", "image", *BOUNDS_COLUMNS, "lon", "lat")
"""The fields of a query file (JSONL object keys or CSV header)."""

_LIMITS = {"lon": 180.0, "lat": 90.0, "lon_min": 180.0, "lon_max": 180.0, "lat_min": 90.0, "lat_max": 90.0}



@dataclass(frozen=True)
class RvaQuery:
    """One query of a query file: a text or an image, and its target footprint.

    Attributes:
        id: the query's id (the file's ``id``, else its line number).
        target: ``(lon_min, lat_min, lon_max, lat_max)`` or ``(lon, lat)`` in degrees.
        text: the text query, or None.
        image: the image query's path (resolved against the query file's folder), or None.
    """

    id: str
    target: tuple[float, ...]
    text: str | None = None
    image: Path | None = None

    @property
    def query(self) -> str | Path:
        """What :meth:`Searcher.search` takes: the text, or the image's path."""
        if self.image is not None:
            return self.image
        return self.text or ""


def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(line number, record) of a JSONL or CSV file; blank JSONL lines are skipped."""
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                if row.get(None):  # type: ignore[call-overload,unused-ignore]  # DictReader's key for surplus cells
                    raise ValueError(f"{path}, line {reader.line_num}: more cells than the header has columns")
                yield reader.line_num, {k: v for k, v in row.items() if v not in (None, "")}
        return
    for number, record in iter_jsonl_numbered(path):
        yield number, {k: v for k, v in record.items() if v is not None}


def _number(record: Mapping[str, Any], key: str, where: str) -> float:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where}, field '{key}': expected a number, got {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise ValueError(f"{where}, field '{key}': expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{where}, field '{key}': expected a finite number, got {value!r}")
    return out


def _target(record: Mapping[str, Any], where: str) -> tuple[float, ...]:
    box = [k for k in BOUNDS_COLUMNS if k in record]
    point = [k for k in ("lon", "lat") if k in record]
    if box and point:
        raise ValueError(f"{where}: give a box ({', '.join(BOUNDS_COLUMNS)}) or a point (lon, lat), not both")
    fields = BOUNDS_COLUMNS if box else ("lon", "lat")
    missing = [k for k in fields if k not in record]
    if missing and (box or point):
        raise ValueError(f"{where}, field '{missing[0]}': missing (a target needs {', '.join(fields)})")
    if missing:
        raise ValueError(f"{where}: no target; give {', '.join(BOUNDS_COLUMNS)} (a box) or lon, lat (a point)")
    values = tuple(_number(record, k, where) for k in fields)
    for key, value in zip(fields, values, strict=True):
        if abs(value) > _LIMITS[key]:
            raise ValueError(f"{where}, field '{key}': {value} is outside [-{_LIMITS[key]:g}, {_LIMITS[key]:g}]")
    if box and values[1] >= values[3]:
        raise ValueError(f"{where}, field 'lat_max': {values[3]} must be north of lat_min ({values[1]})")
    if box and values[0] == values[2]:
        raise ValueError(f"{where}, field 'lon_max': equals lon_min, a box without area; give lon, lat for a point "
                         "(lon_min > lon_max crosses the antimeridian)")
    return values


def _query(record: Mapping[str, Any], number: int, where: str, folder: Path) -> RvaQuery:
    unknown = [k for k in record if k not in QUERY_FIELDS]
    if unknown:
        raise ValueError(f"{where}, field '{unknown[0]}': unknown field (fields: {', '.join(QUERY_FIELDS)})")
    given = [k for k in ("text", "image") if k in record]
    if len(given) != 1:
        raise ValueError(f"{where}: " + ("give 'text' or 'image', not both" if given else
                                         "no query; give a 'text' or an 'image' field"))
    value = record[given[0]]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}, field '{given[0]}': expected a non-empty string, got {value!r}")
    image = None
    if given[0] == "image":
        image = Path(value) if Path(value).is_absolute() else folder / value
        if not image.is_file():
            raise ValueError(f"{where}, field 'image': {image} is not a file")
    qid = record.get("id", number)
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or str(qid) == "":
        raise ValueError(f"{where}, field 'id': expected a string or an integer, got {qid!r}")
    return RvaQuery(id=str(qid), target=_target(record, where), text=value if image is None else None, image=image)


def read_rva_queries(path: str | os.PathLike[str]) -> list[RvaQuery]:
    """Read a query file (JSONL, or CSV when the name ends in ``.csv``; the format is in the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed record, naming the line and the field; or no queries.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such query file")
    queries: list[RvaQuery] = []
    seen: dict[str, int] = {}
    for number, record in _rows(p):
        where = f"{p}, line {number}"
        query = _query(record, number, where, p.parent)
        if query.id in seen:
            raise ValueError(f"{where}, field 'id': duplicate id {query.id!r} (first on line {seen[query.id]})")
        seen[query.id] = number
        queries.append(query)
    if not queries:
        raise ValueError(f"{p}: no queries (JSONL objects or CSV rows with a text or image and a target)")
    return queries


