"""Evaluation tasks that score files rather than run the backbone over a dataset: index quality, predicted
captions and generated images. Each returns an :class:`~geovl.eval.report.EvalReport`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from geovl.eval.fingerprint import dataset_fingerprint
from geovl.eval.index_quality import evaluate_faiss_index
from geovl.eval.report_record import EvalReport

PathLike = str | os.PathLike[str]

INDEX_PROTOCOL = (
    "{queries} embeddings are held out at random (seed {seed}) as queries; the index is built on the other {base}. "
    "Recall@k is the share of the exact top-k (inner product on L2-normalised rows, computed in blocks) that the "
    "index returns in its top k. Latency is single-query (batch 1), p50/p99 over {timed} queries, timed side by "
    "side with exact search (IndexFlatIP) in the same run."
)


def load_embeddings(path: PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Rows of a ``geovl embed --out`` folder (with its manifest) or of an ``.npy`` file."""
    p = Path(path)
    if p.is_dir():
        from geovl.index.pipeline import read_embeddings

        emb, _, manifest = read_embeddings(p, with_metadata=False)
        return emb, manifest
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file or folder")
    emb = np.load(p, mmap_mode="r")
    if emb.ndim != 2:
        raise ValueError(f"{p}: expected a 2-D array of embeddings, got shape {emb.shape}")
    return np.asarray(emb, np.float32), {}


def eval_index(
    embeddings: PathLike,
    factory: str = "HNSW32",
    *,
    queries: int = 1000,
    nprobe: int | None = None,
    ef_search: int | None = None,
    seed: int = 0,
) -> EvalReport:
    """Recall@1/10/100 and latency of a faiss index against exact search on the same embeddings."""
    start = time.perf_counter()
    emb, manifest = load_embeddings(embeddings)
    if not 1 <= queries < emb.shape[0] - 100:
        raise ValueError(f"queries must be in [1, {emb.shape[0] - 101}] for {emb.shape[0]} embeddings")
    order = np.random.default_rng(seed).permutation(emb.shape[0])
    q, base = emb[order[:queries]], emb[order[queries:]]
    ks = (1, 10, 100)
    result = evaluate_faiss_index(base, q, factory, ks=ks, nprobe=nprobe, ef_search=ef_search)
    figures: dict[str, float | int | None] = {f"recall@{k}": 100 * v for k, v in result.recall.items()}
    figures |= {"build_seconds": result.build_seconds, "query_ms_p50": result.query_ms_p50,
                "query_ms_p99": result.query_ms_p99, "exact_ms_p50": result.exact_ms_p50,
                "speedup_vs_exact": result.exact_ms_p50 / result.query_ms_p50 if result.query_ms_p50 else None}
    return EvalReport(
        task="index",
        figures=figures,
        model=manifest.get("model", {}),
        dataset={"name": Path(embeddings).name, "path": str(Path(embeddings).resolve()), "format": "embeddings",
                 "counts": {"vectors": int(emb.shape[0]), "dim": int(emb.shape[1])},
                 "fingerprint": dataset_fingerprint(Path(embeddings))},
        details={"curves": {"ANN vs exact": {k: 100 * v for k, v in result.recall.items()}}},
        protocol=INDEX_PROTOCOL.format(queries=queries, seed=seed, base=base.shape[0], timed=min(200, queries)),
        settings={"factory": factory, **result.params},
        units={"build_seconds": "s", "query_ms_p50": "ms", "query_ms_p99": "ms", "exact_ms_p50": "ms",
               "speedup_vs_exact": "x"},
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------- captions

CAPTION_PROTOCOL = (
    "Each predicted caption is scored against all reference sentences of its image with the coco-caption scorers "
    "(pycocoevalcap): BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, after PTB tokenisation ({tokenizer}). S*m is the "
    "mean of BLEU-4, METEOR, ROUGE-L and CIDEr-D. Figures are x100 as papers print them (CIDEr-D 1.366 -> 136.6)."
)
CHANGE_PROTOCOL = CAPTION_PROTOCOL + (
    " Change captioning (LEVIR-CC protocol): the same metrics over all pairs and separately over changed and "
    "unchanged pairs (a pair is unchanged when all its references say so), plus how often a prediction says "
    "'no change' exactly for the unchanged pairs."
)


def _reference_captions(references: PathLike, split: str | None, change: bool) -> tuple[dict[str, list[str]], str]:
    from geovl.data import autodetect, open_dataset

    kind = autodetect(references)
    kwargs: dict[str, Any] = {"require_images": False} if change or kind in ("karpathy", "coco") else {}
    if split is not None:
        kwargs["split"] = split
    reader = open_dataset(kind, references, **kwargs)
    refs = {str(s["image_id"]): list(s["captions"]) for s in reader if s["captions"]}
    if not refs:
        raise ValueError(f"{references}: no reference captions in split {split!r}")
    return refs, kind


def match_prediction_ids(predictions: dict[str, str], refs: dict[str, list[str]], *,
                         ignore_unknown: bool = False, allow_missing: bool = False) -> dict[str, str]:
    """Map prediction ids onto reference ids: exact, else file name, else file stem (one match each).

    ``ignore_unknown`` drops predictions that match no reference (a caption run over a whole folder, scored on one
    split) instead of refusing them; ``allow_missing`` accepts reference images without a prediction (they are
    left out of the scores) instead of refusing the predictions."""
    by_name: dict[str, str] = {}
    for rid in refs:
        name = rid.rsplit("/", 1)[-1]
        for key in (name, name.rsplit(".", 1)[0]):
            by_name[key] = rid if key not in by_name else ""  # "" marks an ambiguous key
    matched: dict[str, str] = {}
    unknown = []
    for pid, caption in predictions.items():
        base = pid.rsplit("/", 1)[-1]
        target = pid if pid in refs else by_name.get(base) or by_name.get(base.rsplit(".", 1)[0])
        if not target:
            unknown.append(pid)
            continue
        matched[target] = caption
    if unknown and not ignore_unknown:
        raise ValueError(f"{len(unknown)} prediction id(s) match no reference image, e.g. {unknown[:3]}")
    missing = [rid for rid in refs if rid not in matched]
    if missing and not allow_missing:
        raise ValueError(f"{len(missing)} reference image(s) of the split have no prediction, e.g. {missing[:3]}; "
                         "predict every image of the split (or pass --split)")
    return matched


def eval_captions(
    predictions: PathLike,
    references: PathLike,
    *,
    split: str | None = "test",
    change: bool = False,
    meteor: bool = True,
    only_predicted: bool = False,
) -> EvalReport:
    """Score predicted captions (or change captions) against a reference dataset's split (with ``only_predicted``,
    against the images of the split that have a prediction, e.g. when only some of a dataset's images exist)."""
    from geovl.eval.captioning import caption_metrics, change_caption_metrics, load_predictions

    start = time.perf_counter()
    refs, kind = _reference_captions(references, split, change)
    cands = match_prediction_ids(load_predictions(predictions), refs, ignore_unknown=Path(predictions).is_dir(),
                                 allow_missing=only_predicted)
    details: dict[str, Any] = {}
    if only_predicted:
        if not cands:
            raise ValueError("no prediction matches a reference image of the split")
        details["scored"] = f"{len(cands)} of the split's {len(refs)} images (the ones with a prediction)"
        refs = {k: refs[k] for k in cands}
    if change:
        scores = change_caption_metrics(refs, cands, meteor=meteor)
        percent = scores.as_percent()
        figures: dict[str, float | int | None] = dict(percent["all"] or {})
        for subset in ("changed", "unchanged"):
            sub = percent[subset]
            if sub:
                figures |= {f"{subset} {k}": v for k, v in sub.items() if k in ("BLEU-4", "CIDEr-D", "S*m")}
        figures["no-change accuracy"] = 100 * scores.no_change.accuracy
        details["no_change_detection"] = scores.no_change.to_dict()
        overall = scores.overall
    else:
        overall = caption_metrics(refs, cands, meteor=meteor)
        figures = dict(overall.as_percent())
    figures["images"] = overall.n_images
    details["examples"] = [
        {"image": r.image_id, "prediction": r.candidate, "first reference": r.references[0] if r.references else "",
         "CIDEr-D": None if r.cider_d is None else round(100 * r.cider_d, 1)}
        for r in overall.ranked("CIDEr-D", k=10, worst=True)
    ]
    if overall.notes:
        details["notes"] = list(overall.notes)
    units = {name: "" for name in figures}
    units["images"] = ""
    return EvalReport(
        task="change-caption" if change else "caption",
        figures=figures,
        model={"name": Path(predictions).name, "checkpoint": str(Path(predictions).resolve()),
               "checkpoint_sha256": dataset_fingerprint(Path(predictions))},
        dataset={"name": Path(references).name, "path": str(Path(references).resolve()), "format": kind,
                 "split": split, "counts": {"images": len(refs)}, "fingerprint": dataset_fingerprint(Path(references))},
        details=details,
        protocol=(CHANGE_PROTOCOL if change else CAPTION_PROTOCOL).format(tokenizer=overall.tokenizer),
        settings={"meteor": meteor},
        units=units,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------- generation

GENERATION_PROTOCOL = (
    "Generated images are scored as in Text2Earth: CLIP score = mean over images of 100 * max(cos(image, prompt), "
    "0); zero-shot accuracy (Cls-OA) = share of images the backbone classifies as the class they were generated "
    "for (prompt ensemble of {n_templates} templates); and the Fréchet distance between the generated and real "
    "images computed on the backbone's L2-normalised image embeddings (FD-CLIP, not Inception FID)."
)


def load_generation_manifest(path: PathLike) -> list[dict[str, Any]]:
    """Rows ``{"image": path, "prompt": text[, "label": class]}`` of a JSONL manifest; relative image paths are
    resolved against the manifest's folder."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such manifest")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}:{n}: not JSON ({exc})") from exc
        if not isinstance(row, dict) or "image" not in row or "prompt" not in row:
            raise ValueError(f"{p}:{n}: each line needs 'image' and 'prompt'")
        image = Path(row["image"])
        rows.append({**row, "image": str(image if image.is_absolute() else p.parent / image)})
    if not rows:
        raise ValueError(f"{p}: empty manifest")
    return rows


def eval_generation(
    backbone: Any,
    manifest: PathLike,
    *,
    real: PathLike | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = True,
) -> EvalReport:
    """CLIP score, zero-shot accuracy (when rows carry labels) and FD-CLIP against real images (with ``real``)."""
    from geovl.data.labelsets import prompt_names
    from geovl.data.sources import list_images
    from geovl.eval.generation import clip_fd, clip_scores, zero_shot_accuracy
    from geovl.models.record import model_record
    from geovl.tasks.zeroshot.prompts import RS_TEMPLATES

    start = time.perf_counter()
    rows = load_generation_manifest(manifest)
    images = [r["image"] for r in rows]
    per_image = clip_scores(backbone, images, [r["prompt"] for r in rows], batch_size=batch_size)
    figures: dict[str, float | int | None] = {"clip_score": float(per_image.mean()), "images": len(rows)}
    details: dict[str, Any] = {}
    labelled = [r for r in rows if r.get("label") is not None]
    if labelled:
        classes = sorted({str(r["label"]) for r in labelled})
        names = prompt_names(classes)
        targets = [classes.index(str(r["label"])) for r in labelled]
        zs = zero_shot_accuracy(backbone, [r["image"] for r in labelled], targets, names, batch_size=batch_size)
        figures["zero_shot_accuracy"] = 100 * zs.accuracy
        label_of = dict(zip(names, classes, strict=True))
        details["per_class"] = {label_of[name]: 100 * v for name, v in zs.per_class.items()}
    if real is not None:
        real_images = list_images([real])
        fd = clip_fd(backbone, images, [str(f) for f in real_images], batch_size=batch_size, progress=progress)
        figures["fd_clip"] = fd.value
        details["fd_metric"] = fd.metric
    order = np.argsort(per_image)[:10]
    details["examples"] = [{"image": rows[i]["image"], "prompt": rows[i]["prompt"],
                            "CLIP score": round(float(per_image[i]), 2)} for i in order]
    return EvalReport(
        task="generation",
        figures=figures,
        model=model_record(backbone),
        dataset={"name": Path(manifest).name, "path": str(Path(manifest).resolve()), "format": "jsonl",
                 "counts": {"images": len(rows)}, "fingerprint": dataset_fingerprint(Path(manifest))},
        details=details,
        protocol=GENERATION_PROTOCOL.format(n_templates=len(RS_TEMPLATES)),
        settings={"real": str(real) if real else None, "batch_size": batch_size, "workers": workers},
        units={"clip_score": "", "fd_clip": ""},
        seconds=time.perf_counter() - start,
    )
