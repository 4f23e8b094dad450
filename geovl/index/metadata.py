"""The metadata of an index folder: ``metadata.parquet``, one row per vector stored in ``index.faiss``.

Rules: every row has a non-null int64 ``id`` (the vector's global id, its faiss label) and ids are unique across
everything merged into one index; the file is sorted by id. Files merged into one get one schema: columns missing
from a file are null in its rows, and types are promoted where pyarrow can (else ``ValueError``). GeoParquet's
``geo`` key is kept, without the per-column bboxes a merge invalidates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geovl._optional import require

logger = logging.getLogger(__name__)

_BATCH_ROWS = 65_536


def _pq() -> Any:
    return require("pyarrow.parquet", None, "reading and writing index metadata")


def parquet_ids(path: Path) -> np.ndarray:
    """The ``id`` column of a metadata parquet file as int64 (in file order).

    Raises:
        ValueError: the file has no ``id`` column, or null ids.
    """
    pq = _pq()
    if "id" not in pq.read_schema(path).names:
        raise ValueError(f"{path}: metadata has no 'id' column")
    col = pq.read_table(path, columns=["id"]).column("id")
    if col.null_count:
        raise ValueError(f"{path}: {col.null_count} rows have a null id")
    return np.asarray(col.to_numpy(), dtype=np.int64)


def few_ids(ids: np.ndarray, n: int = 5) -> str:
    """The first ``n`` ids for a message, with the total when there are more."""
    head = ", ".join(str(int(i)) for i in ids[:n])
    return head + (f", ... ({ids.size} in all)" if ids.size > n else "")


def _unified_schema(paths: Sequence[Path]) -> Any:
    import pyarrow as pa

    pq = _pq()
    if not paths:
        return pa.schema([pa.field("id", pa.int64())])
    schemas = [pq.read_schema(p) for p in paths]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"metadata columns of {', '.join(map(str, paths))} have incompatible types: {exc}") from exc
    schema = schema.set(schema.get_field_index("id"), pa.field("id", pa.int64()))
    meta: dict[bytes, bytes] = {}
    for s in schemas:  # keep GeoParquet's "geo" key (minus per-column bboxes, which the merge invalidates)
        if s.metadata and b"geo" in s.metadata:
            geo = json.loads(s.metadata[b"geo"])
            for col in geo.get("columns", {}).values():
                col.pop("bbox", None)
            meta[b"geo"] = json.dumps(geo).encode()
            break
    return schema.with_metadata(meta or None)


def _conform(table: Any, schema: Any) -> Any:
    import pyarrow as pa

    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _drop_rows(table: Any, drop: np.ndarray | None) -> Any:
    if drop is None or drop.size == 0:
        return table
    import pyarrow as pa
    import pyarrow.compute as pc

    return table.filter(pc.invert(pc.is_in(table.column("id"), value_set=pa.array(drop))))


def _check_unique(inputs: Sequence[Path], ids_per: Sequence[np.ndarray], all_ids: np.ndarray) -> None:
    dup = np.unique(all_ids[1:][all_ids[1:] == all_ids[:-1]])
    if dup.size:
        where = [str(p) for p, ids in zip(inputs, ids_per, strict=True) if np.isin(dup[0], ids)]
        raise ValueError(f"duplicate ids in the metadata: {few_ids(dup)} (id {int(dup[0])} is in "
                         f"{', '.join(where)}); ids must be unique across all embeddings folders")


def _stream_sorted(writer: Any, path: Path, ids: np.ndarray, schema: Any, drop: np.ndarray | None) -> None:
    """Append the rows of one file (minus ``drop``) to ``writer`` in id order: in batches when already sorted."""
    import pyarrow as pa

    pq = _pq()
    if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS):
            writer.write_table(_conform(_drop_rows(pa.Table.from_batches([batch]), drop), schema))
    else:
        table = _drop_rows(pq.read_table(path), drop).sort_by("id")
        writer.write_table(_conform(table, schema), row_group_size=_BATCH_ROWS)


def merge_metadata(inputs: Sequence[Path], out: Path, *, drop: np.ndarray | None = None) -> np.ndarray:
    """Write the rows of ``inputs`` (minus ids in ``drop``) to ``out``, sorted by id; return the sorted ids.

    Files are streamed one at a time (already sorted files in batches) when their id ranges do not interleave;
    interleaving ranges (e.g. added ids filling gaps) are sorted in memory.

    Raises:
        ValueError: an id appears twice, a file lacks the ``id`` column, or column types cannot be unified.
    """
    import pyarrow as pa

    pq = _pq()
    ids_per = [parquet_ids(p) for p in inputs]
    kept = [ids if drop is None else ids[~np.isin(ids, drop)] for ids in ids_per]
    all_ids = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
    _check_unique(inputs, ids_per, all_ids)
    schema = _unified_schema(inputs)
    order = sorted((i for i in range(len(inputs)) if kept[i].size), key=lambda i: int(kept[i].min()))
    spans = [(int(kept[i].min()), int(kept[i].max())) for i in order]
    interleaved = any(spans[j + 1][0] <= spans[j][1] for j in range(len(spans) - 1))
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        if not order:
            writer.write_table(schema.empty_table())
        elif interleaved:
            logger.info("metadata id ranges interleave: sorting %d rows in memory", all_ids.size)
            table = pa.concat_tables([_conform(_drop_rows(pq.read_table(inputs[i]), drop), schema) for i in order])
            writer.write_table(table.sort_by("id"), row_group_size=_BATCH_ROWS)
        else:
            for i in order:
                _stream_sorted(writer, inputs[i], ids_per[i], schema, drop)
    return all_ids


def rows_of_ids(sorted_ids: np.ndarray, ids: np.ndarray, *, dense: bool = False) -> np.ndarray:
    """Row positions of ``ids`` in ``sorted_ids`` (binary search); -1 for -1 and for ids not there.

    ``dense``: ``sorted_ids`` is ``0..N-1``, so an id is its own row (no search).
    """
    ids = np.asarray(ids, dtype=np.int64)
    n = int(sorted_ids.size)
    if dense:
        return np.where((ids >= 0) & (ids < n), ids, -1)
    if n == 0:
        return np.full(ids.shape, -1, np.int64)
    rows = np.minimum(np.searchsorted(sorted_ids, ids), n - 1)
    return np.where((ids >= 0) & (sorted_ids[rows] == ids), rows, -1)
