"""The ``geovl`` command: a thin table of subcommands over the Python API.

Every subcommand parses its flags, calls one typed function of the library and prints the result. Heavy modules
are imported inside the handlers so ``geovl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def _add_model_args(p: argparse.ArgumentParser, default: str = "geovl-rs-tiny") -> None:
    p.add_argument("--model", "-m", default=default,
                   help="registry name, openclip:<arch>/<tag>, random:<arch>, or a local checkpoint path "
                        f"(default: {default}, the small model bundled with geovl)")
    p.add_argument("--arch", default=None, help="architecture of a bare weights file (e.g. ViT-B-32)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="weight precision (auto: bf16 on GPUs and on CPUs with bf16 units, else fp32)")


def _load(args: argparse.Namespace) -> Any:
    from geovl.models import load_backbone

    return load_backbone(args.model, architecture=args.arch, device=args.device, precision=args.precision)


# ---------------------------------------------------------------- models


def cmd_models(args: argparse.Namespace) -> int:
    from geovl.models.registry import list_architectures, list_checkpoints
    from geovl.models.weights import checkpoint_dir, local_checkpoint

    specs = list_checkpoints(include_openclip=args.all)
    rows = []
    for spec in specs:
        path = local_checkpoint(spec)
        rows.append({
            "name": spec.name, "family": spec.family, "architecture": spec.architecture, "format": spec.format,
            "source": spec.source.url, "local": str(path) if path else None, "description": spec.description,
        })
    if args.json:
        print(json.dumps({"checkpoints": rows, "architectures": list_architectures()}, indent=2))
        return 0
    width = max(len(spec.name) for spec in specs)
    arch_w = max([4, *(len(spec.architecture or "") for spec in specs)])
    print(f"{'NAME':<{width}}  {'ARCH':<{arch_w}} {'FORMAT':<14} LOCAL  SOURCE")
    for r in rows:
        local = "yes" if r["local"] else "no"
        print(f"{r['name']:<{width}}  {r['architecture']:<{arch_w}} {r['format']:<14} {local:<5}  {r['source']}")
    n_local = sum(1 for r in rows if r["local"])
    print(f"\n{len(rows)} checkpoints, {n_local} available locally. Weights you download by hand go in "
          f"{checkpoint_dir()} (or pass a file path as --model).")
    print("Random-weight architectures (random:<arch>): " + ", ".join(list_architectures()[:12]) + ", ...")
    if not args.all:
        print("Add --all to list every open_clip pretrained tag (openclip:<arch>/<tag>).")
    return 0


# ---------------------------------------------------------------- embed


def cmd_embed(args: argparse.Namespace) -> int:
    from geovl.data.sources import sources_for
    from geovl.index.pipeline import EmbedConfig, run_embed

    backbone = _load(args)
    print(f"model: {backbone}", file=sys.stderr)
    sources = sources_for(args.paths, dataset_format=args.format, chip_size=args.chip_size,
                          chip_overlap=args.chip_overlap, bands=_parse_bands(args.bands),
                          min_valid_fraction=args.min_valid)
    config = EmbedConfig(batch_size=args.batch_size, workers=args.workers, partition_size=args.partition_size,
                         progress=not args.quiet, limit=args.limit)
    if args.runner == "ray":
        from geovl.index.ray_runner import run_embed_ray

        summary = run_embed_ray(args.model, sources, args.out, config, device=args.device, precision=args.precision,
                                num_actors=args.ray_actors, address=args.ray_address)
    else:
        summary = run_embed(backbone, sources, args.out, config)
    for path, err in summary.failures[:10]:
        print(f"skipped {path}: {err}", file=sys.stderr)
    print(json.dumps({
        "images": summary.embedded + summary.resumed, "embedded_now": summary.embedded, "resumed": summary.resumed,
        "failed": summary.failed, "partitions": summary.partitions, "dim": backbone.embed_dim,
        "seconds": round(summary.seconds, 2), "images_per_second": round(summary.images_per_second, 1),
        "precision": backbone.precision, "device": str(backbone.device), "out": str(summary.out_dir),
    }))
    return 0


# ---------------------------------------------------------------- synth


def cmd_synth(args: argparse.Namespace) -> int:
    from geovl.data import synthetic

    config = synthetic.SceneConfig(size=args.size)
    if args.kind == "captions":
        synthetic.write_caption_dataset(args.out, n=args.n, seed=args.seed, config=config)
    elif args.kind == "classification":
        synthetic.write_classification_dataset(args.out, n_per_class=args.n, seed=args.seed, config=config)
    else:
        synthetic.write_change_dataset(args.out, n=args.n, seed=args.seed, config=config)
    print(f"wrote {args.kind} dataset to {args.out}")
    return 0


# ---------------------------------------------------------------- chips


def _parse_bands(text: str | None) -> str | tuple[int, ...] | None:
    if text is None:
        return None
    if all(part.strip().isdigit() for part in text.split(",")):
        return tuple(int(part) for part in text.split(","))
    return text


def cmd_chips(args: argparse.Namespace) -> int:
    from geovl.io.chip_export import export_chips
    from geovl.io.chips import ChipReader

    reader = ChipReader(args.scene, size=args.size, overlap=args.overlap, bands=_parse_bands(args.bands),
                        nodata=args.nodata, min_valid_fraction=args.min_valid, edge=args.edge)
    result = export_chips(reader, args.out, fmt=args.format, progress=not args.quiet)
    print(json.dumps({"written": result.written, "existing": result.existing, "skipped": result.skipped,
                      "index": str(result.index)}))
    return 0


# ---------------------------------------------------------------- classify


def _parse_labels(text: str | None) -> list[str] | None:
    if text is None:
        return None
    labels = [part.strip() for part in text.split(",")]
    if not any(labels):
        raise ValueError("--labels is empty; give class names separated by commas, e.g. --labels 'forest,river'")
    return labels


def cmd_classify(args: argparse.Namespace) -> int:
    from geovl.data.labelsets import LABEL_SETS, resolve_label_set

    if args.list_label_sets:
        for name, table in LABEL_SETS.items():
            print(f"{name:<14} {len(table):>3} classes: {', '.join(table)}")
        return 0
    if not args.paths:
        raise ValueError("give images, folders or a GeoTIFF scene to classify (or --list-label-sets)")
    if args.labels is None and args.label_set is None:
        raise ValueError("no classes: give --labels 'a,b,c' or --label-set NAME (see --list-label-sets)")
    if args.label_set is not None:
        resolve_label_set(args.label_set)  # fail on a typo before loading the model
    if args.threshold is not None and not args.multi_label:
        raise ValueError("--threshold applies to --multi-label; add --multi-label")
    threshold = 0.5 if args.threshold is None else args.threshold
    if args.multi_label:
        from geovl.tasks.zeroshot.classifier import check_threshold

        if args.map is not None:
            raise ValueError("--multi-label scores images; a --map label map holds one class per chip")
        check_threshold(threshold)
    if args.evaluate:
        return _classify_evaluate(args)
    if args.report_dir is not None or args.holdout is not None:
        raise ValueError("--report-dir and --holdout apply to --evaluate; add --evaluate")
    if args.map is not None:
        return _classify_scene(args)
    from geovl.data.sources import list_images
    from geovl.tasks.zeroshot.classifier import ZeroShotClassifier

    paths = list_images(args.paths)
    if not paths:
        raise ValueError(f"no images found under {', '.join(args.paths)}")
    classifier = ZeroShotClassifier(_load(args), _parse_labels(args.labels), label_set=args.label_set)
    if args.multi_label:
        predictions = classifier.multi_label(paths, threshold=threshold, batch_size=args.batch_size)
    else:
        predictions = classifier.classify(paths, top_k=args.top_k, batch_size=args.batch_size)
    rows = [{"image": str(path), **pred.to_dict()} for path, pred in zip(paths, predictions, strict=True)]
    if args.out:
        _write_predictions(Path(args.out), rows)
        print(f"wrote {len(rows)} predictions to {args.out}", file=sys.stderr)
    if args.json:
        extra = {"multi_label": True, "threshold": threshold} if args.multi_label else {}
        print(json.dumps({"classes": classifier.classes, **extra, "predictions": rows}, indent=2))
    elif not args.out:
        for row in rows:
            ranked = ", ".join(f"{lab} {score:.3f}" for lab, score in zip(row["labels"], row["scores"], strict=True))
            ranked = ranked or "(no class passes the threshold)"
            print(f"{row['image']}\t{ranked}")
    return 0


def _write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """Predictions as JSON (``.json``) or CSV (anything else: image, rank, label, score; one row per rank)."""
    import csv
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".json":
            json.dump(rows, f, indent=2)
        else:
            writer = csv.writer(f)
            writer.writerow(["image", "rank", "label", "score"])
            for row in rows:
                for rank, (label, score) in enumerate(zip(row["labels"], row["scores"], strict=True), start=1):
                    writer.writerow([row["image"], rank, label, f"{score:.6f}"])
    os.replace(tmp, path)


def _classify_evaluate(args: argparse.Namespace) -> int:
    from geovl.eval.protocols import eval_classifier
    from geovl.eval.report import to_jsonable, write_report
    from geovl.tasks.zeroshot.classifier import ZeroShotClassifier

    if args.map is not None or args.multi_label:
        raise ValueError("--evaluate scores single-label predictions; drop --map / --multi-label")
    if len(args.paths) != 1 or not Path(args.paths[0]).is_dir():
        raise ValueError("--evaluate needs one labelled dataset folder (an ImageFolder: one sub-folder per class)")
    classifier = ZeroShotClassifier(_load(args), _parse_labels(args.labels), label_set=args.label_set)
    report = eval_classifier(classifier, args.paths[0], holdout=args.holdout, batch_size=args.batch_size,
                             progress=not args.quiet)
    out = args.report_dir or "out/classify_eval"
    files = write_report(report, out)
    summary = {"task": report.task, "figures": to_jsonable(report.figures),
               "per_class": to_jsonable(report.details["per_class"]),
               "report": {k: str(v) for k, v in files.items()}}
    print(json.dumps(summary, indent=2))
    return 0


def _classify_scene(args: argparse.Namespace) -> int:
    from geovl.tasks.zeroshot.classifier import ZeroShotClassifier
    from geovl.tasks.zeroshot.labelmap import classify_scene

    if len(args.paths) != 1:
        raise ValueError(f"--map classifies one scene; got {len(args.paths)} paths")
    classifier = ZeroShotClassifier(_load(args), _parse_labels(args.labels), label_set=args.label_set)
    result = classify_scene(classifier, args.paths[0], args.map, chip_size=args.chip_size,
                            bands=_parse_bands(args.bands), nodata=args.nodata, min_valid_fraction=args.min_valid,
                            probabilities=args.probabilities, batch_size=args.batch_size, progress=not args.quiet)
    summary = {
        "map": str(result.path), "classes": str(result.table_json), "table": str(result.table_csv),
        "footprints": str(result.footprints),
        "probabilities": str(result.probabilities_path) if result.probabilities_path else None,
        "grid": list(result.grid_shape), "classified": result.classified, "skipped": result.skipped,
        "counts": {k: v for k, v in result.counts.items() if v},
    }
    print(json.dumps(summary, indent=2))
    return 0


# ---------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from geovl._optional import require

    for module in ("fastapi", "uvicorn", "multipart"):
        require(module, extra="api", feature="geovl serve")
    from geovl.api.app import serve
    from geovl.serving.config import ServeConfig, tokens_from_env

    tokens = tuple(args.tokens) or tokens_from_env()  # --token wins over GEOVL_API_TOKENS
    config = ServeConfig(model=args.model, device=args.device, precision=args.precision, host=args.host,
                         port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                         queue_size=args.queue_size, max_images_per_request=args.max_images,
                         max_image_bytes=args.max_image_mb * 1024 * 1024, api_tokens=tokens,
                         cors_origins=list(args.cors_origins), index=args.index)
    print(f"geovl serve: loading {config.model}; API on http://{config.host}:{config.port}/v1 "
          f"(docs at /docs){'' if config.api_tokens else ', no token needed'}", file=sys.stderr)
    serve(config)
    return 0


# ---------------------------------------------------------------- data


def cmd_data(args: argparse.Namespace) -> int:
    from collections import Counter

    from geovl.data import autodetect, open_dataset

    kind = autodetect(args.path) if args.format == "auto" else args.format
    kwargs: dict[str, Any] = {}
    if args.no_image_check:
        kwargs["require_images"] = False
    reader = open_dataset(kind, args.path, **kwargs)
    samples: list[Any] = list(reader)
    splits = Counter(str(s["split"]) for s in samples)
    captions = sum(len(s["captions"]) for s in samples)
    labels = Counter(s.get("label") for s in samples if s.get("label") is not None)
    info = {"format": kind, "samples": len(samples), "captions": captions, "splits": dict(splits),
            "classes": len(labels), "first": samples[0] if samples else None}
    print(json.dumps(info, indent=2, default=str))
    return 0


# ---------------------------------------------------------------- index


def _parse_size(text: str | None) -> int | None:
    if text is None:
        return None
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(float(t))
    except ValueError:
        raise ValueError(f"cannot read the size '{text}' (examples: 4G, 512M, 1500000000)") from None


def cmd_index(args: argparse.Namespace) -> int:
    from geovl.index import store

    action = args.index_action
    if action == "build":
        manifest = store.build_index(args.embeddings, args.out, factory=args.factory,
                                     memory_budget_bytes=_parse_size(args.memory_budget), nprobe=args.nprobe,
                                     ef_search=args.ef_search, progress=not args.quiet)
    elif action == "add":
        manifest = store.add_to_index(args.index, args.embeddings, progress=not args.quiet)
    elif action == "remove":
        ids = [int(x) for x in args.ids.split(",") if x.strip()] if args.ids else []
        if args.ids_file:
            ids += [int(x) for x in Path(args.ids_file).read_text().split()]
        if not ids:
            raise ValueError("give the ids to remove with --ids 1,2,3 or --ids-file FILE")
        manifest = store.remove_from_index(args.index, ids, missing_ok=args.missing_ok)
    elif action == "info":
        manifest = store.load_index(args.index).manifest
    else:
        return cmd_search(args)
    print(json.dumps(manifest.to_dict(), indent=2, default=str))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from geovl.index.filters import Filters
    from geovl.index.search import Searcher

    if (args.query is None) == (args.image is None):
        raise ValueError("give either a text query or --image PATH")
    filters = Filters.parse(bbox=args.bbox, start=args.start, end=args.end, where=args.where or None)
    searcher = Searcher(args.index, model=args.model, device=args.device, precision=args.precision)
    query = args.query if args.query is not None else Path(args.image)
    hits = searcher.search(query, k=args.k, filters=None if filters.is_empty else filters,
                           nprobe=args.nprobe, ef_search=args.ef_search)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2))
        return 0
    if not hits:
        print("no hits")
    for h in hits:
        meta = h.to_dict().get("metadata", {})
        extra = "  ".join(f"{k}={meta[k]}" for k in ("caption", "label", "acquired", "sensor") if meta.get(k))
        print(f"{h.rank + 1:>3}  {h.score:.4f}  id={h.id}  {meta.get('chip_id') or meta.get('path')}  {extra}")
    return 0


def _add_index_parsers(sub: Any) -> None:
    p = sub.add_parser("index", help="build, update, inspect and search FAISS indexes of embeddings")
    actions = p.add_subparsers(dest="index_action", metavar="ACTION", required=True)

    t = actions.add_parser("build", help="build an index from `geovl embed` folders (atomic: replaces --out "
                                         "only when complete)")
    t.add_argument("embeddings", nargs="+", help="embeddings folders of one model")
    t.add_argument("--out", "-o", required=True, help="index folder")
    t.add_argument("--factory", default="auto",
                   help="auto (by size and memory budget) or a faiss index_factory string: Flat, HNSW32, "
                        "IVF4096,Flat, IVF4096,SQ8, OPQ64,IVF16384,PQ64, ...")
    t.add_argument("--memory-budget", default=None, help="RAM the index may use, e.g. 4G (for --factory auto)")
    t.add_argument("--nprobe", type=int, default=None, help="default IVF lists probed per query")
    t.add_argument("--ef-search", type=int, default=None, help="default HNSW efSearch")
    t.add_argument("--quiet", "-q", action="store_true")

    t = actions.add_parser("add", help="add new embeddings folders to an index without a rebuild")
    t.add_argument("index")
    t.add_argument("embeddings", nargs="+")
    t.add_argument("--quiet", "-q", action="store_true")

    t = actions.add_parser("remove", help="remove vectors by id")
    t.add_argument("index")
    t.add_argument("--ids", default=None, help="comma-separated ids")
    t.add_argument("--ids-file", default=None, help="file with one id per line")
    t.add_argument("--missing-ok", action="store_true", help="ignore ids that are not in the index")

    t = actions.add_parser("info", help="print an index manifest")
    t.add_argument("index")

    t = actions.add_parser("search", help="search an index by text or image, with geo / time / metadata filters")
    t.add_argument("index")
    t.add_argument("query", nargs="?", default=None, help="text query")
    t.add_argument("--image", default=None, help="image query (image-to-image search)")
    t.add_argument("-k", type=int, default=10)
    t.add_argument("--bbox", default=None, help="west,south,east,north in degrees (footprints that intersect)")
    t.add_argument("--start", default=None, help="acquired on or after (ISO date or time)")
    t.add_argument("--end", default=None, help="acquired on or before (ISO date or time)")
    t.add_argument("--where", action="append", default=None,
                   help="metadata condition, repeatable: 'sensor=sentinel-2', 'gsd<=10', 'label in forest,river'")
    t.add_argument("--model", default=None, help="query encoder (default: the model the index was built with)")
    t.add_argument("--device", default="auto")
    t.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    t.add_argument("--nprobe", type=int, default=None)
    t.add_argument("--ef-search", type=int, default=None)
    t.add_argument("--json", action="store_true", help="print hits as JSON")
    for t in actions.choices.values():
        t.set_defaults(handler=cmd_index)


# ---------------------------------------------------------------- eval


def _finish_report(report: Any, args: argparse.Namespace) -> int:
    from geovl.eval.report import to_jsonable, write_report

    out = args.out or f"out/eval/{report.task}"
    files = write_report(report, out)
    print(json.dumps({"task": report.task, "figures": to_jsonable(report.figures),
                      "report": {k: str(v) for k, v in files.items()}}, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from geovl.eval import protocols

    common = {"batch_size": args.batch_size, "workers": args.workers, "progress": not args.quiet}
    task = args.eval_task
    if task == "index":
        from geovl.eval.tasks import eval_index

        return _finish_report(eval_index(args.embeddings, args.factory, queries=args.queries, nprobe=args.nprobe,
                                         ef_search=args.ef_search, seed=args.seed), args)
    if task in ("caption", "change-caption"):
        from geovl.eval.tasks import eval_captions

        report = eval_captions(args.predictions, args.references, split=args.split, change=task == "change-caption",
                               meteor=not args.no_meteor)
        return _finish_report(report, args)
    backbone = _load(args)
    if task == "retrieval":
        report = protocols.eval_retrieval(backbone, args.dataset, split=args.split, format=args.format, **common)
    elif task == "zeroshot":
        report = protocols.eval_zeroshot(backbone, args.dataset, split=args.split, format=args.format,
                                         label_set=args.label_set, limit_per_class=args.limit_per_class,
                                         holdout=args.holdout, seed=args.seed, **common)
    elif task == "linear-probe":
        report = protocols.eval_linear_probe(backbone, args.dataset, format=args.format,
                                             test_fraction=args.test_fraction, shots=args.shots, knn_k=args.knn_k,
                                             limit_per_class=args.limit_per_class, seed=args.seed, **common)
    elif task == "suite":
        out = args.out or "out/eval/suite"
        report = protocols.eval_suite(backbone, args.root, limit_per_class=args.limit_per_class, out_dir=out,
                                      **common)
        args.out = out
    else:  # generation
        from geovl.eval.tasks import eval_generation

        report = eval_generation(backbone, args.manifest, real=args.real, **common)
    return _finish_report(report, args)


def _add_eval_parsers(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a model: retrieval, zeroshot, linear-probe, caption, change-caption, "
                                    "generation, index, suite (writes JSON, Markdown and PNG reports)")
    tasks = p.add_subparsers(dest="eval_task", metavar="TASK", required=True)

    def task(name: str, help: str, model: bool = True) -> argparse.ArgumentParser:
        t = tasks.add_parser(name, help=help)
        if model:
            _add_model_args(t)
            t.add_argument("--batch-size", type=int, default=64)
            t.add_argument("--workers", type=int, default=None, help="decode workers")
        else:
            t.set_defaults(batch_size=64, workers=None)
        t.add_argument("--out", "-o", default=None, help=f"report folder (default: out/eval/{name})")
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
        t.set_defaults(handler=cmd_eval)
        return t

    t = task("retrieval", "image-text retrieval R@1/5/10 and mean recall (Karpathy test split)")
    t.add_argument("dataset", help="caption dataset (Karpathy JSON or folder, COCO, CSV, ...)")
    t.add_argument("--split", default="test")
    t.add_argument("--format", default="auto")

    t = task("zeroshot", "zero-shot scene classification accuracy, top-5, per class, confusion matrix")
    t.add_argument("dataset", help="labelled dataset (ImageFolder, or Karpathy with classes.csv)")
    t.add_argument("--split", default=None)
    t.add_argument("--format", default="auto")
    t.add_argument("--label-set", default=None, help="class phrases: eurosat, ucmerced (default: auto-detect)")
    t.add_argument("--limit-per-class", type=int, default=None, help="evaluate N random images per class")
    t.add_argument("--holdout", type=float, default=None,
                   help="score only this stable hold-out fraction (what training's holdout_fraction kept out)")

    t = task("linear-probe", "linear-probe and k-NN accuracy on frozen embeddings")
    t.add_argument("dataset")
    t.add_argument("--format", default="auto")
    t.add_argument("--test-fraction", type=float, default=0.3, help="test share when the set has no splits")
    t.add_argument("--shots", type=int, default=None, help="training images per class (few-shot)")
    t.add_argument("--knn-k", type=int, default=20)
    t.add_argument("--limit-per-class", type=int, default=None)

    t = task("suite", "zero-shot over the 10-dataset protocol and retrieval sets found under a folder")
    t.add_argument("root", help="folder holding benchmark datasets (AID/, EuroSAT/, RESISC45/, UCM-Captions/, ...)")
    t.add_argument("--limit-per-class", type=int, default=None)

    for name, help in (("caption", "BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, S*m of predicted captions"),
                       ("change-caption", "the same metrics for change captions, split by changed / unchanged")):
        t = task(name, help, model=False)
        t.add_argument("--predictions", required=True, help="JSON [{image_id, caption}] or {id: caption}, or JSONL")
        t.add_argument("--references", required=True, help="caption dataset with the reference sentences")
        t.add_argument("--split", default="test")
        t.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")

    t = task("generation", "generated images: FD on backbone features, CLIP score, zero-shot accuracy")
    t.add_argument("manifest", help="JSONL with one {image, prompt[, label]} per generated image")
    t.add_argument("--real", default=None, help="folder of real images for the Frechet distance")

    t = task("index", "recall@k of a faiss index against exact search on embeddings", model=False)
    t.add_argument("embeddings", help="a `geovl embed --out` folder or an .npy file of L2-normalised rows")
    t.add_argument("--factory", default="HNSW32", help="faiss index_factory string (HNSW32, IVF256,Flat, ...)")
    t.add_argument("--queries", type=int, default=1000, help="rows held out as queries")
    t.add_argument("--nprobe", type=int, default=None)
    t.add_argument("--ef-search", type=int, default=None)


# ---------------------------------------------------------------- parser


def cmd_train(args: argparse.Namespace) -> int:
    # The CLI dispatches to training; the library itself never imports geovl.training.
    from geovl.training import load_config, train_clip

    overrides = list(args.overrides) + ([f"run.output={args.output}"] if args.output else [])
    config = load_config(args.config, overrides)
    result = train_clip(config, resume=args.resume, progress=not args.quiet)
    if result.final is not None:
        print(f"trained {result.steps} steps; model written to {result.final}")
        for row in result.evals[-1:]:
            for key, value in row.items():
                if key != "step":
                    print(f"  {key}: {value:.4g}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from geovl import __version__

    parser = argparse.ArgumentParser(prog="geovl", description="Remote-sensing vision-language toolkit.")
    parser.add_argument("--version", action="version", version=f"geovl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list the model registry and what is available locally")
    p.add_argument("--all", action="store_true", help="include every open_clip pretrained tag")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_models)

    p = sub.add_parser("embed", help="embed images, GeoTIFF scenes (as chips) or datasets into a folder "
                                     "(partitioned .npy + metadata parquet; re-running resumes)")
    p.add_argument("paths", nargs="+", help="image folders/files, GeoTIFF scenes, or dataset files (caption JSON, "
                                           "CSV/JSONL/parquet, webdataset .tar)")
    _add_model_args(p)
    p.add_argument("--out", "-o", required=True, help="output folder (re-running into it resumes)")
    p.add_argument("--format", default=None,
                   help="read the paths as datasets of this format (karpathy, imagefolder, csv, git10m, ...)")
    p.add_argument("--chip-size", type=int, default=256, help="chip side for large GeoTIFF scenes")
    p.add_argument("--chip-overlap", type=int, default=0)
    p.add_argument("--bands", default=None, help="band indexes (4,3,2) or a sensor preset for scenes")
    p.add_argument("--min-valid", type=float, default=0.5, help="skip chips with less valid (non-nodata) area")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None,
                   help="decode processes beside the model; 0 decodes in the model's process (default: 0 for a "
                        "model on a CPU with <= 4 cores, where that is faster, else cores - 1)")
    p.add_argument("--partition-size", type=int, default=10_000, help="records per partition (unit of resume)")
    p.add_argument("--limit", type=int, default=None, help="embed only the first N inputs")
    p.add_argument("--runner", choices=["local", "ray"], default="local",
                   help="local: this process; ray: a Ray Data job over partitions (a cluster via --ray-address)")
    p.add_argument("--ray-actors", type=int, default=2, help="model replicas for --runner ray")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_embed)

    p = sub.add_parser("chips", help="cut a GeoTIFF scene into chips with a GeoJSON footprint index")
    p.add_argument("scene", help="GeoTIFF (any band count / bit depth)")
    p.add_argument("--out", "-o", required=True, help="output folder (re-running resumes)")
    p.add_argument("--size", type=int, default=256, help="chip side in pixels")
    p.add_argument("--overlap", type=int, default=0, help="overlap between neighbouring chips in pixels")
    p.add_argument("--bands", default=None,
                   help="1-based band indexes (4,3,2) or a sensor preset (sentinel2-rgb, landsat8-rgb, naip-rgb, ...)")
    p.add_argument("--nodata", type=float, default=None, help="nodata value (default: the file's)")
    p.add_argument("--min-valid", type=float, default=0.0, help="skip chips with a smaller valid-pixel fraction")
    p.add_argument("--edge", choices=["pad", "shift", "drop"], default="pad", help="what to do at the scene edge")
    p.add_argument("--format", choices=["png", "jpg", "tif"], default="png", help="tif writes georeferenced chips")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(handler=cmd_chips)

    p = sub.add_parser("classify", help="zero-shot scene classification of images, folders, or a GeoTIFF scene "
                                        "(--map: a per-chip label map)")
    p.add_argument("paths", nargs="*", help="images and folders (searched recursively), or one scene with --map")
    labels = p.add_argument_group("classes (one or both)")
    labels.add_argument("--labels", default=None,
                        help="comma-separated class names, e.g. 'forest,river,farmland' (with --label-set: a subset "
                             "of the set, prompted with its phrases)")
    labels.add_argument("--label-set", default=None, help="a benchmark label set, e.g. eurosat, aid, nwpu-resisc45")
    p.add_argument("--list-label-sets", action="store_true", help="print the label sets and exit")
    _add_model_args(p)
    p.add_argument("--top-k", type=int, default=5, help="classes reported per image")
    p.add_argument("--multi-label", action="store_true",
                   help="report every class whose own score passes --threshold (sigmoid of the logit for SigLIP "
                        "models, else a softmax against generic background prompts) instead of the top k")
    p.add_argument("--threshold", type=float, default=None, help="score threshold in (0, 1) for --multi-label "
                                                                 "(default 0.5)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", "-o", default=None, help="write predictions to a .csv (one row per rank) or .json file")
    scene = p.add_argument_group("label maps of GeoTIFF scenes")
    scene.add_argument("--map", default=None, help="write a uint8 GeoTIFF label map (one pixel per chip, 255 = "
                                                   "nodata) plus .classes.json / .classes.csv tables and "
                                                   "a .chips.geojson of chip footprints with their classes")
    scene.add_argument("--probabilities", default=None, help="also write a float32 per-class probability GeoTIFF")
    scene.add_argument("--chip-size", type=int, default=64, help="chip side in scene pixels (= map pixel size)")
    scene.add_argument("--bands", default=None, help="band indexes (4,3,2) or a sensor preset (sentinel2-rgb, ...)")
    scene.add_argument("--nodata", type=float, default=None, help="nodata value (default: the file's)")
    scene.add_argument("--min-valid", type=float, default=0.5, help="leave chips with less valid area as nodata")
    evaluate = p.add_argument_group("accuracy on a labelled dataset")
    evaluate.add_argument("--evaluate", action="store_true",
                          help="the path is an ImageFolder (one folder per class): report overall and per-class "
                               "accuracy and write JSON, Markdown and a confusion-matrix PNG")
    evaluate.add_argument("--report-dir", default=None, help="report folder (default: out/classify_eval)")
    evaluate.add_argument("--holdout", type=float, default=None,
                          help="score only this stable hold-out fraction (what training's holdout_fraction kept out)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_classify)

    p = sub.add_parser("data", help="inspect a dataset: detected format, counts, splits, first sample")
    p.add_argument("path", help="dataset file or folder")
    p.add_argument("--format", default="auto", help="karpathy, coco, imagefolder, skyscript, gaia, webdataset, "
                   "git10m, levircc, second-cc, csv, jsonl, parquet (default: detect)")
    p.add_argument("--no-image-check", action="store_true", help="do not require the image files to exist")
    p.set_defaults(handler=cmd_data)

    _add_index_parsers(sub)
    _add_eval_parsers(sub)

    p = sub.add_parser("serve", help="serve zero-shot classification over HTTP (/v1/classify; needs geovl[api])")
    p.add_argument("--model", "-m", default="geovl-rs-tiny", help="model to load (as for embed; default: bundled)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32, help="most images per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill (ms)")
    p.add_argument("--queue-size", type=int, default=256, help="most images waiting; beyond it HTTP 503")
    p.add_argument("--max-images", type=int, default=64, help="most images per request (more: HTTP 413)")
    p.add_argument("--max-image-mb", type=int, default=10, help="largest image file in MiB (larger: HTTP 413)")
    p.add_argument("--token", dest="tokens", action="append", default=[], metavar="T",
                   help="accepted bearer token (repeatable). Visible to other users in the process list: "
                        "prefer GEOVL_API_TOKENS=tok1,tok2 in the environment, read when --token is not given. "
                        "Neither: no authentication")
    p.add_argument("--cors-origin", dest="cors_origins", action="append", default=[], metavar="ORIGIN",
                   help="allow browser calls from this origin (repeatable, or *; default: no CORS)")
    p.add_argument("--index", default=None, metavar="DIR",
                   help="serve POST /v1/search over this geovl index folder (built with the same model)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("train", help="train models (clip: contrastive fine-tuning; runs under torchrun for DDP)")
    kinds = p.add_subparsers(dest="train_kind", metavar="KIND", required=True)
    t = kinds.add_parser("clip", help="contrastive (CLIP / SigLIP) fine-tuning of any registry model or architecture")
    t.add_argument("--config", required=True, help="YAML or JSON config (see configs/)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set optim.steps=500 --set run.output=runs/x (repeatable)")
    t.add_argument("--output", default=None, help="run folder (same as --set run.output=...)")
    t.add_argument("--resume", default="auto",
                   help="auto: continue from the run folder's latest checkpoint; no: refuse a folder that has one; "
                        "or a checkpoint folder")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    t.set_defaults(handler=cmd_train)

    p = sub.add_parser("synth", help="write a synthetic remote-sensing dataset in a real layout")
    p.add_argument("kind", choices=["captions", "classification", "change"],
                   help="captions: Karpathy JSON; classification: ImageFolder; change: LEVIR-CC layout")
    p.add_argument("out", help="output folder (re-running resumes)")
    p.add_argument("--n", type=int, default=500, help="tiles (pairs; per class for classification)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="tile side in pixels")
    p.set_defaults(handler=cmd_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"geovl {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
