"""The evaluation report record: :class:`EvalReport`, its JSON form and the helpers that read its ``details``.

Rules: rates are percentages (0-100); ``model`` always has :data:`MODEL_KEYS` and ``dataset`` :data:`DATASET_KEYS`
(``None`` when unknown); the JSON form is plain JSON (:func:`geovl.io.jsonable.to_jsonable`: numpy values
converted, NaN/inf -> null) with ``format_version`` :data:`REPORT_FORMAT`. Writing (JSON, Markdown, plots) is
:mod:`geovl.eval.report`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import geovl
from geovl.io.jsonable import to_jsonable

__all__ = [
    "DATASET_KEYS",
    "MODEL_KEYS",
    "REPORT_FORMAT",
    "STEM_PATTERN",
    "EvalReport",
    "finite_float",
    "host_info",
    "load_report",
    "model_label",
    "per_class_label",
    "suite_metric_values",
]

logger = logging.getLogger(__name__)

REPORT_FORMAT = 1
"""Version of the JSON layout, stored as ``format_version``; bumped when a key changes meaning."""

MODEL_KEYS: tuple[str, ...] = ("name", "architecture", "checkpoint", "checkpoint_sha256", "precision", "device")
"""Keys every report's ``model`` has (``None`` when unknown), as filled by ``geovl.models.record.model_record``."""

DATASET_KEYS: tuple[str, ...] = ("name", "path", "format", "split", "counts", "fingerprint")
"""Keys every report's ``dataset`` has (``None`` when unknown); ``fingerprint`` comes from
:func:`geovl.eval.fingerprint.dataset_fingerprint`."""

STEM_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""What a task name or file stem must look like: it names the report's files."""

_PERCENT_NAME = re.compile(r"(R@\d+|recall|acc|top-?\d+|mAP|precision|f1)", re.IGNORECASE)


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
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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
        details: task-specific data; the keys the writers render are listed in :mod:`geovl.eval.report`.
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
        if not self.task or not STEM_PATTERN.match(self.task):
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
        """The report as JSON-ready data (see :func:`geovl.io.jsonable.to_jsonable`), without the ``plots`` that
        :func:`geovl.eval.report.write_report` adds."""
        data = to_jsonable(dataclasses.asdict(self), "report")
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
    """Read a report written by :func:`geovl.eval.report.write_report` (the ``.json`` file)."""
    with open(path, encoding="utf-8") as fh:
        return EvalReport.from_dict(json.load(fh))


def finite_float(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` for ``None``, NaN, inf and non-numbers."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def model_label(report: EvalReport) -> str:
    """The model's name for titles: its ``name``, else its ``architecture``, else ``"unknown model"``."""
    return str(report.model.get("name") or report.model.get("architecture") or "unknown model")


def per_class_label(report: EvalReport) -> str:
    """What ``details["per_class"]`` holds: ``details["per_class_metric"]``, by default ``"Accuracy"``."""
    return str(report.details.get("per_class_metric") or "Accuracy")


def suite_metric_values(details: Mapping[str, Any]) -> tuple[str, dict[str, float | None]]:
    """The suite's headline metric and its value per dataset (``None`` where a row lacks it)."""
    rows: Mapping[str, Any] = details["suite"]
    metric = details.get("suite_metric")
    if metric is None:
        first = next((v for v in rows.values() if isinstance(v, Mapping) and v), None)
        metric = next(iter(first)) if first else "score"
    values = {name: finite_float(v.get(metric) if isinstance(v, Mapping) else v) for name, v in rows.items()}
    return str(metric), values
