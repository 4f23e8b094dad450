"""Recall vs searched area (RvA): how much ground an analyst inspects, following a search's ranking, to find a target.

The geo-search form of the Recall-vs-Area metric of image geolocation. For each query with a known target
footprint the index's chips are inspected in rank order:

* the **searched area** after r chips is the area of the *union* of their footprints, so overlapping chips (chips
  cut with overlap, several acquisitions of one place) count once;
* the query is **found** at the first rank where the inspected chips cover at least ``cover`` of the target's area
  (a point target: where a chip contains it, edges included); its **area to find** is the searched area then;
* **recall(A)** is the share of queries found within searched area A. A query not found among the first
  ``max_chips`` chips is not found at any area.

Areas are exact for lon/lat boxes (the footprints an index stores: ``lon_min``, ``lat_min``, ``lon_max``,
``lat_max``; ``lon_min > lon_max`` crosses the antimeridian) on a sphere of the authalic radius
:data:`EARTH_RADIUS_KM`: in the coordinates (λ, sin φ) of Lambert's cylindrical equal-area projection such a box
is a rectangle of area R² Δλ Δ(sin φ), so unions and intersections of boxes are computed exactly on the grid of
their edges. Chips without bounds add no area and cover nothing. Against the WGS84 ellipsoid the sphere is off by
under 1% in area.

Layers: :func:`search_trace` (one ranking, pure) -> :func:`recall_vs_area` (many, pure) -> :func:`eval_rva` (run the
queries of a file through a :class:`~geovl.index.search.Searcher`, an :class:`~geovl.eval.report.EvalReport`) ->
:func:`write_rva_report` (JSON, Markdown and the PNG curve).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geovl.eval.fingerprint import dataset_fingerprint
from geovl.eval.plots import DPI, require_matplotlib
from geovl.eval.report import write_report
from geovl.eval.report_record import EvalReport, model_label
from geovl.eval.rva_queries import RvaQuery, read_rva_queries
from geovl.index.filters import BOUNDS_COLUMNS
from geovl.index.search import Searcher
from geovl.io.fs import atomic_write

__all__ = [
    "EARTH_RADIUS_KM",
    "QueryOutcome",
    "RvaQuery",
    "RvaResult",
    "SearchTrace",
    "area_grid",
    "bbox_area_km2",
    "eval_rva",
    "format_rva_table",
    "plot_recall_vs_area",
    "read_rva_queries",
    "recall_vs_area",
    "search_trace",
    "write_rva_report",
]

PathLike = str | os.PathLike[str]

EARTH_RADIUS_KM = 6371.0072
"""Authalic radius of the WGS84 ellipsoid (the sphere of the same surface area), in km."""

RECALL_LEVELS = (0.5, 0.9)
"""Recall levels whose searched area is reported."""

PREFERRED_NUMBERS = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
"""Renard R10 series: the curve's areas are these times powers of ten, so runs share grid points."""


_TOL = 1e-9
_BATCH = 32


# ---------------------------------------------------------------- geometry


def _check_box(values: Sequence[Any], what: str) -> tuple[float, float, float, float]:
    try:
        w, s, e, n = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be four numbers (lon_min, lat_min, lon_max, lat_max), got {values!r}") from None
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise ValueError(f"{what} {values!r}: bounds must be finite")
    if not (-180.0 <= w <= 180.0 and -180.0 <= e <= 180.0):
        raise ValueError(f"{what} {values!r}: longitudes must be in [-180, 180]")
    if not (-90.0 <= s <= 90.0 and -90.0 <= n <= 90.0):
        raise ValueError(f"{what} {values!r}: latitudes must be in [-90, 90]")
    if s > n:
        raise ValueError(f"{what} {values!r}: lat_min ({s}) is north of lat_max ({n})")
    return w, s, e, n


def _check_point(values: Sequence[Any], what: str) -> tuple[float, float]:
    try:
        lon, lat = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be two numbers (lon, lat), got {values!r}") from None
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise ValueError(f"{what} {values!r}: lon must be in [-180, 180] and lat in [-90, 90]")
    return lon, lat


def _rects(box: tuple[float, float, float, float]) -> list[tuple[float, float, float, float]]:
    """A lon/lat box as one or two (across the antimeridian) rectangles ``(x0, y0, x1, y1)`` in (λ rad, sin φ)."""
    w, s, e, n = box
    y0, y1 = math.sin(math.radians(s)), math.sin(math.radians(n))
    spans = [(w, e)] if w <= e else [(w, 180.0), (-180.0, e)]
    return [(math.radians(a), y0, math.radians(b), y1) for a, b in spans]


def bbox_area_km2(bbox: Sequence[float]) -> float:
    """Area in km² of a lon/lat box ``(lon_min, lat_min, lon_max, lat_max)`` in degrees, on the authalic sphere:
    R² · Δλ · (sin φ_max − sin φ_min); ``lon_min > lon_max`` crosses the antimeridian."""
    rects = _rects(_check_box(bbox, "bbox"))
    return EARTH_RADIUS_KM ** 2 * sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in rects)


def _chip_box(chip: Sequence[Any] | None, i: int) -> tuple[float, float, float, float] | None:
    """A chip's box, or None when it has no (or null / NaN) bounds."""
    if chip is None or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in chip):
        return None
    return _check_box(chip, f"chip {i}")


@dataclass(frozen=True)
class SearchTrace:
    """What inspecting a ranking chip by chip gives.

    Attributes:
        area_km2: (n,) searched area after each chip (area of the union of chips 1..r), km², non-decreasing.
        covered: (n,) share of the target covered after each chip, in [0, 1]; for a point target 0 or 1.
    """

    area_km2: np.ndarray
    covered: np.ndarray


def search_trace(chips: Sequence[Sequence[Any] | None], target: Sequence[float]) -> SearchTrace:
    """Searched area and target coverage after each chip of one ranking (exact; see the module docstring).

    Args:
        chips: chip footprints best first, each ``(lon_min, lat_min, lon_max, lat_max)`` in degrees, or ``None``
            (or NaN bounds) for a chip without a footprint.
        target: ``(lon_min, lat_min, lon_max, lat_max)`` (a box of positive area) or ``(lon, lat)`` (a point).

    Raises:
        ValueError: a malformed chip or target.
    """
    chip_rects = [[] if (box := _chip_box(c, i)) is None else _rects(box) for i, c in enumerate(chips)]
    if len(target) == 2:
        lon, lat = _check_point(target, "point target")
        area, _ = _union_trace(chip_rects, [])
        xs = [math.radians(lon)] + ([math.radians(-lon)] if abs(lon) == 180.0 else [])
        y = math.sin(math.radians(lat))
        hit = [any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in rects for x in xs) for rects in chip_rects]
        return SearchTrace(area, np.maximum.accumulate(np.asarray(hit, np.float64)) if hit else np.zeros(0))
    if len(target) != 4:
        raise ValueError(f"target must be (lon, lat) or (lon_min, lat_min, lon_max, lat_max), got {target!r}")
    t_rects = _rects(_check_box(target, "target"))
    t_area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in t_rects)
    if t_area <= 0:
        raise ValueError(f"target {tuple(target)} has no area; give (lon, lat) for a point target")
    area, inside = _union_trace(chip_rects, t_rects)
    return SearchTrace(area, np.minimum(inside / (EARTH_RADIUS_KM ** 2 * t_area), 1.0))


def _union_trace(chip_rects: Sequence[Sequence[tuple[float, float, float, float]]],
                 t_rects: Sequence[tuple[float, float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative union area, and its part inside the target, after each chip (km²), on the grid of all edges."""
    n = len(chip_rects)
    every = [r for rects in chip_rects for r in rects] + list(t_rects)
    if not every:
        return np.zeros(n), np.zeros(n)
    xs = np.unique([v for r in every for v in (r[0], r[2])])
    ys = np.unique([v for r in every for v in (r[1], r[3])])
    dx, dy = np.diff(xs), np.diff(ys)
    mx, my = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    # the target's rectangles share their latitudes, so the target is (union of lon spans) x (one lat span)
    in_x = np.zeros(dx.size, bool)
    in_y = np.zeros(dy.size, bool)
    for x0, y0, x1, y1 in t_rects:
        in_x |= (mx >= x0) & (mx <= x1)
        in_y |= (my >= y0) & (my <= y1)
    wx, wy = dx * in_x, dy * in_y
    covered = np.zeros((dx.size, dy.size), bool)
    area, inside = np.zeros(n), np.zeros(n)
    total = total_in = 0.0
    for i, rects in enumerate(chip_rects):
        for x0, y0, x1, y1 in rects:
            i0, i1 = np.searchsorted(xs, (x0, x1))
            j0, j1 = np.searchsorted(ys, (y0, y1))
            free = ~covered[i0:i1, j0:j1]
            total += float(dx[i0:i1] @ free @ dy[j0:j1])
            total_in += float(wx[i0:i1] @ free @ wy[j0:j1])
            covered[i0:i1, j0:j1] = True
        area[i], inside[i] = total, total_in
    return area * EARTH_RADIUS_KM ** 2, inside * EARTH_RADIUS_KM ** 2


# ---------------------------------------------------------------- the metric


@dataclass(frozen=True)
class QueryOutcome:
    """One query's result.

    Attributes:
        id: the query's id.
        found: covered to the threshold within the inspected chips.
        area_to_find_km2: searched area when found (km²), ``None`` when not found.
        chips_to_find: chips inspected when found (the rank, 1-based), ``None`` when not found.
        best_cover: the largest share of the target the inspected chips covered, in [0, 1].
        searched_km2: searched area after all inspected chips, km².
        chips: chips inspected (the ranking's length).
    """

    id: str
    found: bool
    area_to_find_km2: float | None
    chips_to_find: int | None
    best_cover: float
    searched_km2: float
    chips: int


@dataclass(frozen=True)
class RvaResult:
    """Recall vs searched area over a set of queries. Rates are fractions in [0, 1].

    Attributes:
        cover: the coverage threshold a query is found at.
        outcomes: one :class:`QueryOutcome` per query, in input order.
        area_km2: the curve's areas (km², increasing; R10 preferred numbers within ``area_range_km2``).
        recall: (len(area_km2),) recall at each area.
        area_at_recall: ``{0.5: km², 0.9: km²}``: the smallest searched area with at least that recall; ``None``
            when it is not reached within the inspected chips.
        auc_log_area: mean recall over log10(area) on ``area_range_km2`` (exact, from the step curve), or
            ``None`` without a range.
        area_range_km2: the curve's range, or ``None`` when no chip had an area.
        exact_up_to_km2: every query was inspected at least this far (the smallest ``searched_km2``); beyond it the
            curve is a lower bound, since queries not found might have been found with more chips.
    """

    cover: float
    outcomes: list[QueryOutcome]
    area_km2: np.ndarray
    recall: np.ndarray
    area_at_recall: dict[float, float | None]
    auc_log_area: float | None
    area_range_km2: tuple[float, float] | None
    exact_up_to_km2: float

    @property
    def found(self) -> int:
        """Queries found within the inspected chips."""
        return sum(o.found for o in self.outcomes)

    def recall_at(self, area_km2: float) -> float:
        """Share of queries found within ``area_km2`` of searched area."""
        return _recall_at(_found_areas(self.outcomes), len(self.outcomes), area_km2)


def _found_areas(outcomes: Sequence[QueryOutcome]) -> np.ndarray:
    return np.sort([o.area_to_find_km2 for o in outcomes if o.area_to_find_km2 is not None])


def _recall_at(found: np.ndarray, n: int, area: float) -> float:
    return float(np.count_nonzero(found <= area * (1 + _TOL))) / n


def area_grid(lo: float, hi: float, *, snap: bool = False) -> np.ndarray:
    """Areas from ``lo`` to ``hi`` (km²): ``lo``, the R10 preferred numbers between them and ``hi``. With ``snap``
    the ends move out to the nearest preferred numbers first."""
    if not 0 < lo <= hi:
        raise ValueError(f"the area range must satisfy 0 < min <= max, got ({lo}, {hi})")
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 2)
    preferred = np.array(sorted(float(f"{m * 10.0 ** k:.6g}") for k in decades for m in PREFERRED_NUMBERS))
    if snap:
        lo = float(preferred[preferred <= lo * (1 + _TOL)][-1])
        hi = float(preferred[preferred >= hi * (1 - _TOL)][0])
    inner = preferred[(preferred > lo * (1 + _TOL)) & (preferred < hi * (1 - _TOL))]
    return np.unique(np.concatenate([[lo], inner, [hi]]))


def _check_cover(cover: float) -> None:
    if not 0 < cover <= 1:
        raise ValueError(f"cover must be in (0, 1] (a share of the target's area), got {cover}")


def _outcome(qid: str, trace: SearchTrace, cover: float) -> QueryOutcome:
    hit = np.flatnonzero(trace.covered >= cover - _TOL)
    n = int(trace.area_km2.size)
    first = int(hit[0]) if hit.size else None
    return QueryOutcome(
        id=qid, found=first is not None,
        area_to_find_km2=None if first is None else float(trace.area_km2[first]),
        chips_to_find=None if first is None else first + 1,
        best_cover=float(trace.covered.max()) if n else 0.0,
        searched_km2=float(trace.area_km2[-1]) if n else 0.0, chips=n)


def _auc_log(found: np.ndarray, n: int, lo: float, hi: float) -> float | None:
    """Exact mean of the step curve recall(A) over log A in [lo, hi]."""
    if hi <= lo:
        return None
    inside = found[found <= hi * (1 + _TOL)]
    spans = np.log(hi) - np.log(np.maximum(inside, lo))
    return float(np.clip(spans, 0, None).sum() / n / (np.log(hi) - np.log(lo)))


def recall_vs_area(
    rankings: Sequence[Sequence[Sequence[Any] | None]],
    targets: Sequence[Sequence[float]],
    *,
    cover: float = 0.5,
    ids: Sequence[str] | None = None,
    area_range: tuple[float, float] | None = None,
) -> RvaResult:
    """Recall as a function of searched area over queries with known targets (see the module docstring).

    Args:
        rankings: per query, the inspected chips' footprints best first (as for :func:`search_trace`).
        targets: per query, ``(lon_min, lat_min, lon_max, lat_max)`` or ``(lon, lat)``.
        cover: share of a box target's area the inspected chips must cover for it to be found, in (0, 1].
        ids: per query ids (default ``"0"``, ``"1"``, ...).
        area_range: ``(min, max)`` km² of the curve and its AUC; give the same range to compare runs. Default:
            from the smallest first chip's area to the largest searched area, widened to R10 preferred numbers.

    Raises:
        ValueError: no queries, mismatched lengths, ``cover`` out of range, a bad range, chip or target.
    """
    _check_cover(cover)
    if not rankings or len(rankings) != len(targets) or (ids is not None and len(ids) != len(targets)):
        raise ValueError(f"need one ranking and one target (and id) per query, got {len(rankings)} rankings, "
                         f"{len(targets)} targets" + ("" if ids is None else f", {len(ids)} ids"))
    names = [str(i) for i in range(len(targets))] if ids is None else [str(i) for i in ids]
    traces = [search_trace(chips, target) for chips, target in zip(rankings, targets, strict=True)]
    outcomes = [_outcome(qid, t, cover) for qid, t in zip(names, traces, strict=True)]
    n = len(outcomes)
    found = _found_areas(outcomes)
    grid, rng = np.zeros(0), area_range
    if area_range is not None:
        grid = area_grid(*area_range)
    else:
        firsts = [float(a[a > 0][0]) for a in (t.area_km2 for t in traces) if np.any(a > 0)]
        if firsts:
            grid = area_grid(min(firsts), max(o.searched_km2 for o in outcomes), snap=True)
            rng = (float(grid[0]), float(grid[-1]))
    level_index = [math.ceil(p * n - _TOL) - 1 for p in RECALL_LEVELS]
    return RvaResult(
        cover=cover, outcomes=outcomes, area_km2=grid,
        recall=np.array([_recall_at(found, n, a) for a in grid]),
        area_at_recall={p: float(found[i]) if i < found.size else None
                        for p, i in zip(RECALL_LEVELS, level_index, strict=True)},
        auc_log_area=None if rng is None else _auc_log(found, n, *rng),
        area_range_km2=None if rng is None else (float(rng[0]), float(rng[1])),
        exact_up_to_km2=min(o.searched_km2 for o in outcomes))


# ---------------------------------------------------------------- running queries through an index


def _footprint(metadata: Mapping[str, Any]) -> tuple[Any, ...] | None:
    values = tuple(metadata.get(k) for k in BOUNDS_COLUMNS)
    return None if any(v is None for v in values) else values


PROTOCOL = (
    "Each of {queries} queries (text or image) with a known target footprint ranks the index's {chips} chips; "
    "the first {k} are inspected in rank order. The searched area after r chips is the area of the union of their "
    "lon/lat footprints on the authalic sphere (R = {radius} km; overlapping chips count once). A query is found "
    "at the first rank where the inspected chips cover at least {cover:g}% of its target box's area (a point "
    "target: where a chip contains it); its area to find is the searched area then. Recall(A) is the share of "
    "queries found within searched area A; a query not found within {k} chips is never found, so beyond "
    "{exact:.4g} km² (the least any query was inspected) the curve is a lower bound. auc_log_area is the mean "
    "recall over log10(area) from {lo} to {hi} km²."
)


def eval_rva(
    index: PathLike | Searcher,
    queries: PathLike | Sequence[RvaQuery],
    *,
    max_chips: int = 1000,
    cover: float = 0.5,
    area_range: tuple[float, float] | None = None,
    model: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> EvalReport:
    """Recall vs searched area of text / image search over an index of georeferenced chips.

    Args:
        index: an index folder (chips with ``lon_min`` ... ``lat_max`` metadata) or a loaded :class:`Searcher`.
        queries: a query file (:func:`read_rva_queries`) or the queries.
        max_chips: chips inspected per query at most (the search's ``k``).
        cover, area_range: as for :func:`recall_vs_area`.
        model, device, precision: the query encoder, as for :class:`Searcher` (default: the index's model).
        progress: a progress bar over query batches.

    Returns:
        The report (task ``"rva"``): figures ``area_km2@recall50`` / ``area_km2@recall90`` (``None`` when not
        reached), ``recall@max_chips``, ``auc_log_area``; ``details`` has the ``curve``, every query's outcome
        (``per_query``) and the hardest queries (``examples``).
    """
    start = time.perf_counter()
    if isinstance(max_chips, bool) or not isinstance(max_chips, int) or max_chips < 1:
        raise ValueError(f"max_chips must be a positive integer, got {max_chips!r}")
    _check_cover(cover)
    if area_range is not None:
        area_grid(*area_range)  # a bad range fails before any search
    items = read_rva_queries(queries) if isinstance(queries, (str, os.PathLike)) else list(queries)
    if not items:
        raise ValueError("no queries")
    searcher = index if isinstance(index, Searcher) else Searcher(index, model=model, device=device,
                                                                  precision=precision)
    missing = [c for c in BOUNDS_COLUMNS if c not in searcher.metadata.columns]
    if missing:
        raise ValueError(f"{searcher.index_dir}: the metadata has no chip footprints (no '{missing[0]}' column); "
                         "RvA needs an index of georeferenced chips, e.g. `geovl embed scene.tif` then "
                         "`geovl index build`")
    k = min(max_chips, len(searcher))
    from tqdm.auto import tqdm

    rankings: list[list[tuple[Any, ...] | None]] = []
    for lo in tqdm(range(0, len(items), _BATCH), desc="rva queries", unit="batch", disable=not progress):
        hits = searcher.search_batch([q.query for q in items[lo:lo + _BATCH]], k=k)
        rankings += [[_footprint(h.metadata) for h in found] for found in hits]
    result = recall_vs_area(rankings, [q.target for q in items], cover=cover, ids=[q.id for q in items],
                            area_range=area_range)
    return _report(result, items, searcher, queries, k, max_chips, time.perf_counter() - start)


def _report(result: RvaResult, items: Sequence[RvaQuery], searcher: Searcher, queries: Any, k: int,
            max_chips: int, seconds: float) -> EvalReport:
    at = result.area_at_recall
    per_query = [{"id": o.id, "query": str(q.query), "kind": "image" if q.image else "text", "target": q.target,
                  "found": o.found, "area_to_find_km2": o.area_to_find_km2, "chips_to_find": o.chips_to_find,
                  "best_cover": 100 * o.best_cover, "searched_km2": o.searched_km2, "chips": o.chips}
                 for o, q in zip(result.outcomes, items, strict=True)]
    outcomes = result.outcomes  # the hardest first: not found, then by area to find
    hardest = sorted(range(len(outcomes)), key=lambda i: (outcomes[i].found, -(outcomes[i].area_to_find_km2 or 0)))
    notes = [f"{100 * p:g}% recall is not reached within {max_chips} chips per query (recall there: "
             f"{100 * result.found / len(items):.1f}%)" for p, a in at.items() if a is None]
    rng = result.area_range_km2
    files = [searcher.index_dir] + ([Path(queries)] if isinstance(queries, (str, os.PathLike)) else [])
    return EvalReport(
        task="rva",
        figures={"area_km2@recall50": at[0.5], "area_km2@recall90": at[0.9],
                 "recall@max_chips": 100 * result.found / len(items),
                 "auc_log_area": None if result.auc_log_area is None else 100 * result.auc_log_area,
                 "queries": len(items)},
        units={"area_km2@recall50": "km²", "area_km2@recall90": "km²", "auc_log_area": "%", "queries": ""},
        protocol=PROTOCOL.format(queries=len(items), chips=len(searcher), k=k, radius=EARTH_RADIUS_KM,
                                 cover=100 * result.cover, exact=result.exact_up_to_km2,
                                 lo=f"{rng[0]:g}" if rng else "-", hi=f"{rng[1]:g}" if rng else "-"),
        model=searcher.model,
        dataset={"name": searcher.index_dir.name, "path": str(searcher.index_dir.resolve()), "format": "geovl-index",
                 "counts": {"chips": len(searcher), "queries": len(items)},
                 "fingerprint": dataset_fingerprint(files)},
        details={"curve": [{"area_km2": float(a), "recall": 100 * float(r)}
                           for a, r in zip(result.area_km2, result.recall, strict=True)],
                 "area_range_km2": rng, "exact_up_to_km2": result.exact_up_to_km2, "per_query": per_query,
                 "examples": [{key: r[key] for key in ("id", "query", "area_to_find_km2", "chips_to_find",
                                                       "best_cover")} for r in (per_query[i] for i in hardest[:10])],
                 "notes": notes},
        settings={"max_chips": max_chips, "k": k, "cover": result.cover, "area_range_km2": rng,
                  "index_type": searcher.manifest.get("index_type"),
                  "queries_file": None if len(files) == 1 else str(files[1])},
        seconds=seconds,
    )


# ---------------------------------------------------------------- reports


def plot_recall_vs_area(
    areas_to_find: Sequence[float | None],
    path: PathLike,
    *,
    area_range: tuple[float, float],
    exact_up_to_km2: float | None = None,
    title: str = "Recall vs searched area",
) -> Path:
    """The step curve recall(A) (percent) against searched area (km², log axis), written atomically as a PNG.

    Args:
        areas_to_find: per query, its area to find in km² (``None``: not found).
        path: the PNG file.
        area_range: ``(min, max)`` km² of the x axis.
        exact_up_to_km2: draw where the curve turns into a lower bound.
        title: the plot's title.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lo, hi = area_range
    n = max(len(areas_to_find), 1)
    found = np.sort([a for a in areas_to_find if a is not None and lo * (1 - _TOL) <= a <= hi * (1 + _TOL)])
    start = sum(a is not None and a < lo for a in areas_to_find)
    xs = np.concatenate([[lo], found, [hi]])
    ys = 100 * np.concatenate([[start], start + np.arange(1, found.size + 1), [start + found.size]]) / n
    fig = Figure(figsize=(6.4, 4.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.step(xs, ys, where="post", color="#1f77b4", linewidth=2, label="recall")
    for level in RECALL_LEVELS:
        ax.axhline(100 * level, color="0.6", linewidth=0.8, linestyle=":")
    if exact_up_to_km2 is not None and lo < exact_up_to_km2 < hi:
        ax.axvline(exact_up_to_km2, color="#d62728", linewidth=1, linestyle="--",
                   label="lower bound beyond (max chips reached)")
        ax.legend(loc="upper left", frameon=False)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi if hi > lo else lo * 10)
    ax.set_ylim(0, 100)
    ax.set_xlabel("searched area (km², union of inspected chips)")
    ax.set_ylabel("recall (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI, facecolor="white"))


def write_rva_report(report: EvalReport, out_dir: PathLike, *, stem: str = "rva") -> dict[str, Path]:
    """Write the RvA curve (``<stem>_recall_area.png``) and the report (:func:`geovl.eval.report.write_report`) into
    ``out_dir``; returns ``{"json", "markdown", "plot"}`` paths (no plot when the curve has no range)."""
    out = Path(out_dir)
    files: dict[str, Path] = {}
    rng = report.details.get("area_range_km2")
    if rng:
        areas = [row["area_to_find_km2"] for row in report.details["per_query"]]
        files["plot"] = plot_recall_vs_area(
            areas, out / f"{stem}_recall_area.png", area_range=(rng[0], rng[1]),
            exact_up_to_km2=report.details.get("exact_up_to_km2"),
            title=f"Recall vs searched area: {model_label(report)}")
        report.details["plot"] = files["plot"].name
    return {**write_report(report, out, stem=stem), **files}


def format_rva_table(report: EvalReport) -> str:
    """A plain-text table of the report: recall at 1-2-5 areas of the curve, then the headline figures."""
    curve = report.details.get("curve") or []
    rows = [r for r in curve if _is_125(r["area_km2"]) or r is curve[0] or r is curve[-1]]
    lines = [f"{'searched km²':>14}  {'recall %':>8}"]
    lines += [f"{r['area_km2']:>14.6g}  {r['recall']:>8.1f}" for r in rows]
    for name in ("area_km2@recall50", "area_km2@recall90"):
        value = report.figures.get(name)
        lines.append(f"{name}: " + ("not reached" if value is None else f"{value:.6g} km²"))
    lines.append(f"recall@max_chips: {report.figures['recall@max_chips']:.1f}% of {report.figures['queries']} "
                 f"queries (max {report.settings['max_chips']} chips each)")
    auc = report.figures.get("auc_log_area")
    if auc is not None:
        rng = report.details["area_range_km2"]
        lines.append(f"auc_log_area: {auc:.1f}% over {rng[0]:g}-{rng[1]:g} km²")
    return "\n".join(lines)


def _is_125(area: float) -> bool:
    """1, 2 or 5 times a power of ten."""
    mantissa = area / 10.0 ** math.floor(math.log10(area))
    return any(abs(mantissa - m) < 1e-6 for m in (1.0, 2.0, 5.0, 10.0))
