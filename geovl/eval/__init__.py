"""Evaluation: the field's metrics and protocols, with reports people can read (JSON, Markdown, PNG).

* Metrics (numpy only): :func:`retrieval_scores`, :func:`classification_scores`, :func:`linear_probe`,
  :func:`knn_classify`, :func:`recall_at_k`; captioning and generation metrics in
  :mod:`geovl.eval.captioning` and :mod:`geovl.eval.generation`.
* Protocols (run a backbone over a dataset): :mod:`geovl.eval.protocols` and :mod:`geovl.eval.tasks`; a generator's
  protocol (generated vs real, resolution control): :mod:`geovl.eval.generation_protocol`; recall vs searched
  area of search over georeferenced chips: :mod:`geovl.eval.rva` (:func:`recall_vs_area`, :func:`eval_rva`).
* Reports: :class:`EvalReport`, :func:`write_report`.

Submodules are imported on first use, so ``import geovl.eval`` stays light.
"""

from __future__ import annotations

from geovl._lazy import lazy_getattr

_EXPORTS = {
    "EvalReport": "geovl.eval.report_record",
    "write_report": "geovl.eval.report",
    "load_report": "geovl.eval.report_record",
    "dataset_fingerprint": "geovl.eval.fingerprint",
    "retrieval_scores": "geovl.eval.retrieval",
    "classification_scores": "geovl.eval.classification",
    "linear_probe": "geovl.eval.probe",
    "knn_classify": "geovl.eval.probe",
    "recall_at_k": "geovl.eval.index_quality",
    "exact_topk": "geovl.eval.index_quality",
    "eval_retrieval": "geovl.eval.protocols",
    "eval_zeroshot": "geovl.eval.protocols",
    "eval_linear_probe": "geovl.eval.protocols",
    "eval_suite": "geovl.eval.protocols",
    "eval_index": "geovl.eval.tasks",
    "eval_generation": "geovl.eval.tasks",
    "eval_generator": "geovl.eval.generation_protocol",
    "fit_gsd_probe": "geovl.eval.gsd_probe",
    "eval_rva": "geovl.eval.rva",
    "recall_vs_area": "geovl.eval.rva",
    "search_trace": "geovl.eval.rva",
    "read_rva_queries": "geovl.eval.rva_queries",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
