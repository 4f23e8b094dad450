"""Evaluation reports: one JSON record, one readable Markdown summary and the plots, written atomically.

Every evaluation run produces an :class:`EvalReport` and hands it to :func:`write_report`, which writes into one
folder::

    <stem>.json            the full record (sorted keys, numpy values converted, NaN/inf -> null)
    <stem>.md              the summary people read: figures, protocol, per-class table, provenance
    <stem>_<plot>.png      the plots that ``details`` has data for (see :data:`PLOT_KINDS`)

``stem`` defaults to the task name. All files of one report are rendered to hidden temporary files first and
only then moved into place with :func:`os.replace`, so a failure half-way (a plot that raises, a value that is not
JSON-serialisable, a full disk) leaves any earlier report in that folder untouched and no temporary files behind.

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
    ``[{column: value}, ...]`` -> a table of the first :data:`MAX_EXAMPLES` examples.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import geovl

__all__ = [
    "ANNOTATION_SUFFIXES",
    "DATASET_KEYS",
    "MODEL_KEYS",
    "PLOT_KINDS",
    "EvalReport",
    "atomic_write",
    "dataset_fingerprint",
    "host_info",
    "load_report",
    "render_markdown",
    "to_jsonable",
    "write_report",
]

logger = logging.getLogger(__name__)

REPORT_FORMAT = 1
"""Version of the JSON layout, stored as ``format_version``; bumped when a key changes meaning."""

MODEL_KEYS: tuple[str, ...] = ("name", "architecture", "checkpoint", "checkpoint_sha256", "precision", "device")
"""Keys every report's ``model`` has (``None`` when unknown), as filled by ``geovl.models.record.model_record``."""

DATASET_KEYS: tuple[str, ...] = ("name", "path", "format", "split", "counts", "fingerprint")
"""Keys every report's ``dataset`` has (``None`` when unknown); ``fingerprint`` comes from
:func:`dataset_fingerprint`."""

PLOT_KINDS: dict[str, str] = {
    "curves": "recall",
    "confusion": "confusion",
    "per_class": "per_class",
    "suite": "datasets",
}
"""``details`` key -> file-name suffix of the plot made from it (``<stem>_<suffix>.png``)."""

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

ANNOTATION_SUFFIXES: frozenset[str] = frozenset(
    {".json", ".jsonl", ".csv", ".tsv", ".txt", ".yaml", ".yml", ".xml", ".geojson"}
)
"""Files whose full content :func:`dataset_fingerprint` hashes; every other file counts by path and size."""

_PERCENT_NAME = re.compile(r"(R@\d+|recall|acc|top-?\d+|mAP|precision|f1)", re.IGNORECASE)
_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------------- the record


@functools.lru_cache(maxsize=1)
def host_info() -> dict[str, Any]:
    """Where the evaluation ran: platform, Python/torch/numpy versions, CPU model and core count, GPU name."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "numpy": None,
        "torch": None,
        "cuda": None,
        "gpu": None,
    }
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover - a broken CUDA install must not stop a report
        logger.debug("could not query torch for the host record", exc_info=True)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class EvalReport:
    """The outcome of one evaluation run, with everything needed to reproduce and compare it.

    Attributes:
        task: what was evaluated: ``"retrieval"``, ``"zeroshot"``, ``"linear-probe"``, ``"knn"``, ``"caption"``,
            ``"change-caption"``, ``"generation"``, ``"index"``, ``"suite"`` (others are allowed).
        figures: headline numbers by name, e.g. ``{"i2t_R@1": 12.3, "mean_recall": 20.1}``; rates are
            percentages (0-100). ``None`` for a figure that could not be computed.
        protocol: one paragraph saying exactly what was computed (split, captions per image, what counts as a
            hit, averaging), so that a reader can compare with published numbers.
        model: the backbone's identity (``geovl.models.record.model_record``); always has :data:`MODEL_KEYS`.
        dataset: name, path, format, split, counts and fingerprint; always has :data:`DATASET_KEYS`.
        details: task-specific data; the keys the writers render are listed in this module's docstring.
        settings: how it was run (batch size, templates, k, seeds, ...).
        units: unit per figure name (``"%"``, ``"s"``, ``"img/s"``); figures without an entry get ``"%"`` when
            their name looks like a rate (``R@k``, ``recall``, ``acc``, ``top1``, ``mAP``, ``precision``,
            ``f1``) and no unit otherwise.
        seconds: wall-clock duration of the evaluation, or ``None``.
        geovl_version, created, host: filled in automatically (package version, ISO-8601 UTC time, and
            :func:`host_info`).
    """

    task: str
    figures: dict[str, float | int | None]
    protocol: str
    model: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    seconds: float | None = None
    geovl_version: str = geovl.__version__
    created: str = field(default_factory=_utc_now)
    host: dict[str, Any] = field(default_factory=host_info)

    def __post_init__(self) -> None:
        if not self.task or not _STEM.match(self.task):
            raise ValueError(
                f"task {self.task!r} must be a short name of letters, digits, '-', '_' or '.' (e.g. 'retrieval'); "
                "it names the report's files"
            )
        # Copies, so that filling in missing keys never changes the caller's dicts.
        self.model = {**dict.fromkeys(MODEL_KEYS), **self.model}
        self.dataset = {**dict.fromkeys(DATASET_KEYS), **self.dataset}
        self.figures = dict(self.figures)
        self.host = dict(self.host)

    def unit(self, figure: str) -> str:
        """The unit of ``figure``: from :attr:`units`, else ``"%"`` for rate-like names, else ``""``."""
        if figure in self.units:
            return self.units[figure]
        return "%" if _PERCENT_NAME.search(figure) else ""

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (see :func:`to_jsonable`), without the ``plots`` that
        :func:`write_report` adds."""
        data = to_jsonable(dataclasses.asdict(self))
        data["units"] = {**self.units, **{name: self.unit(name) for name in self.figures}}
        data["format_version"] = REPORT_FORMAT
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalReport:
        """Rebuild a report from :meth:`to_dict` output or a loaded ``<stem>.json``.

        JSON has string keys only, so a recall curve's ``k`` comes back as ``"1"``; the plot functions accept
        both.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def load_report(path: str | os.PathLike[str]) -> EvalReport:
    """Read a report written by :func:`write_report` (the ``.json`` file)."""
    with open(path, encoding="utf-8") as fh:
        return EvalReport.from_dict(json.load(fh))


def to_jsonable(value: Any, _where: str = "report") -> Any:
    """``value`` as plain JSON data: numpy/torch scalars and arrays become numbers and lists, NaN and +-inf
    become ``None``, paths become strings, tuples and sets become lists, non-string keys become strings.

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
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value), _where)
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist):
        return to_jsonable(tolist(), _where)
    raise TypeError(f"{_where} holds a {type(value).__name__}, which a report cannot store as JSON: {value!r:.80}")


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    plain = to_jsonable(key)
    if isinstance(plain, (str, int, float, bool)) or plain is None:
        return str(plain)
    raise TypeError(f"report dict key {key!r} is not a string or number")


# ---------------------------------------------------------------------------------------------------- writing


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
        plots: make PNG plots (needs matplotlib, the ``eval`` extra).
        stem: file-name stem; defaults to ``report.task``. Use it to keep several reports of one task in one
            folder (``"retrieval-rsicd"``).

    Returns:
        ``{"json": path, "markdown": path, <details key>: png path, ...}``.

    Raises:
        MissingDependencyError: ``plots=True`` without matplotlib; nothing is written.
        TypeError: a value in the report cannot be stored as JSON; nothing is written.
    """
    stem = stem or report.task
    if not _STEM.match(stem):
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
                staged[final] = _temp_sibling(final, ".staged")
                make(staged[final])
                plot_files[key] = final.name
        record["plots"] = plot_files
        text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"
        _stage_text(staged, out / f"{stem}.json", text)
        _stage_text(staged, out / f"{stem}.md", render_markdown(report, plots=plot_files))
        for final, tmp in staged.items():
            os.replace(tmp, final)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)  # a no-op for the files already moved into place
    logger.info("wrote %s report to %s (%d files)", report.task, out, len(staged))
    written = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    written.update({key: out / name for key, name in plot_files.items()})
    return written


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Create ``path`` by calling ``write(binary_file)`` on a temporary file in the same folder, then renaming
    it over ``path``; on any error the temporary file is removed and ``path`` is left as it was."""
    target = Path(path)
    tmp = _temp_sibling(target, ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _temp_sibling(target: Path, suffix: str) -> Path:
    """Create an empty, hidden, uniquely named file next to ``target`` (mode 0666 less the umask, unlike
    :func:`tempfile.mkstemp`'s 0600, so that reports stay readable by others)."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {target}")


def _stage_text(staged: dict[Path, Path], final: Path, text: str) -> None:
    staged[final] = _temp_sibling(final, ".staged")
    data = text.encode("utf-8")

    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    atomic_write(staged[final], write)


def _plot_makers(report: EvalReport) -> dict[str, Callable[[Path], Path]]:
    """The plots ``report.details`` has data for, each a function of the output path."""
    details = report.details
    wanted = [key for key in PLOT_KINDS if details.get(key)]
    if not wanted:
        return {}
    from geovl.eval import plots  # matplotlib is only needed when there is something to draw

    plots.require_matplotlib()  # raise MissingDependencyError before any work is done
    name = _model_name(report)
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
        what = _per_class_label(report)
        makers["per_class"] = lambda p: plots.plot_per_class(
            per_class, p, title=f"Per-class {what.lower()}: {name}", xlabel=f"{what} (%)"
        )
    if "suite" in wanted:
        metric, values = _suite_metric_values(details)
        unit = report.unit(metric)
        ylabel = f"{metric} ({unit})" if unit else metric
        makers["suite"] = lambda p: plots.plot_suite(values, p, title=f"{metric} per dataset: {name}", ylabel=ylabel)
    return makers


# --------------------------------------------------------------------------------------------------- markdown


def render_markdown(report: EvalReport, plots: Mapping[str, str] | None = None) -> str:
    """The report as Markdown: title, figures table, protocol, suite and per-class tables, plots, provenance.

    Args:
        report: the report.
        plots: ``{details key: PNG path relative to the Markdown file}``, as written by :func:`write_report`.
    """
    plots = plots or {}
    details = report.details
    title = TASK_TITLES.get(report.task, report.task)
    dataset_name = report.dataset.get("name")
    split = report.dataset.get("split")
    on = f" on {dataset_name}" + (f" ({split})" if split else "") if dataset_name else ""
    lines = [f"# {title}: {_model_name(report)}{on}", ""]
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
    metric, _ = _suite_metric_values(report.details)
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
            if _as_float(cells.get(c)) is not None:
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
    what = _per_class_label(report)
    ordered = sorted(per_class.items(), key=lambda kv: (_as_float(kv[1]) is None, _as_float(kv[1]) or 0.0, kv[0]))
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


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _model_name(report: EvalReport) -> str:
    return str(report.model.get("name") or report.model.get("architecture") or "unknown model")


def _per_class_label(report: EvalReport) -> str:
    return str(report.details.get("per_class_metric") or "Accuracy")


def _suite_metric_values(details: Mapping[str, Any]) -> tuple[str, dict[str, float | None]]:
    """The suite's headline metric and its value per dataset (``None`` where a row lacks it)."""
    rows: Mapping[str, Any] = details["suite"]
    metric = details.get("suite_metric")
    if metric is None:
        first = next((v for v in rows.values() if isinstance(v, Mapping) and v), None)
        metric = next(iter(first)) if first else "score"
    values = {name: _as_float(v.get(metric) if isinstance(v, Mapping) else v) for name, v in rows.items()}
    return str(metric), values


# ------------------------------------------------------------------------------------------------ fingerprint


def dataset_fingerprint(
    path_or_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    files: Sequence[str | os.PathLike[str]] | None = None,
    max_bytes_per_file: int | None = None,
) -> str:
    """A sha256 (hex) that identifies a dataset on disk, cheap enough for folders of 10k+ images.

    What it covers, for every file found (see below), keyed by its POSIX path relative to its root:

    - annotation files (suffix in :data:`ANNOTATION_SUFFIXES`: JSON, JSONL, CSV, TSV, TXT, YAML, XML,
      GeoJSON): the sha256 of their full content;
    - every other file (images, GeoTIFFs, tars, parquet, ...): its size in bytes, plus the sha256 of its first
      ``max_bytes_per_file`` bytes when that is given. Images are not read by default, so re-encoding an image
      to the very same size goes unnoticed; pass ``max_bytes_per_file`` for a stronger check.

    It does not cover absolute locations, modification times, permissions, or the order in which the
    file system lists a folder, so a copy of the dataset elsewhere has the same fingerprint. Which files:

    - a folder root: every file below it, recursively, skipping names that start with ``.`` (``.DS_Store``,
      ``.git``, ``.ipynb_checkpoints``) and not following symlinked folders;
    - a file root: that file, keyed by its name;
    - ``files=``: exactly these files (relative to the single folder root, or absolute paths inside it), e.g. the
      images and annotation file of one split when the folder holds more.

    Several roots are pooled: all entries are sorted by key, so the order of the roots does not matter.

    Exactly: each file gives the line ``"<key>\\t<content|size>\\t<bytes>\\t<sha256 of content or head, or ->\\n"``;
    the fingerprint is the sha256 of ``"geovl-dataset-fingerprint/1\\n"``, then ``"head=<N>\\n"`` when
    ``max_bytes_per_file`` is given, then the sorted lines.

    Args:
        path_or_paths: a dataset folder or file, or several.
        files: restrict the fingerprint to these files under the single folder ``path_or_paths``.
        max_bytes_per_file: also hash the first this many bytes of each non-annotation file.

    Raises:
        FileNotFoundError: a root or a listed file does not exist.
    """
    if isinstance(path_or_paths, (str, os.PathLike)):
        path_or_paths = [path_or_paths]
    roots = [Path(p) for p in path_or_paths]
    if not roots:
        raise ValueError("dataset_fingerprint needs at least one path")
    if max_bytes_per_file is not None and max_bytes_per_file < 0:
        raise ValueError(f"max_bytes_per_file must be >= 0, got {max_bytes_per_file}")
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"dataset path {root} does not exist")

    entries: list[tuple[str, Path]] = []
    if files is not None:
        if len(roots) != 1 or not roots[0].is_dir():
            raise ValueError("files= needs exactly one dataset folder as path_or_paths (the files' common root)")
        root = roots[0]
        for f in files:
            path = Path(f) if Path(f).is_absolute() else root / f
            if not path.is_file():
                raise FileNotFoundError(f"dataset file {path} does not exist")
            try:
                key = path.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                raise ValueError(f"{path} is not inside the dataset folder {root}") from None
            entries.append((key, path))
    else:
        for root in roots:
            entries += _walk(root)

    digest = hashlib.sha256(b"geovl-dataset-fingerprint/1\n")
    if max_bytes_per_file:
        digest.update(f"head={max_bytes_per_file}\n".encode())
    n_content = 0
    for line in sorted(_entry_line(key, path, max_bytes_per_file) for key, path in entries):
        digest.update(line.encode("utf-8"))
        n_content += line.split("\t", 2)[1] == "content"
    logger.debug(
        "fingerprinted %d files (%d annotation files by content) under %s",
        len(entries),
        n_content,
        ", ".join(map(str, roots)),
    )
    return digest.hexdigest()


def _walk(root: Path) -> list[tuple[str, Path]]:
    if root.is_file():
        return [(root.name, root)]
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                path = Path(folder, name)
                found.append((path.relative_to(root).as_posix(), path))
    return found


def _entry_line(key: str, path: Path, head: int | None) -> str:
    size = path.stat().st_size
    if path.suffix.lower() in ANNOTATION_SUFFIXES:
        return f"{key}\tcontent\t{size}\t{_file_sha256(path)}\n"
    head_hash = "-"
    if head:
        with open(path, "rb") as fh:
            head_hash = hashlib.sha256(fh.read(head)).hexdigest()
    return f"{key}\tsize\t{size}\t{head_hash}\n"


def _file_sha256(path: Path) -> str:
    # geovl.models.weights.sha256_file is the one implementation; imported here because geovl.models pulls in torch
    # and open_clip, which report readers and writers do not otherwise need.
    from geovl.models.weights import sha256_file

    return sha256_file(path)
