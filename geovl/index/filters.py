"""Metadata, footprint and time filters for index search, evaluated as vectorised masks over the metadata rows.

A :class:`Filters` says which rows may be returned; :class:`MetadataTable` holds an index's ``metadata.parquet``
(one row per vector, sorted by ``id``) and turns a :class:`Filters` into a boolean row mask.

Conventions:

* **bbox** ``(west, south, east, north)`` in lon/lat degrees. A row matches when its footprint bounds
  (``lon_min``, ``lat_min``, ``lon_max``, ``lat_max``) *intersect* the box, edges included. Rows without bounds
  never match a bbox filter. **Antimeridian:** a box with ``west > east`` crosses it and covers
  ``[west, 180] ∪ [-180, east]``; a footprint stored with ``lon_min > lon_max`` is read the same way
  (``lon_min`` is then its western edge). A footprint stored as ``lon_min=-180, lon_max=180`` spans every
  longitude.
* **start / end** bound the ``acquired`` column, both inclusive. Naive datetimes are UTC. A bare date
  (``date`` or ``"2020-12-31"``) as ``end`` includes that whole day; as ``start`` it means its midnight.
  Rows without an acquisition time never match a time filter.
* **where** maps a column to a value (equality), a list / set (membership), or a range: a ``(lo, hi)`` tuple
  (inclusive, ``None`` for an open end) or a :class:`Range` (which can also exclude its ends). Null values never
  match. Strings given for numeric, boolean or time columns are converted (so CLI strings work); anything that
  does not convert is a ``ValueError`` naming the column.
* **text match** on a string column: :class:`Like`, a case-insensitive SQL ``LIKE`` pattern (``%`` any run of
  characters, ``_`` one character, ``\\`` escapes them); ``"caption contains storage tank"`` (any text containing
  it) and ``"caption like %harbo_r%"`` in :meth:`Filters.parse`. Null values never match.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np

from geovl._optional import require
from geovl.index.columns import RecordReader
from geovl.index.metadata import rows_of_ids

BOUNDS_COLUMNS = ("lon_min", "lat_min", "lon_max", "lat_max")
TIME_COLUMN = "acquired"
ID_COLUMN = "id"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Range:
    """A range condition on one column; ``None`` leaves that end open.

    ``(lo, hi)`` tuples in :attr:`Filters.where` become inclusive ranges; use ``Range`` directly for strict ends
    (``Filters.parse`` does so for ``gsd<10``).
    """

    lo: Any = None
    hi: Any = None
    include_lo: bool = True
    include_hi: bool = True

    def __post_init__(self) -> None:
        if self.lo is None and self.hi is None:
            raise ValueError("a range needs at least one end (lo or hi)")


@dataclass(frozen=True)
class Like:
    """A case-insensitive SQL ``LIKE`` pattern on a string column: ``%`` matches any run of characters, ``_`` one
    character, and a backslash makes the next character literal. :meth:`contains` matches a substring."""

    pattern: str

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(f"a like pattern must be a non-empty string, got {self.pattern!r}")

    @classmethod
    def contains(cls, text: str) -> Like:
        """Rows whose value contains ``text`` (case-insensitive; ``%``, ``_`` and ``\\`` in it are literal)."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"contains needs a non-empty text, got {text!r}")
        return cls("%" + re.sub(r"([\\%_])", r"\\\1", text) + "%")


WhereCondition = Any
"""A value (equality), a list / set / frozenset / numpy array (membership), a ``(lo, hi)`` tuple, a :class:`Range`
or a :class:`Like`."""


@dataclass
class Filters:
    """Which rows a search may return. All given parts must hold (logical AND).

    Attributes:
        bbox: ``(west, south, east, north)`` in lon/lat degrees; footprints intersecting it match.
            ``west > east`` crosses the antimeridian.
        start: earliest ``acquired`` time (inclusive): ``datetime``, ``date`` or ISO string.
        end: latest ``acquired`` time (inclusive; a bare date includes its whole day).
        where: ``{column: condition}``, see :data:`WhereCondition` and the module docstring.
    """

    bbox: tuple[float, float, float, float] | None = None
    start: datetime | date | str | None = None
    end: datetime | date | str | None = None
    where: dict[str, WhereCondition] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bbox is not None:
            self.bbox = _check_bbox(self.bbox)
        lo = to_utc_micros(self.start, what="start") if self.start is not None else None
        hi = to_utc_micros(self.end, end_of_day=True, what="end") if self.end is not None else None
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"start {self.start!r} is after end {self.end!r}")
        if not isinstance(self.where, Mapping):
            raise ValueError(f"where must be a dict of column -> condition, got {type(self.where).__name__}")
        self.where = dict(self.where)
        for name, cond in self.where.items():
            if isinstance(cond, tuple) and len(cond) != 2:
                raise ValueError(f"where[{name!r}]: a range is a (lo, hi) pair, got {len(cond)} values")
            if isinstance(cond, tuple) and cond[0] is None and cond[1] is None:
                raise ValueError(f"where[{name!r}]: a range needs at least one end")
            if isinstance(cond, (list, set, frozenset, np.ndarray)) and len(cond) == 0:
                raise ValueError(f"where[{name!r}]: empty list of values")

    @property
    def is_empty(self) -> bool:
        """True when no condition is set (every row matches)."""
        return self.bbox is None and self.start is None and self.end is None and not self.where

    @classmethod
    def parse(
        cls,
        bbox: str | Sequence[float] | None = None,
        start: str | None = None,
        end: str | None = None,
        where: Iterable[str] | None = None,
    ) -> Filters:
        """Build filters from CLI-style strings.

        Args:
            bbox: ``"west,south,east,north"`` in degrees (or a 4-sequence).
            start, end: ISO dates or datetimes (``2020-01-01``, ``2020-01-01T12:00:00Z``).
            where: conditions such as ``"sensor=S2"``, ``"gsd<=10"``, ``"gsd>0.5"``, ``"label in forest,river"``,
                ``"caption contains harbor"``, ``"caption like %boat%harbor%"``.
                Two range conditions on one column combine (``"gsd>=1" "gsd<=10"``). Values may be quoted.

        Raises:
            ValueError: naming the part that does not parse.
        """
        box: tuple[float, float, float, float] | None = None
        if bbox is not None:
            box = _parse_bbox(bbox)
        conditions: dict[str, WhereCondition] = {}
        for text in where or ():
            name, cond = _parse_condition(text)
            if name in conditions:
                conditions[name] = _merge_ranges(text, name, conditions[name], cond)
            else:
                conditions[name] = cond
        return cls(bbox=box, start=start, end=end, where=conditions)


# ---------------------------------------------------------------- parsing helpers


def _check_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        raise ValueError(f"bbox {bbox!r} must be four numbers (west, south, east, north)") from None
    if len(values) != 4 or any(np.isnan(values)):
        raise ValueError(f"bbox {bbox!r} must be four numbers (west, south, east, north)")
    w, s, e, n = values
    if not (-180 <= w <= 180 and -180 <= e <= 180):
        raise ValueError(f"bbox {bbox!r}: west and east must be longitudes in [-180, 180]")
    if not (-90 <= s <= 90 and -90 <= n <= 90):
        raise ValueError(f"bbox {bbox!r}: south and north must be latitudes in [-90, 90]")
    if s > n:
        raise ValueError(f"bbox {bbox!r}: south ({s}) is north of north ({n})")
    return w, s, e, n


def _parse_bbox(text: str | Sequence[float]) -> tuple[float, float, float, float]:
    if not isinstance(text, str):
        return _check_bbox(text)
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise ValueError(f"bbox '{text}' must be four comma-separated numbers west,south,east,north")
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(f"bbox '{text}': '{part}' is not a number (expected west,south,east,north)") from None
    return _check_bbox(values)


_CONDITION = re.compile(r"^\s*(?P<col>[^\s<>=!]+?)\s*(?P<op><=|>=|==|=|<|>)\s*(?P<val>.*?)\s*$", re.S)
_MEMBERSHIP = re.compile(r"^\s*(?P<col>[^\s<>=!]+)\s+in\s+(?P<val>.*?)\s*$", re.S | re.I)
_TEXT_MATCH = re.compile(r"^\s*(?P<col>[^\s<>=!]+)\s+(?P<op>contains|like)\s+(?P<val>.*?)\s*$", re.S | re.I)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _parse_condition(text: str) -> tuple[str, WhereCondition]:
    """``"gsd<=10"`` -> ``("gsd", Range(hi="10"))``; values stay strings until the column type is known."""
    m = _TEXT_MATCH.match(text)
    if m:
        value = _unquote(m["val"])
        if not value:
            raise ValueError(f"where condition '{text}': missing text after '{m['op']}'")
        return m["col"], Like.contains(value) if m["op"].lower() == "contains" else Like(value)
    m = _MEMBERSHIP.match(text)
    if m:
        values = [_unquote(v.strip()) for v in m["val"].split(",") if v.strip()]
        if not values:
            raise ValueError(f"where condition '{text}': no values after 'in'")
        return m["col"], values
    m = _CONDITION.match(text)
    if not m:
        raise ValueError(
            f"where condition '{text}' does not parse; use column=value, column<=value (also <, >, >=), "
            "'column in a,b,c', 'column contains text' or 'column like pattern'"
        )
    value = _unquote(m["val"])
    if value == "":
        raise ValueError(f"where condition '{text}': missing value after '{m['op']}'")
    if value[0] in "<>=!":
        raise ValueError(f"where condition '{text}': value '{value}' starts with an operator; quote it if meant")
    op = m["op"]
    if op in ("=", "=="):
        return m["col"], value
    if op in ("<", "<="):
        return m["col"], Range(hi=value, include_hi=op == "<=")
    return m["col"], Range(lo=value, include_lo=op == ">=")


def _merge_ranges(text: str, name: str, old: WhereCondition, new: WhereCondition) -> Range:
    if not (isinstance(old, Range) and isinstance(new, Range)):
        raise ValueError(f"where condition '{text}': column '{name}' already has a condition; only two range "
                         "conditions (e.g. gsd>=1 and gsd<=10) can be combined")
    if (old.lo is not None and new.lo is not None) or (old.hi is not None and new.hi is not None):
        raise ValueError(f"where condition '{text}': column '{name}' already has that bound")
    lo, inc_lo = (old.lo, old.include_lo) if old.lo is not None else (new.lo, new.include_lo)
    hi, inc_hi = (old.hi, old.include_hi) if old.hi is not None else (new.hi, new.include_hi)
    return Range(lo=lo, hi=hi, include_lo=inc_lo, include_hi=inc_hi)


def to_utc_micros(value: Any, *, end_of_day: bool = False, what: str = "time") -> int:
    """Microseconds since 1970-01-01 UTC for a ``datetime`` / ``date`` / ISO string / ``numpy.datetime64``.

    Naive datetimes are UTC. A bare date is its midnight, or its last microsecond with ``end_of_day=True``
    (so an inclusive end date covers the whole day).
    """
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise ValueError(f"{what}: NaT is not a time")
        return int(value.astype("datetime64[us]").astype(np.int64))
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else None
        except ValueError:
            value = None
        if value is None:
            try:
                value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
            except ValueError:
                raise ValueError(f"{what} '{text}' is not an ISO date or datetime (e.g. 2020-01-31 or "
                                 "2020-01-31T12:00:00Z)") from None
    if isinstance(value, datetime):
        dt = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return (dt - _EPOCH) // _ONE_US
    if isinstance(value, date):
        midnight = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
        micros = (midnight - _EPOCH) // _ONE_US
        return micros + (86_400_000_000 - 1 if end_of_day else 0)
    raise ValueError(f"{what} {value!r} is not a date, datetime or ISO string")


# ---------------------------------------------------------------- evaluation over the metadata table


@dataclass
class _Column:
    """A filterable column in numpy form: ``values`` (codes for strings) and ``valid`` (False where null)."""

    kind: str  # "string" | "number" | "bool" | "time"
    values: np.ndarray
    valid: np.ndarray
    dictionary: Any = None  # pyarrow array of distinct strings ("string" columns)


class MetadataTable:
    """An index's metadata (a pyarrow table sorted by int64 ``id``) with vectorised row filters and look-ups.

    Columns are converted to numpy once, on first use, and kept (string columns as dictionary codes), so
    repeated filters cost a few vectorised comparisons over the rows. Safe to share between threads.
    """

    def __init__(self, table: Any) -> None:
        pa = require("pyarrow", extra=None, feature="index metadata")
        if ID_COLUMN not in table.column_names:
            raise ValueError(f"metadata has no '{ID_COLUMN}' column; columns: {', '.join(table.column_names)}")
        if not pa.types.is_integer(table.schema.field(ID_COLUMN).type):
            raise ValueError(f"metadata '{ID_COLUMN}' column must be int64, got {table.schema.field(ID_COLUMN).type}")
        ids = np.asarray(table.column(ID_COLUMN).to_numpy(), dtype=np.int64)
        if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            if np.any(ids[1:] == ids[:-1]):
                raise ValueError("metadata has duplicate ids")
            table = table.take(pa.array(order))
        # One chunk per column: pyarrow's take() on a multi-chunk table concatenates the chunks on every call
        # (about 4 ms at 200k rows, against 0.1 ms on one chunk).
        self.table = table.combine_chunks()
        self._readers: dict[tuple[str, ...], RecordReader] = {}
        self.ids = ids
        self._cache: dict[str, _Column] = {}
        self._bounds: tuple[np.ndarray, ...] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def columns(self) -> list[str]:
        """Column names, ``id`` first as stored."""
        return list(self.table.column_names)

    # ---- look-ups
    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of ``ids`` (sorted-id binary search); -1 where an id is not in the table."""
        return rows_of_ids(self.ids, ids)

    def records(self, rows: np.ndarray, drop: Sequence[str] = (ID_COLUMN,)) -> list[dict[str, Any]]:
        """The rows at ``rows`` as dicts (pyarrow's Python values: ``datetime``, ``bytes`` for WKB...).

        Common columns are read from a row-major packed copy of their fixed-width parts (one gather per call;
        :class:`~geovl.index.columns.RecordReader`), built at the first call for each ``drop``; other columns
        through pyarrow.
        """
        if len(rows) == 0:
            return []
        key = tuple(drop)
        reader = self._readers.get(key)
        if reader is None:
            with self._lock:
                reader = self._readers[key] = RecordReader(self.table, drop)
        return reader(np.asarray(rows, np.int64))

    # ---- masks
    def mask(self, filters: Filters | None) -> np.ndarray | None:
        """(N,) bool mask of the rows ``filters`` allows, or ``None`` when it sets no condition.

        Raises:
            ValueError: unknown columns (listing the available ones), a filter on a column the index lacks, or
                values whose type does not fit the column.
        """
        if filters is None or filters.is_empty:
            return None
        mask = np.ones(len(self), dtype=bool)
        if filters.bbox is not None:
            mask &= self._bbox_mask(filters.bbox)
        if filters.start is not None or filters.end is not None:
            col = self._column(TIME_COLUMN, purpose="a start/end filter")
            if col.kind != "time":
                raise ValueError(f"column '{TIME_COLUMN}' must hold timestamps for start/end filters")
            m = col.valid.copy()
            if filters.start is not None:
                m &= col.values >= to_utc_micros(filters.start, what="start")
            if filters.end is not None:
                m &= col.values <= to_utc_micros(filters.end, end_of_day=True, what="end")
            mask &= m
        for name, cond in filters.where.items():
            mask &= self._where_mask(name, cond)
        return mask

    def _unknown(self, name: str, purpose: str) -> ValueError:
        return ValueError(f"{purpose} needs column '{name}', which the index metadata does not have; available "
                          f"columns: {', '.join(self.table.column_names)}")

    def _bbox_mask(self, bbox: tuple[float, float, float, float]) -> np.ndarray:
        if self._bounds is None:
            missing = [c for c in BOUNDS_COLUMNS if c not in self.table.column_names]
            if missing:
                raise self._unknown(missing[0], "a bbox filter")
            pa = require("pyarrow", extra=None)
            with self._lock:
                west_, south_, east_, north_ = (
                    np.asarray(self.table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
                    for c in BOUNDS_COLUMNS
                )
                # Footprints crossing the antimeridian (lon_min > lon_max) are split once, here, into two spans;
                # most collections have none, and then a bbox test is four comparisons over the rows.
                wraps = west_ > east_
                cached: list[np.ndarray] = [south_, north_, west_]
                if wraps.any():
                    cached += [np.where(wraps, 180.0, east_), np.where(wraps, -180.0, np.nan), east_]
                else:
                    cached.append(east_)
                self._bounds = tuple(cached)
        lat_min, lat_max, *spans = self._bounds
        west, south, east, north = bbox
        # NaN (missing bounds) compares False everywhere, so such rows never match.
        mask = lat_min <= north
        mask &= lat_max >= south
        box_spans = [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]
        lon_ok: np.ndarray | None = None
        for r_lo, r_hi in zip(spans[0::2], spans[1::2], strict=True):
            for b_lo, b_hi in box_spans:
                part = r_lo <= b_hi
                part &= r_hi >= b_lo
                lon_ok = part if lon_ok is None else (lon_ok | part)
        if lon_ok is not None:
            mask &= lon_ok
        return mask

    def _column(self, name: str, purpose: str) -> _Column:
        col = self._cache.get(name)
        if col is not None:
            return col
        if name not in self.table.column_names:
            raise self._unknown(name, purpose)
        with self._lock:
            col = self._cache.get(name)
            if col is None:
                col = _to_column(name, self.table.column(name))
                self._cache[name] = col
        return col

    def _where_mask(self, name: str, cond: WhereCondition) -> np.ndarray:
        if name not in self.table.column_names:
            raise ValueError(f"unknown column '{name}' in where; available columns: "
                             f"{', '.join(self.table.column_names)}")
        col = self._column(name, purpose=f"where[{name!r}]")
        if isinstance(cond, tuple):
            cond = Range(lo=cond[0], hi=cond[1])
        if isinstance(cond, Like):
            return _like_mask(name, col, self.table.column(name), cond)
        if isinstance(cond, Range):
            return col.valid & _range_mask(name, col, self.table.column(name), cond)
        values = list(cond) if isinstance(cond, (list, set, frozenset, np.ndarray)) else [cond]
        if col.kind == "string":
            return _string_membership(name, col, values)
        if col.kind == "time":
            # A bare date matches its whole day; a datetime matches that microsecond.
            hit = np.zeros(col.values.shape, dtype=bool)
            for v in values:
                lo, hi = _coerce(name, "time", v), _coerce(name, "time", v, end_of_day=True)
                hit |= (col.values >= lo) & (col.values <= hi)
            return col.valid & hit
        wanted = np.asarray([_coerce(name, col.kind, v) for v in values])
        return col.valid & np.isin(col.values, wanted)


def _to_column(name: str, data: Any) -> _Column:
    pa = require("pyarrow", extra=None)
    pc = require("pyarrow.compute", extra=None)
    t = data.type
    if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        data, t = data.cast(t.value_type), t.value_type
    valid = np.asarray(data.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        encoded = pc.dictionary_encode(data).combine_chunks()
        codes = np.asarray(pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False), np.int64)
        return _Column("string", codes, valid, encoded.dictionary)
    if pa.types.is_boolean(t):
        return _Column("bool", np.asarray(pc.fill_null(data, False).to_numpy(zero_copy_only=False), bool), valid)
    if pa.types.is_integer(t):
        return _Column("number", np.asarray(pc.fill_null(data.cast(pa.int64()), 0).to_numpy(), np.int64), valid)
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        values = np.asarray(pc.fill_null(data.cast(pa.float64()), np.nan).to_numpy(), np.float64)
        return _Column("number", values, valid & ~np.isnan(values))
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        us = data.cast(pa.timestamp("us", tz=getattr(t, "tz", None))).cast(pa.int64())
        return _Column("time", np.asarray(pc.fill_null(us, 0).to_numpy(), np.int64), valid)
    raise ValueError(f"column '{name}' has type {t}, which cannot be filtered on (strings, numbers, booleans, "
                     "dates and timestamps can)")


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _coerce(name: str, kind: str, value: Any, *, end_of_day: bool = False) -> Any:
    """``value`` as the column's comparison type (``int``/``float``, ``bool`` or UTC microseconds)."""
    bad = ValueError(f"where[{name!r}]: column '{name}' holds {kind} values; {value!r} is not one")
    if kind == "number":
        if isinstance(value, (bool, np.bool_)):
            raise bad
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            return float(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    return float(value)
                except ValueError:
                    raise bad from None
        raise bad
    if kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad
    if kind == "time":
        if isinstance(value, (str, date, datetime, np.datetime64)):
            try:
                return to_utc_micros(value, end_of_day=end_of_day, what=f"where[{name!r}]")
            except ValueError as exc:
                raise ValueError(f"{exc} (column '{name}' holds times)") from None
        raise bad
    if not isinstance(value, str):
        raise bad
    return value


def _string_membership(name: str, col: _Column, values: list[Any]) -> np.ndarray:
    pa = require("pyarrow", extra=None)
    pc = require("pyarrow.compute", extra=None)
    wanted = pa.array([_coerce(name, "string", v) for v in values], type=pa.string())
    codes = pc.index_in(wanted, value_set=col.dictionary.cast(pa.string())).drop_null()
    if len(codes) == 0:
        return np.zeros(col.values.shape, dtype=bool)
    # a look-up table over the dictionary (its last slot, False, is where null codes, -1, land): one gather over
    # the rows, ~5x faster than numpy.isin at 1M rows
    table = np.zeros(len(col.dictionary) + 1, dtype=bool)
    table[np.asarray(codes.to_numpy(), np.int64)] = True
    return table[col.values]


def _like_mask(name: str, col: _Column, data: Any, cond: Like) -> np.ndarray:
    if col.kind != "string":
        raise ValueError(f"where[{name!r}]: column '{name}' holds {col.kind} values; like / contains apply to text")
    pa = require("pyarrow", extra=None)
    pc = require("pyarrow.compute", extra=None)
    if pa.types.is_dictionary(data.type):
        data = data.cast(data.type.value_type)
    hit = pc.match_like(data, cond.pattern, ignore_case=True)
    return np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), bool)


def _range_mask(name: str, col: _Column, data: Any, cond: Range) -> np.ndarray:
    if col.kind == "bool":
        raise ValueError(f"where[{name!r}]: column '{name}' holds booleans; ranges do not apply")
    if col.kind == "string":
        pc = require("pyarrow.compute", extra=None)
        out = None
        for bound, inclusive, ge, gt in ((cond.lo, cond.include_lo, pc.greater_equal, pc.greater),
                                         (cond.hi, cond.include_hi, pc.less_equal, pc.less)):
            if bound is None:
                continue
            op = ge if inclusive else gt
            m = op(data, _coerce(name, "string", bound))
            out = m if out is None else pc.and_(out, m)
        return np.asarray(pc.fill_null(out, False).to_numpy(zero_copy_only=False), bool)
    mask = np.ones(col.values.shape, dtype=bool)
    # A bare date on a time column stands for its whole day: ">= d" from its start, "> d" after its end,
    # "<= d" up to its end, "< d" before its start.
    if cond.lo is not None:
        lo = _coerce(name, col.kind, cond.lo, end_of_day=not cond.include_lo)
        mask &= col.values >= lo if cond.include_lo else col.values > lo
    if cond.hi is not None:
        hi = _coerce(name, col.kind, cond.hi, end_of_day=cond.include_hi)
        mask &= col.values <= hi if cond.include_hi else col.values < hi
    return mask
