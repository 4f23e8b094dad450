"""One JSON sanitiser for every writer and response: numpy, torch, paths, dates, bytes and NaN made plain JSON."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["to_jsonable"]


def to_jsonable(value: Any, _where: str = "value") -> Any:
    """``value`` as plain JSON data.

    numpy / torch scalars and arrays become numbers and lists, NaN and +-inf become ``None``, paths become strings,
    dates and times ISO strings, durations seconds, decimals floats, bytes (e.g. WKB geometry) hex strings,
    tuples and sets lists, dataclasses dicts and
    non-string keys strings.

    Raises:
        TypeError: for anything else, naming where in the structure it sits.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {_json_key(k): to_jsonable(v, f"{_where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v, _where) for v in value), key=repr)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, decimal.Decimal):
        return to_jsonable(float(value), _where)
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value), _where)
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist):
        return to_jsonable(tolist(), _where)
    isoformat = getattr(value, "isoformat", None)  # pandas / numpy datetimes
    if callable(isoformat):
        return isoformat()
    raise TypeError(f"{_where} holds a {type(value).__name__}, which JSON cannot store: {value!r:.80}")


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    plain = to_jsonable(key)
    if isinstance(plain, (str, int, float, bool)) or plain is None:
        return str(plain)
    raise TypeError(f"dict key {key!r} is not a string or number")
