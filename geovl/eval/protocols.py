"""Evaluation protocols: each runs a model over a dataset and returns an :class:`~geovl.eval.report.EvalReport`.

The protocols follow the remote-sensing CLIP literature (RemoteCLIP, GeoRSCLIP, SkyCLIP, RS-TransCLIP); each
report's ``protocol`` paragraph states exactly what was computed.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geovl.data import autodetect, open_dataset
from geovl.data.common import holdout_member
from geovl.data.labelsets import prompt_names
from geovl.eval.classification import ClassificationScores, classification_scores
from geovl.eval.fingerprint import dataset_fingerprint
from geovl.eval.probe import knn_classify, linear_probe
from geovl.eval.report_record import EvalReport
from geovl.eval.retrieval import retrieval_scores
from geovl.models.backbone import Backbone
from geovl.models.record import model_record
from geovl.tasks.embedding import EmbeddingPipeline
from geovl.tasks.zeroshot.classifier import ZeroShotClassifier
from geovl.tasks.zeroshot.prompts import RS_TEMPLATES, build_class_embeddings, zero_shot_scores

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike[str]

RETRIEVAL_PROTOCOL = (
    "Cross-modal retrieval on the {split} split: every image with all of its captions (5 in the Karpathy sets). "
    "Image-to-text R@k is the share of images with any of their captions among the k most similar texts; "
    "text-to-image R@k is the share of captions whose image is among the k most similar images. Similarity is "
    "the cosine of L2-normalised embeddings; ties count against the query. mR is the mean of R@1/5/10 in both "
    "directions (the RemoteCLIP / GeoRSCLIP protocol)."
)
ZEROSHOT_PROTOCOL = (
    "Zero-shot classification: each class is the normalised mean embedding of {n_templates} prompts "
    "(templates such as '{example}') filled with the class phrase; each image takes the class of highest cosine "
    "similarity. Accuracy is overall top-1; mean per-class is the balanced accuracy; top-5 is reported with more "
    "than 5 classes."
)
PROBE_PROTOCOL = (
    "Frozen embeddings. Linear probe: multinomial logistic regression (L-BFGS) whose inverse regularisation C is "
    "chosen on a stratified 20% of the training set from {c_grid}, then refit on the whole training set. k-NN: "
    "the {k} most cosine-similar training embeddings vote with weights exp(similarity / 0.07). Train/test: {split}."
)
SUITE_PROTOCOL = (
    "Zero-shot accuracy on each benchmark of the 10-dataset protocol (AID, EuroSAT, MLRSNet, OPTIMAL-31, "
    "PatternNet, RESISC45, RSC11, RSI-CB128, RSI-CB256, WHU-RS19) found under the root, averaged over the ones "
    "present; missing ones are listed, not imputed. Retrieval sets with a test split are evaluated too."
)

#: The 10-dataset zero-shot protocol (RS-TransCLIP's table), with folder names each may have on disk.
ZEROSHOT_SUITE: dict[str, tuple[str, ...]] = {
    "AID": ("aid",),
    "EuroSAT": ("eurosat", "eurosatrgb"),
    "MLRSNet": ("mlrsnet",),
    "OPTIMAL-31": ("optimal31",),
    "PatternNet": ("patternnet",),
    "RESISC45": ("resisc45", "nwpuresisc45"),
    "RSC11": ("rsc11",),
    "RSI-CB128": ("rsicb128",),
    "RSI-CB256": ("rsicb256",),
    "WHU-RS19": ("whurs19",),
}
RETRIEVAL_SUITE: dict[str, tuple[str, ...]] = {
    "UCM-Captions": ("ucmcaptions", "ucm"),
    "RSICD": ("rsicd",),
    "RSITMD": ("rsitmd",),
    "Sydney-Captions": ("sydneycaptions", "sydney"),
    "NWPU-Captions": ("nwpucaptions",),
}


def _dataset_info(path: PathLike, kind: str, split: Any, **counts: Any) -> dict[str, Any]:
    p = Path(path)
    return {"name": p.name if p.is_dir() else p.parent.name, "path": str(p.resolve()), "format": kind,
            "split": split, "fingerprint": dataset_fingerprint(p), "counts": counts}


def _open(path: PathLike, fmt: str, split: Any) -> tuple[str, Any]:
    kind = autodetect(path) if fmt == "auto" else fmt
    return kind, open_dataset(kind, path, split=split) if split is not None else open_dataset(kind, path)


def _embed(backbone: Backbone, samples: list[Any], batch_size: int, workers: int | None,
           progress: bool, desc: str) -> tuple[np.ndarray, list[Any], list[dict[str, str]]]:
    result = EmbeddingPipeline(backbone, batch_size=batch_size, workers=workers)(
        [s["image"] for s in samples], progress=progress, desc=desc)
    bad = [{"image_id": samples[i]["image_id"], "error": err} for i, err in result.failures]
    return result.embeddings, [samples[i] for i in result.kept], bad


def _subsample_per_class(samples: list[Any], limit: int | None, seed: int) -> list[Any]:
    if limit is None:
        return samples
    if limit < 1:
        raise ValueError(f"limit_per_class must be >= 1, got {limit}")
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_class.setdefault(s["label"], []).append(i)
    keep = sorted(j for idx in by_class.values() for j in rng.permutation(idx)[:limit].tolist())
    return [samples[i] for i in keep]


def _labelled_samples(path: PathLike, format: str, split: Any, holdout: float | None, limit_per_class: int | None,
                      seed: int, need: str, labels: PathLike | None = None) -> tuple[str, list[Any]]:
    """The labelled samples of a dataset, optionally only its stable hold-out fraction, subsampled per class.
    ``labels`` (a ``filename,class`` CSV) labels images by file name instead; images it does not list are left out."""
    kind, reader = _open(path, format, split)
    if labels is not None:
        from geovl.data.karpathy import read_classes_csv

        table = read_classes_csv(Path(labels))
        samples = [{**s, "label": table[Path(str(s["image"])).name]} for s in reader
                   if Path(str(s["image"])).name in table]
        if not samples:
            raise ValueError(f"{labels}: none of its file names is an image of {path} (split {split!r})")
    else:
        samples = [s for s in reader if s["label"] is not None]
    if holdout is not None:
        if not 0 < holdout < 1:
            raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
        samples = [s for s in samples if holdout_member(s["image_id"], holdout)]
    if not samples:
        raise ValueError(f"{path}: no labelled images ({need})")
    return kind, _subsample_per_class(samples, limit_per_class, seed)


def _classification_details(cls: ClassificationScores) -> dict[str, Any]:
    return {"per_class": cls.per_class,
            "confusion": {"matrix": cls.confusion.tolist(), "classes": cls.class_names}}


# ---------------------------------------------------------------- retrieval


def eval_retrieval(
    backbone: Backbone,
    path: PathLike,
    *,
    split: str | None = "test",
    format: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = True,
) -> EvalReport:
    """Image-text retrieval R@1/5/10 both ways and mean recall on a caption dataset's split."""
    start = time.perf_counter()
    kind, reader = _open(path, format, split)
    samples = [s for s in reader if s["captions"]]
    if not samples:
        raise ValueError(f"{path}: no captioned images in split {split!r}")
    img, kept, failed = _embed(backbone, samples, batch_size, workers, progress, "images")
    texts = [c for s in kept for c in s["captions"]]
    owner = np.repeat(np.arange(len(kept)), [len(s["captions"]) for s in kept])
    txt = backbone.encode_texts(texts, progress=progress)
    scores = retrieval_scores(img, txt, owner)
    hardest = np.argsort(-scores.t2i_ranks, kind="stable")[:10]
    details = {
        "curves": {"i2t": scores.i2t, "t2i": scores.t2i},
        "examples": [{"hardest caption": texts[i], "image": kept[owner[i]]["image_id"],
                      "rank of its image": int(scores.t2i_ranks[i]) + 1} for i in hardest],
        "failed_images": failed,
    }
    return EvalReport(
        task="retrieval",
        figures={**scores.figures(), "images": len(kept), "captions": len(texts)},
        model=model_record(backbone),
        dataset=_dataset_info(path, kind, split, images=len(kept), captions=len(texts)),
        details=details,
        protocol=RETRIEVAL_PROTOCOL.format(split=split or "whole"),
        settings={"batch_size": batch_size},
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------- zero-shot


def eval_zeroshot(
    backbone: Backbone,
    path: PathLike,
    *,
    split: str | None = None,
    format: str = "auto",
    templates: Sequence[str] = RS_TEMPLATES,
    label_set: str | None = None,
    limit_per_class: int | None = None,
    holdout: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = True,
    labels: PathLike | None = None,
) -> EvalReport:
    """Zero-shot scene classification with a prompt ensemble on a labelled dataset (ImageFolder or labelled
    Karpathy set): accuracy, top-5, per-class accuracy and the confusion matrix. ``labels``: a ``filename,class``
    CSV that labels (and selects) the images by file name, for a caption set without its own ``classes.csv``.

    ``holdout`` scores only the images in that stable hold-out fraction (:func:`geovl.data.common.holdout_member`),
    the ones a training run with the same ``holdout_fraction`` never saw.
    """
    start = time.perf_counter()
    kind, samples = _labelled_samples(path, format, split, holdout, limit_per_class, seed,
                                      "zero-shot needs class labels, e.g. an ImageFolder", labels)
    classes = sorted({s["label"] for s in samples})
    names = prompt_names(classes, label_set)
    classifier = build_class_embeddings(backbone, names, templates)
    img, kept, failed = _embed(backbone, samples, batch_size, workers, progress, "images")
    truth = np.array([classes.index(s["label"]) for s in kept])
    cls = classification_scores(zero_shot_scores(backbone, img, classifier), truth, classes)
    details = _classification_details(cls) | {"class_prompts": dict(zip(classes, names, strict=True)),
                                              "failed_images": failed}
    return EvalReport(
        task="zeroshot",
        figures={**cls.figures(), "images": len(kept), "classes": len(classes)},
        model=model_record(backbone),
        dataset=_dataset_info(path, kind, split, images=len(kept), classes=len(classes)),
        details=details,
        protocol=ZEROSHOT_PROTOCOL.format(n_templates=len(templates), example=templates[0].format("{class}")),
        settings={"templates": list(templates), "label_set": label_set, "limit_per_class": limit_per_class,
                  "holdout": holdout, "seed": seed, "batch_size": batch_size,
                  "labels": str(labels) if labels is not None else None},
        units={"mean_per_class": "%"},
        seconds=time.perf_counter() - start,
    )


CLASSIFY_PROTOCOL = (
    "Zero-shot classification as `geovl classify` does it: each class is the normalised mean embedding of "
    "{n_templates} prompts (templates such as '{example}') filled with the class phrase; each image takes the class "
    "of highest softmax probability among the classifier's {n_classes} classes, and its true class is the name of "
    "its folder (matched to the classes ignoring case, spaces, '_' and '-'). Accuracy is overall top-1; mean "
    "per-class is the balanced accuracy; top-5 is reported with more than 5 classes."
)


def eval_classifier(
    classifier: ZeroShotClassifier,
    path: PathLike,
    *,
    format: str = "auto",
    split: str | None = None,
    holdout: float | None = None,
    limit_per_class: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = True,
) -> EvalReport:
    """Accuracy of a :class:`~geovl.tasks.zeroshot.classifier.ZeroShotClassifier` on a labelled dataset (an
    ImageFolder: one folder per class): overall and per-class accuracy, top-5, and the confusion matrix over the
    classifier's classes.

    Every class of the dataset must be one of the classifier's (so a label set may hold more classes than the
    dataset, but not fewer). ``holdout`` scores only that stable hold-out fraction, as in :func:`eval_zeroshot`.

    Raises:
        ValueError: no labelled images; dataset classes the classifier does not know; bad ``holdout``.
    """
    from geovl.data.labelsets import label_key

    start = time.perf_counter()
    kind, samples = _labelled_samples(path, format, split, holdout, limit_per_class, seed,
                                      "evaluation needs class folders, e.g. an ImageFolder")
    index = {label_key(name): i for i, name in enumerate(classifier.classes)}
    unknown = sorted({s["label"] for s in samples if label_key(s["label"]) not in index})
    if unknown:
        raise ValueError(f"{path}: dataset classes {unknown[:5]} are not among the classifier's classes "
                         f"({', '.join(classifier.classes)}); pick a matching --label-set or --labels")
    img, kept, failed = _embed(classifier.backbone, samples, batch_size, workers, progress, "images")
    labels = np.array([index[label_key(s["label"])] for s in kept])
    cls = classification_scores(classifier.probabilities(img), labels, classifier.classes)
    present = sorted({int(i) for i in labels})
    details = _classification_details(cls) | {
        "class_prompts": dict(zip(classifier.classes, classifier.prompts, strict=True)),
        "failed_images": failed,
        "misclassified": [{"image_id": s["image_id"], "true": s["label"], "predicted": classifier.classes[int(p)]}
                          for s, y, p in zip(kept, labels, cls.predictions, strict=True) if y != p][:50],
    }
    templates = classifier.templates
    return EvalReport(
        task="classify",
        figures={**cls.figures(), "images": len(kept), "classes": len(present)},
        model=model_record(classifier.backbone),
        dataset=_dataset_info(path, kind, split, images=len(kept), classes=len(present)),
        details=details,
        protocol=CLASSIFY_PROTOCOL.format(n_templates=len(templates), example=templates[0].format("{class}"),
                                          n_classes=len(classifier.classes)),
        settings={"templates": list(templates), "label_set": classifier.label_set, "holdout": holdout,
                  "limit_per_class": limit_per_class, "seed": seed, "batch_size": batch_size},
        units={"mean_per_class": "%"},
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------- linear probe and k-NN


def _train_test(samples: list[Any], test_fraction: float, seed: int) -> tuple[list[Any], list[Any], str]:
    splits = {s["split"] for s in samples}
    if {"train", "test"} <= splits:
        return ([s for s in samples if s["split"] == "train"], [s for s in samples if s["split"] == "test"],
                "the dataset's own train and test splits")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    by_class: dict[str, list[Any]] = {}
    for s in samples:
        by_class.setdefault(s["label"], []).append(s)
    for group in by_class.values():
        order = rng.permutation(len(group))
        n_test = max(1, round(test_fraction * len(group)))
        test += [group[i] for i in order[:n_test]]
        train += [group[i] for i in order[n_test:]]
    return train, test, f"a stratified random split, {test_fraction:.0%} test (seed {seed})"


def eval_linear_probe(
    backbone: Backbone,
    path: PathLike,
    *,
    format: str = "auto",
    test_fraction: float = 0.3,
    shots: int | None = None,
    knn_k: int = 20,
    limit_per_class: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = True,
) -> EvalReport:
    """Linear-probe and k-NN accuracy on frozen embeddings of a labelled dataset.

    Uses the dataset's train/test splits when it has both, else a seeded stratified split. ``shots`` keeps that
    many training images per class (few-shot probing).
    """
    start = time.perf_counter()
    kind, reader = _open(path, format, None)
    samples = _subsample_per_class([s for s in reader if s["label"] is not None], limit_per_class, seed)
    if not samples:
        raise ValueError(f"{path}: no labelled images")
    train, test, split_desc = _train_test(samples, test_fraction, seed)
    if shots is not None:
        train = _subsample_per_class(train, shots, seed)
        split_desc += f", {shots} training images per class"
    classes = sorted({s["label"] for s in samples})
    tr_emb, tr_kept, tr_failed = _embed(backbone, train, batch_size, workers, progress, "train images")
    te_emb, te_kept, te_failed = _embed(backbone, test, batch_size, workers, progress, "test images")
    tr_y = np.array([classes.index(s["label"]) for s in tr_kept])
    te_y = np.array([classes.index(s["label"]) for s in te_kept])
    lin = linear_probe(tr_emb, tr_y, te_emb, len(classes), seed=seed)
    knn = knn_classify(tr_emb, tr_y, te_emb, len(classes), k=knn_k)
    lin_s = classification_scores(lin.scores, te_y, classes)
    knn_s = classification_scores(knn.scores, te_y, classes)
    figures: dict[str, float | int | None] = {
        "linear_accuracy": lin_s.accuracy, "linear_mean_per_class": lin_s.mean_per_class,
        "knn_accuracy": knn_s.accuracy, "knn_mean_per_class": knn_s.mean_per_class,
        "train_images": len(tr_kept), "test_images": len(te_kept), "classes": len(classes),
    }
    details = _classification_details(lin_s) | {"knn_per_class": knn_s.per_class,
                                                "failed_images": tr_failed + te_failed}
    return EvalReport(
        task="linear-probe",
        figures=figures,
        model=model_record(backbone),
        dataset=_dataset_info(path, kind, None, train_images=len(tr_kept), test_images=len(te_kept),
                              classes=len(classes)),
        details=details,
        protocol=PROBE_PROTOCOL.format(c_grid="0.1 to 100 (7 log steps)", k=knn_k, split=split_desc),
        settings={"linear": lin.settings, "knn": knn.settings, "test_fraction": test_fraction, "shots": shots,
                  "limit_per_class": limit_per_class, "seed": seed},
        units={"linear_mean_per_class": "%", "knn_mean_per_class": "%"},
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------- suite


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_benchmarks(root: PathLike, table: dict[str, tuple[str, ...]]) -> tuple[dict[str, Path], list[str]]:
    """Benchmark folders under ``root`` matched by name (case and punctuation ignored), and the missing names."""
    children = {_norm(p.name): p for p in sorted(Path(root).iterdir()) if p.is_dir()}
    found: dict[str, Path] = {}
    for name, aliases in table.items():
        for alias in (_norm(name), *aliases):
            if alias in children:
                found[name] = children[alias]
                break
    return found, [n for n in table if n not in found]


def eval_suite(
    backbone: Backbone,
    root: PathLike,
    *,
    limit_per_class: int | None = None,
    templates: Sequence[str] = RS_TEMPLATES,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = True,
    out_dir: PathLike | None = None,
) -> EvalReport:
    """Zero-shot over every benchmark of the 10-dataset protocol present under ``root`` (averaged over those
    present, the rest listed as missing), plus retrieval on caption sets that have a test split.

    With ``out_dir``, each dataset's own report is also written to ``out_dir/<dataset>/``.
    """
    from geovl.eval.report import write_report

    start = time.perf_counter()
    root_path = Path(root)
    if not root_path.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    zs_found, zs_missing = find_benchmarks(root_path, ZEROSHOT_SUITE)
    rt_found, rt_missing = find_benchmarks(root_path, RETRIEVAL_SUITE)
    rows: dict[str, float] = {}
    retrieval_rows: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name, path in zs_found.items():
        rep = eval_zeroshot(backbone, path, limit_per_class=limit_per_class, templates=templates,
                            batch_size=batch_size, workers=workers, progress=progress)
        rows[name] = float(rep.figures["accuracy"] or 0.0)
        if out_dir is not None:
            write_report(rep, Path(out_dir) / _norm(name))
    for name, path in rt_found.items():
        try:
            rep = eval_retrieval(backbone, path, batch_size=batch_size, workers=workers, progress=progress)
        except ValueError as exc:  # e.g. a training subset without a test split
            skipped[name] = str(exc)
            continue
        retrieval_rows[name] = float(rep.figures["mean_recall"] or 0.0)
        if out_dir is not None:
            write_report(rep, Path(out_dir) / _norm(name))
    figures: dict[str, float | int | None] = {
        "zeroshot_average": float(np.mean(list(rows.values()))) if rows else None,
        "zeroshot_datasets": len(rows),
        "retrieval_mean_recall_average": float(np.mean(list(retrieval_rows.values()))) if retrieval_rows else None,
    }
    return EvalReport(
        task="suite",
        figures=figures,
        model=model_record(backbone),
        dataset={"name": root_path.name, "path": str(root_path.resolve()), "format": "suite",
                 "fingerprint": None},
        details={"suite": rows, "suite_metric": "accuracy", "missing": zs_missing,
                 "retrieval": {"mean_recall": retrieval_rows, "missing": rt_missing, "skipped": skipped}},
        protocol=SUITE_PROTOCOL,
        settings={"limit_per_class": limit_per_class, "templates": list(templates)},
        units={"zeroshot_average": "%"},
        seconds=time.perf_counter() - start,
    )
