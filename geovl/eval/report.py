"""Evaluation reports: one JSON record, one readable Markdown summary and the plots, written atomically.

Every evaluation run produces an :class:`EvalReport` and hands it to :func:`write_report`, which writes into one
folder::

    <stem>.json            the full record (sorted keys, numpy values converted, NaN/inf -> null)
    <stem>.md              the summary people read: figures, protocol, per-class table, provenance
    <stem>_<plot>.png      the plots that ``details`` has data for (see :data:`PLOT_KINDS`)

``stem`` defaults to the task name. All files of one report are rendered to hidden temporary files first
(:func:`geovl.io.fs.temp_sibling`) and only then moved into place with :func:`os.replace`, so a failure half-way (a
plot that raises, a value that is not JSON-serialisable, a full disk) leaves any earlier report in that folder
untouched and no temporary files behind.

The record is :class:`~geovl.eval.report_record.EvalReport` (:mod:`geovl.eval.report_record`), the Markdown comes
from :mod:`geovl.eval.report_markdown`, the plots from :mod:`geovl.eval.plots` and the dataset fingerprint from
:mod:`geovl.eval.fingerprint`; this module re-exports their public names.

The ``details`` keys that the writers understand (all optional; anything else is kept in the JSON only):

``"curves"``
    ``{"i2t": {k: R@k %}, "t2i": {k: R@k %}}`` (any direction names, e.g. ``{"recall": {...}}`` for an index)
    -> a recall@k table and ``<stem>_recall.png``.
``"confusion"``
    ``{"matrix": [[count, ...], ...], "classes": [name, ...]}``, rows are true classes and columns predictions
    -> the most confused pairs and ``<stem>_confusion.png``.
``"per_class"``
    ``{class: value %}`` -> a table sorted worst first and ``<stem>_per_class.png``. The value is accuracy
    unless ``"per_class_metric"`` names another (``"Recall"``, ``"F1"``).
``"suite"``
    ``{dataset: value}`` or ``{dataset: {figure: value, ...}}`` -> one row per dataset plus the average of
    each rate column, and ``<stem>_datasets.png``. ``"suite_metric"`` names the value (or the column to plot;
    default: the value is called ``"score"``, the plotted column is the first one); ``"missing"``
    (``[dataset]`` or ``{dataset: reason}``) lists the datasets that were not evaluated.
``"examples"``
    ``[{column: value}, ...]`` -> a table of the first :data:`~geovl.eval.report_markdown.MAX_EXAMPLES` examples.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from geovl.eval.fingerprint import ANNOTATION_SUFFIXES, dataset_fingerprint
from geovl.eval.report_markdown import render_markdown
from geovl.eval.report_record import (
    DATASET_KEYS,
    MODEL_KEYS,
    REPORT_FORMAT,
    STEM_PATTERN,
    EvalReport,
    host_info,
    load_report,
    model_label,
    per_class_label,
    suite_metric_values,
)
from geovl.io.fs import atomic_write_json, atomic_write_text, temp_sibling
from geovl.io.jsonable import to_jsonable

__all__ = [
    "ANNOTATION_SUFFIXES",
    "DATASET_KEYS",
    "MODEL_KEYS",
    "PLOT_KINDS",
    "REPORT_FORMAT",
    "EvalReport",
    "dataset_fingerprint",
    "host_info",
    "load_report",
    "render_markdown",
    "to_jsonable",
    "write_report",
]

logger = logging.getLogger(__name__)

PLOT_KINDS: dict[str, str] = {
    "curves": "recall",
    "confusion": "confusion",
    "per_class": "per_class",
    "suite": "datasets",
}
"""``details`` key -> file-name suffix of the plot made from it (``<stem>_<suffix>.png``)."""


def write_report(
    report: EvalReport,
    out_dir: str | os.PathLike[str],
    *,
    plots: bool = True,
    stem: str | None = None,
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and the plots the report's ``details`` call for into ``out_dir``.

    Args:
        report: the evaluation outcome.
        out_dir: folder to write into (created if needed). Files of an earlier report with the same stem are
            replaced only once every new file has been rendered.
        plots: make PNG plots (with matplotlib).
        stem: file-name stem; defaults to ``report.task``. Use it to keep several reports of one task in one
            folder (``"retrieval-rsicd"``).

    Returns:
        ``{"json": path, "markdown": path, <details key>: png path, ...}``.

    Raises:
        MissingDependencyError: ``plots=True`` without matplotlib; nothing is written.
        TypeError: a value in the report cannot be stored as JSON; nothing is written.
    """
    stem = stem or report.task
    if not STEM_PATTERN.match(stem):
        raise ValueError(f"stem {stem!r} must be letters, digits, '-', '_' or '.' (it names the report's files)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    record = report.to_dict()  # first, so that a value JSON cannot store fails before any plotting
    staged: dict[Path, Path] = {}  # final path -> rendered temporary file
    try:
        plot_files: dict[str, str] = {}
        if plots:
            for key, make in _plot_makers(report).items():
                final = out / f"{stem}_{PLOT_KINDS[key]}.png"
                _stage(staged, final, make)
                plot_files[key] = final.name
        record["plots"] = plot_files
        _stage(staged, out / f"{stem}.json", lambda tmp: atomic_write_json(tmp, record, sort_keys=True))
        markdown = render_markdown(report, plots=plot_files)
        _stage(staged, out / f"{stem}.md", lambda tmp: atomic_write_text(tmp, markdown))
        for final, tmp in staged.items():
            os.replace(tmp, final)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)  # a no-op for the files already moved into place
    logger.info("wrote %s report to %s (%d files)", report.task, out, len(staged))
    written = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    written.update({key: out / name for key, name in plot_files.items()})
    return written


def _stage(staged: dict[Path, Path], final: Path, make: Callable[[Path], object]) -> None:
    """Render one file of the report to a new temporary file next to ``final`` (``make(temp_path)``), recorded in
    ``staged`` so that :func:`write_report` moves it into place or removes it."""
    staged[final] = temp_sibling(final)
    make(staged[final])


def _plot_makers(report: EvalReport) -> dict[str, Callable[[Path], Path]]:
    """The plots ``report.details`` has data for, each a function of the output path."""
    details = report.details
    wanted = [key for key in PLOT_KINDS if details.get(key)]
    if not wanted:
        return {}
    from geovl.eval import plots  # matplotlib is only needed when there is something to draw

    plots.require_matplotlib()  # raise MissingDependencyError before any work is done
    name = model_label(report)
    makers: dict[str, Callable[[Path], Path]] = {}
    if "curves" in wanted:
        curves = details["curves"]
        makers["curves"] = lambda p: plots.plot_recall_curves(curves, p, title=f"Recall@k: {name}")
    if "confusion" in wanted:
        conf = details["confusion"]
        makers["confusion"] = lambda p: plots.plot_confusion_matrix(
            conf["matrix"], conf["classes"], p, title=f"Confusion matrix: {name}"
        )
    if "per_class" in wanted:
        per_class = details["per_class"]
        what = per_class_label(report)
        makers["per_class"] = lambda p: plots.plot_per_class(
            per_class, p, title=f"Per-class {what.lower()}: {name}", xlabel=f"{what} (%)"
        )
    if "suite" in wanted:
        metric, values = suite_metric_values(details)
        unit = report.unit(metric)
        ylabel = f"{metric} ({unit})" if unit else metric
        makers["suite"] = lambda p: plots.plot_suite(values, p, title=f"{metric} per dataset: {name}", ylabel=ylabel)
    return makers
