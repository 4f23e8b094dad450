"""PNG plots for evaluation reports: recall@k curves, confusion matrices, per-class bars and suite bars.

matplotlib is imported on first use, so ``import geovl.eval.report`` stays light. Figures are drawn
with matplotlib's object API on the Agg canvas: no pyplot state, no global backend switch, safe in servers and
notebooks. Every function writes its file atomically (:func:`geovl.io.fs.atomic_write`) and returns the path.
Rates are percentages (0-100). This module imports nothing from the report modules: :mod:`geovl.eval.report` calls
it, never the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from geovl._optional import require
from geovl.io.fs import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "plot_confusion_matrix",
    "plot_per_class",
    "plot_recall_curves",
    "plot_suite",
    "require_matplotlib",
]

DPI = 120
"""Resolution of every plot, in dots per inch."""

ANNOTATE_MAX_CLASSES = 25
"""Confusion matrices with at most this many classes get the value written in each cell."""

_DIRECTIONS = {"i2t": "image → text (i2t)", "t2i": "text → image (t2i)"}
_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.8}
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def require_matplotlib() -> ModuleType:
    """Import matplotlib or raise :class:`geovl._optional.MissingDependencyError` saying how to install it."""
    return require("matplotlib", extra=None, feature="evaluation plots")


def plot_recall_curves(
    curves: Mapping[str, Mapping[int | str, float | None]],
    path: str | Path,
    *,
    title: str = "Recall@k",
) -> Path:
    """Recall@k against k (log scale) for each retrieval direction.

    Args:
        curves: ``{"i2t": {1: 12.3, 5: 30.1, ...}, "t2i": {...}}``, R@k in percent; keys may be ints or the
            strings JSON turns them into. Other direction names are plotted under their own name.
        path: PNG file to write.
        title: plot title.
    """
    fig, ax = _figure(6.4, 4.4)
    all_k: set[int] = set()
    top = 0.0
    for i, (direction, curve) in enumerate(curves.items()):
        points = sorted((int(k), v) for k, raw in curve.items() if (v := _number(raw)) is not None)
        if not points:
            continue
        ks = [k for k, _ in points]
        values = [v for _, v in points]
        all_k.update(ks)
        top = max(top, *values)
        color = _COLORS[i % len(_COLORS)]
        ax.plot(
            ks,
            values,
            marker="o",
            markersize=4,
            linewidth=1.8,
            color=color,
            label=_DIRECTIONS.get(direction, direction),
        )
        if len(points) <= 10:
            for k, v in points:
                ax.annotate(
                    f"{v:.1f}",
                    (k, v),
                    textcoords="offset points",
                    xytext=(0, 7 if i % 2 == 0 else -13),
                    ha="center",
                    fontsize=7.5,
                    color=color,
                )
    ax.set_xscale("log")
    if all_k:
        _fixed_ticks(ax, sorted(all_k))
    ax.set_ylim(0, 105 if top <= 100 else top * 1.08)
    ax.set_xlabel("k (log scale)")
    ax.set_ylabel("Recall@k (%)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if all_k:
        ax.legend(loc="lower right", frameon=False)
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """A confusion matrix as a heat map, true classes as rows and predictions as columns.

    Args:
        matrix: ``(C, C)`` counts; ``matrix[i][j]`` is how many samples of class ``i`` were predicted as ``j``.
        class_names: the ``C`` class names, in matrix order.
        path: PNG file to write.
        normalize: show each row as a percentage of its true class (rows with no samples stay 0); otherwise
            raw counts.
        title: plot title.

    Cells hold their value when there are at most :data:`ANNOTATE_MAX_CLASSES` classes; larger matrices (45
    classes for NWPU-RESISC45) get a bigger canvas and smaller labels instead.
    """
    m = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if m.ndim != 2 or m.shape != (n, n):
        raise ValueError(f"confusion matrix has shape {m.shape}, expected ({n}, {n}) for {n} class names")
    if normalize:
        totals = m.sum(axis=1, keepdims=True)
        m = np.divide(100.0 * m, totals, out=np.zeros_like(m), where=totals > 0)
        vmax = 100.0
    else:
        vmax = float(m.max()) if m.size and m.max() > 0 else 1.0
    side = min(max(4.5, 0.32 * n + 2.6), 18.0)
    fig, ax = _figure(side + 1.4, side)
    annotate = n <= ANNOTATE_MAX_CLASSES
    # Without numbers in the cells, a square-root colour scale keeps 2-10 % confusions visible next to the
    # 90 % diagonal; the colour bar shows the true values.
    from matplotlib.colors import Normalize, PowerNorm

    norm = Normalize(0.0, vmax) if annotate else PowerNorm(0.5, 0.0, vmax)
    image = ax.imshow(m, cmap="Blues", norm=norm, interpolation="nearest", aspect="equal")
    fontsize = 9.0 if n <= 15 else 8.0 if n <= 30 else 7.0
    ax.set_xticks(range(n), labels=list(class_names), rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), labels=list(class_names), fontsize=fontsize)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title + (" (% of true class)" if normalize else " (counts)"))
    ax.tick_params(length=0)
    # Thin white grid between cells keeps rows distinguishable in large matrices.
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6 if n <= 25 else 0.3)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if annotate:
        cell_font = 8.0 if n <= 12 else 6.5
        for i in range(n):
            for j in range(n):
                value = m[i, j]
                if value <= 0:
                    continue  # blank zeros keep the eye on the errors
                text = f"{value:.0f}" if (not normalize or value >= 1 or value == 0) else "<1"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=cell_font,
                    color="white" if value > 0.55 * vmax else "#222222",
                )
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, shrink=0.8)
    colorbar.set_label(("% of true class" if normalize else "samples") + ("" if annotate else " (square-root scale)"))
    return _save(fig, path)


def plot_per_class(
    values: Mapping[str, float | None],
    path: str | Path,
    *,
    title: str = "Per-class accuracy",
    xlabel: str = "Accuracy (%)",
) -> Path:
    """Horizontal bars of one figure per class, worst at the top, with the mean as a dashed line.

    Args:
        values: ``{class name: value}``, percentages (0-100); ``None``/NaN entries are left out.
        path: PNG file to write.
        title: plot title.
        xlabel: x-axis label, with its unit.
    """
    items = sorted(
        ((name, v) for name, raw in values.items() if (v := _number(raw)) is not None), key=lambda kv: (kv[1], kv[0])
    )
    n = len(items)
    fig, ax = _figure(7.0, max(2.6, 0.24 * n + 1.4))
    if items:
        names = [name for name, _ in items]
        vals = [v for _, v in items]
        mpl = require_matplotlib()
        top = max(100.0, *vals)
        colors = mpl.colormaps["RdYlGn"](np.clip(np.asarray(vals) / top, 0, 1) * 0.8 + 0.1)
        y = list(range(n))
        ax.barh(y, vals, color=colors, edgecolor="none", height=0.72)
        ax.set_yticks(y, labels=names, fontsize=9.0 if n <= 30 else 7.5)
        ax.invert_yaxis()  # worst first, reading down
        for yi, v in enumerate(vals):
            ax.text(v + top * 0.008, yi, f"{v:.1f}", va="center", fontsize=7.5 if n > 30 else 8.0, bbox=_LABEL_BOX)
        mean = sum(vals) / n
        ax.axvline(mean, color="0.25", linestyle="--", linewidth=1.0, label=f"mean {mean:.2f}")
        ax.set_xlim(0, top * 1.09)
        ax.set_ylim(n - 0.5, -0.5 - (0.9 if n > 6 else 0.6))  # room above the worst bar for the legend
        ax.legend(loc="upper right", frameon=True, framealpha=0.9, fontsize=8.5)
    else:
        _no_data(ax)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, path)


def plot_suite(
    rows: Mapping[str, float | None],
    path: str | Path,
    *,
    title: str = "Results per dataset",
    ylabel: str = "Accuracy (%)",
) -> Path:
    """One bar per dataset, in the given order, with the average of the evaluated datasets as a dashed line.

    Args:
        rows: ``{dataset: value}``; ``None``/NaN marks a dataset that was not evaluated, drawn as "missing".
        path: PNG file to write.
        title: plot title.
        ylabel: y-axis label, with its unit.
    """
    names = list(rows)
    numbers = [_number(v) for v in rows.values()]
    present = [v for v in numbers if v is not None]
    n = len(names)
    fig, ax = _figure(max(5.0, 0.75 * n + 2.2), 4.4)
    if names:
        top = max([*present, 1.0])
        if 50 < top <= 100:
            top = 100.0
        ax.bar(range(n), [v or 0.0 for v in numbers], color=_COLORS[0], width=0.65, edgecolor="none")
        for xi, v in enumerate(numbers):
            if v is not None:
                ax.text(xi, v + top * 0.012, f"{v:.1f}", ha="center", va="bottom", fontsize=8.5, bbox=_LABEL_BOX)
            else:
                ax.text(xi, top * 0.02, "missing", ha="center", va="bottom", fontsize=8, color="0.4", rotation=90)
        if present:
            average = sum(present) / len(present)
            label = f"average {average:.2f}" + (f" ({len(present)} of {n})" if len(present) < n else "")
            ax.axhline(average, color="#d62728", linestyle="--", linewidth=1.2, label=label)
            ax.legend(loc="upper right", frameon=True, framealpha=0.9, fontsize=8.5)
        tilt = max(len(s) for s in names) > 8 or n > 8
        ax.set_xticks(range(n), labels=names, rotation=30 if tilt else 0, ha="right" if tilt else "center")
        ax.set_ylim(0, top * 1.15)
    else:
        _no_data(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _save(fig: Figure, path: str | Path) -> Path:
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI, facecolor="white"))


def _fixed_ticks(ax: Axes, ks: Sequence[int]) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(list(ks)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(min(ks) / 1.25, max(ks) * 1.25)


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` for ``None``, NaN, inf and non-numbers."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
