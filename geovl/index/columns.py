"""Python values for a few rows of pyarrow columns, fast: what a search result's metadata needs.

pyarrow's ``Table.take(rows).to_pylist()`` converts row by row (~80 us for ten rows of eight columns at 1M rows).
:class:`RecordReader` keeps the fixed-width part of every common column (numbers, UTC timestamps as microseconds,
codes of low-cardinality strings, start and end offsets of other strings) in one row-major numpy record array, so
the rows of a search result are one gather (a cache line or two per row instead of one per column and row, which
matters right after a faiss search has evicted everything) and one ``tolist``; strings are then sliced from the
column's own UTF-8 buffer. Other types (nulls, other time zones, binary, lists) go through pyarrow, so every column
gives the same values as ``to_pylist``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from geovl._optional import require

__all__ = ["RecordReader"]

Convert = Callable[[Sequence[Any]], Sequence[Any]]
"""A packed field's values (numpy's ``tolist``) -> the column's Python values."""

_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PROBE_ROWS = 1024
_MAX_DICTIONARY_PROBE = 64  # distinct values among the probed rows above which a string column is read as strings
_UTC = ("UTC", "utc", "+00:00", "Etc/UTC")


class RecordReader:
    """Row positions -> one dict per row of a table's columns (except ``drop``), in the table's column order, with
    the same values as pyarrow's ``to_pylist``."""

    def __init__(self, table: Any, drop: Sequence[str] = ()) -> None:
        pa = self._pa = require("pyarrow", extra=None)
        self.names = [name for name in table.column_names if name not in drop]
        fields: list[tuple[str, np.ndarray]] = []  # packed record fields, in order
        # per column: ("packed", index of its first field, converter, number of fields) or ("arrow", array)
        self._plan: list[tuple[Any, ...]] = []
        for name in self.names:
            column = table.column(name)
            array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
            kind = array.type
            first = len(fields)
            if array.null_count:
                self._plan.append(("arrow", array))
            elif pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind):
                fields.append((name, array.to_numpy(zero_copy_only=False)))
                self._plan.append(("packed", first, None, 1))
            elif pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz in _UTC:
                fields.append((name, array.cast(pa.int64()).to_numpy()))
                self._plan.append(("packed", first, _utc_values, 1))
            elif _is_string(pa, kind) and (coded := _dictionary_codes(array)) is not None:
                codes, values = coded
                fields.append((name, codes))
                self._plan.append(("packed", first, _lookup(values), 1))
            elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
                offsets = np.frombuffer(array.buffers()[1], np.int64 if pa.types.is_large_string(kind) else np.int32)
                offsets = offsets[array.offset:array.offset + len(array) + 1]
                data = array.buffers()[2]
                blob = memoryview(data) if data is not None else memoryview(b"")
                fields += [(name + ":start", offsets[:-1]), (name + ":end", offsets[1:])]
                self._plan.append(("packed", first, _utf8(blob), 2))
            else:
                self._plan.append(("arrow", array))
        self._packed: np.ndarray | None = None
        if fields:
            dtype = np.dtype([(f"f{i}", data.dtype) for i, (_, data) in enumerate(fields)])
            self._packed = np.empty(len(fields[0][1]), dtype)
            for i, (_, data) in enumerate(fields):
                self._packed[f"f{i}"] = data

    @property
    def nbytes(self) -> int:
        """Memory held by the packed records (a row-major copy of the fixed-width columns)."""
        return 0 if self._packed is None else int(self._packed.nbytes)

    def __call__(self, rows: np.ndarray) -> list[dict[str, Any]]:
        if len(rows) == 0:
            return []
        pa = self._pa
        fields: list[Any] = list(zip(*self._packed[rows].tolist(), strict=True)) if self._packed is not None else []
        columns: list[Sequence[Any]] = []
        for step in self._plan:
            if step[0] == "arrow":
                columns.append(step[1].take(pa.array(rows)).to_pylist())
                continue
            _, first, convert, width = step
            if width == 2:
                columns.append(convert(fields[first], fields[first + 1]))
            else:
                columns.append(fields[first] if convert is None else convert(fields[first]))
        names = self.names
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _is_string(pa: Any, kind: Any) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or (
        pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type)))


def _dictionary_codes(array: Any) -> tuple[np.ndarray, list[Any]] | None:
    """(codes, values) of a string column with few distinct values (a sensor, a label): one list look-up per value
    instead of a UTF-8 decode; ``None`` for columns of mostly distinct strings."""
    pa = require("pyarrow", extra=None)
    pc = require("pyarrow.compute", extra=None)
    if not pa.types.is_dictionary(array.type):
        n = len(array)
        probe = array.take(pa.array(np.linspace(0, n - 1, min(n, _PROBE_ROWS)).astype(np.int64)))
        if pc.count_distinct(probe).as_py() > _MAX_DICTIONARY_PROBE:
            return None
        array = pc.dictionary_encode(array)
    values = array.dictionary.to_pylist()
    if len(values) > max(_MAX_DICTIONARY_PROBE, len(array) // 64):
        return None
    return array.indices.to_numpy().astype(np.min_scalar_type(len(values))), values


def _utc_values(micros: Sequence[int]) -> list[datetime]:
    return [_EPOCH_UTC + timedelta(microseconds=x) for x in micros]


def _lookup(values: list[Any]) -> Convert:
    return lambda codes: [values[c] for c in codes]


def _utf8(blob: memoryview) -> Callable[[Sequence[int], Sequence[int]], list[str]]:
    return lambda starts, ends: [str(blob[a:b], "utf-8") for a, b in zip(starts, ends, strict=True)]
