"""Markdown summaries of evaluation reports: what people read next to the JSON record.

Layout: title (task, model, dataset, split), a line of provenance, the figures table, the protocol, then one section
per ``details`` key that has data (datasets, recall@k, per-class worst first, confusions, examples; see
:mod:`geovl.eval.report`), and the provenance tables. Tables are padded so that the raw text lines up too, and
cells are escaped so that no value breaks a table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from geovl.eval.report_record import EvalReport, finite_float, model_label, per_class_label, suite_metric_values
from geovl.io.jsonable import to_jsonable

__all__ = ["MAX_EXAMPLES", "TASK_TITLES", "render_markdown"]

MAX_EXAMPLES = 10
"""How many ``details["examples"]`` rows the Markdown shows (the JSON keeps them all)."""

TASK_TITLES: dict[str, str] = {
    "retrieval": "Image-text retrieval",
    "zeroshot": "Zero-shot classification",
    "linear-probe": "Linear probe",
    "knn": "k-NN classification",
    "caption": "Captioning",
    "change-caption": "Change captioning",
    "generation": "Text-to-image generation",
    "index": "Index recall",
    "suite": "Benchmark suite",
}


def render_markdown(report: EvalReport, plots: Mapping[str, str] | None = None) -> str:
    """The report as Markdown: title, figures table, protocol, suite and per-class tables, plots, provenance.

    Args:
        report: the report.
        plots: ``{details key: PNG path relative to the Markdown file}``, as written by
            :func:`geovl.eval.report.write_report`.
    """
    plots = plots or {}
    details = report.details
    title = TASK_TITLES.get(report.task, report.task)
    dataset_name = report.dataset.get("name")
    split = report.dataset.get("split")
    on = f" on {dataset_name}" + (f" ({split})" if split else "") if dataset_name else ""
    lines = [f"# {title}: {model_label(report)}{on}", ""]
    when = report.created.replace("T", " ").replace("+00:00", " UTC")
    ran_on = report.host.get("gpu") or report.host.get("cpu")
    meta = [f"geovl {report.geovl_version}", when]
    if report.seconds is not None:
        meta.append(f"{_duration(report.seconds)}" + (f" on {ran_on}" if ran_on else ""))
    lines += ["_" + " · ".join(meta) + "_", ""]

    lines += ["## Figures", ""]
    if report.figures:
        rows = [[f"`{name}`", _fmt_value(value, report.unit(name))] for name, value in report.figures.items()]
        lines += [*_table(["Figure", "Value"], rows, align="lr"), ""]
    else:
        lines += ["_No figures._", ""]

    lines += ["## Protocol", "", report.protocol.strip() or "_Not described._", ""]

    if details.get("suite"):
        lines += _suite_section(report, plots.get("suite"))
    if details.get("curves"):
        lines += _recall_section(details["curves"], plots.get("curves"))
    if details.get("per_class"):
        lines += _per_class_section(report, details["per_class"], plots.get("per_class"))
    if details.get("confusion"):
        lines += _confusion_section(details["confusion"], plots.get("confusion"))
    if details.get("examples"):
        lines += _examples_section(details["examples"])

    lines += ["## Provenance", "", "### Model", ""]
    lines += [*_kv_table(report.model), "", "### Dataset", ""]
    lines += [*_kv_table(report.dataset), ""]
    if report.settings:
        lines += ["### Settings", "", *_kv_table(report.settings), ""]
    host = {"geovl": report.geovl_version, "created": report.created, "seconds": report.seconds, **report.host}
    lines += ["### Host", "", *_kv_table(host), ""]
    return "\n".join(lines)


def _suite_section(report: EvalReport, plot: str | None) -> list[str]:
    rows_in: Mapping[str, Any] = report.details["suite"]
    metric, _ = suite_metric_values(report.details)
    columns: list[str] = [metric]
    for value in rows_in.values():
        if isinstance(value, Mapping):
            columns += [c for c in value if c not in columns]
    table_rows = []
    column_values: dict[str, list[Any]] = {c: [] for c in columns}
    for dataset, value in rows_in.items():
        cells = value if isinstance(value, Mapping) else {metric: value}
        table_rows.append([dataset] + [_fmt_value(cells.get(c), "") for c in columns])
        for c in columns:
            if finite_float(cells.get(c)) is not None:
                column_values[c].append(to_jsonable(cells[c]))
    # Rates are averaged over the datasets that have them; counts (all ints, like "n") are not.
    average = ["**Average**"] + [
        _fmt_value(sum(vs) / len(vs), "") if vs and not all(isinstance(v, int) for v in vs) else ""
        for vs in column_values.values()
    ]
    headers = ["Dataset"] + [f"{c} ({report.unit(c)})" if report.unit(c) else c for c in columns]
    lines = ["## Datasets", "", *_table(headers, [*table_rows, average], align="l" + "r" * len(columns)), ""]
    evaluated = len(column_values[metric])
    lines += [f"The average weights the {evaluated} evaluated datasets equally.", ""]
    missing = report.details.get("missing") or []
    if missing:
        lines += ["**Missing** (not evaluated):", ""]
        if isinstance(missing, Mapping):
            lines += [f"- {name}: {reason}" for name, reason in missing.items()]
        else:
            lines += [f"- {name}" for name in missing]
        lines.append("")
    if plot:
        lines += [f"![{metric} per dataset]({plot})", ""]
    return lines


def _recall_section(curves: Mapping[str, Mapping[Any, Any]], plot: str | None) -> list[str]:
    directions = list(curves)
    ks = sorted({int(k) for curve in curves.values() for k in curve})
    rows = []
    for k in ks:
        row = [str(k)]
        for d in directions:
            value = {int(kk): v for kk, v in curves[d].items()}.get(k)
            row.append(_fmt_value(value, ""))
        rows.append(row)
    headers = ["k"] + [f"{_DIRECTION.get(d, d)} R@k (%)" for d in directions]
    lines = ["## Recall@k", "", *_table(headers, rows, align="r" * len(headers)), ""]
    if plot:
        lines += [f"![Recall@k]({plot})", ""]
    return lines


_DIRECTION = {"i2t": "image→text", "t2i": "text→image"}


def _per_class_section(report: EvalReport, per_class: Mapping[str, Any], plot: str | None) -> list[str]:
    what = per_class_label(report)
    ordered = sorted(per_class.items(), key=lambda kv: (finite_float(kv[1]) is None, finite_float(kv[1]) or 0.0, kv[0]))
    rows = [[str(i), name, _fmt_value(value, "")] for i, (name, value) in enumerate(ordered, 1)]
    lines = [
        f"## Per-class {what.lower()} (worst first)",
        "",
        *_table(["#", "Class", f"{what} (%)"], rows, align="rlr"),
        "",
    ]
    if plot:
        lines += [f"![Per-class {what.lower()}]({plot})", ""]
    return lines


def _confusion_section(confusion: Mapping[str, Any], plot: str | None, top: int = 10) -> list[str]:
    matrix = [[float(v) for v in row] for row in to_jsonable(confusion["matrix"])]
    classes = [str(c) for c in confusion["classes"]]
    pairs = []
    for i, row in enumerate(matrix):
        total = sum(row)
        for j, count in enumerate(row):
            if i != j and count > 0 and total > 0:
                pairs.append((count, 100.0 * count / total, classes[i], classes[j]))
    pairs.sort(key=lambda p: (-p[1], -p[0], p[2], p[3]))
    lines = ["## Confusions", ""]
    if pairs:
        rows = [[t, p, f"{c:,.0f}", f"{share:.2f}"] for c, share, t, p in pairs[:top]]
        lines += [f"The {min(top, len(pairs))} most frequent confusions, as a share of the true class:", ""]
        lines += [*_table(["True class", "Predicted as", "Count", "% of true class"], rows, align="llrr"), ""]
    else:
        lines += ["_No off-diagonal entries: every sample was classified correctly._", ""]
    if plot:
        lines += [f"![Confusion matrix]({plot})", ""]
    return lines


def _examples_section(examples: Sequence[Mapping[str, Any]]) -> list[str]:
    shown = list(examples[:MAX_EXAMPLES])
    columns: list[str] = []
    for ex in shown:
        columns += [c for c in ex if c not in columns]
    rows = [[_fmt_cell(ex.get(c)) for c in columns] for ex in shown]
    more = f" (first {len(shown)} of {len(examples)})" if len(examples) > len(shown) else ""
    return [f"## Examples{more}", "", *_table(columns, rows, align="l" * len(columns)), ""]


def _kv_table(data: Mapping[str, Any]) -> list[str]:
    rows = []
    for key, value in data.items():
        if isinstance(value, Mapping) and value and key != "counts":
            rows += [[f"{key}.{k}", _fmt_cell(v, code=_looks_like_hash(k))] for k, v in value.items()]
        else:
            rows.append([key, _fmt_cell(value, code=_looks_like_hash(key))])
    return _table(["Key", "Value"], rows, align="ll")


def _looks_like_hash(key: Any) -> bool:
    return isinstance(key, str) and ("sha" in key or "fingerprint" in key or key in ("path", "checkpoint"))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """A Markdown table padded so that the raw text lines up too; ``align`` has one ``l``/``r`` per column."""
    widths = [max([len(h), 3, *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Iterable[str]) -> str:
        padded = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if a == "r" else "-" * w for w, a in zip(widths, align, strict=True)]
    return [line(headers), line(rule), *(line(r) for r in rows)]


def _fmt_value(value: Any, unit: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        plain = to_jsonable(value)
        if isinstance(plain, (int, float)) and not isinstance(plain, bool):
            return _fmt_value(plain, unit)
        return _fmt_cell(plain)
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
    if unit == "%":
        return text + " %"
    return f"{text} {unit}" if unit else text


def _fmt_cell(value: Any, code: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.2f}" if math.isfinite(value) else "n/a"
    elif isinstance(value, Mapping):
        text = ", ".join(f"{k}: {_fmt_cell(v)}" for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_fmt_cell(v) for v in value)
    else:
        text = str(to_jsonable(value)) if not isinstance(value, str) else value
    text = " ".join(text.split()).replace("|", "\\|")
    return f"`{text}`" if code and text else text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"
