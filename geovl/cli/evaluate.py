"""``geovl eval TASK``: evaluate a model and write a report (JSON, Markdown, PNG plots) to ``--out``.

Rules: each task calls one function of :mod:`geovl.eval` and takes only the flags that function uses; tuning
defaults (batch size, seed, splits, ...) are the function's own. The report goes to ``--out``, by default
``out/eval/<task>``, and a JSON summary (task, figures, report files) is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from geovl.cli.common import (
    PRECISIONS,
    Handler,
    add_class_args,
    add_command,
    add_model_args,
    check_classes,
    given,
    load_backbone_from_args,
    option,
    print_json,
    warn,
)

#: Reports go to ``<REPORT_ROOT>/<task>`` unless ``--out`` is given.
REPORT_ROOT = "out/eval"

_PROTOCOLS = "geovl.eval.protocols"
_TASKS = "geovl.eval.tasks"
_RVA = "geovl.eval.rva:eval_rva"


def add_parser(sub: Any) -> None:
    p = add_command(sub, "eval", "evaluate a model: retrieval, zeroshot, classify, linear-probe, caption, "
                                 "change-caption, generation, index, rva, suite (writes JSON, Markdown and PNG "
                                 "reports)")
    tasks = p.add_subparsers(dest="eval_task", metavar="TASK", required=True)

    t, fn = _task(tasks, "retrieval", "image-text retrieval R@1/5/10 and mean recall (Karpathy test split)",
                  f"{_PROTOCOLS}:eval_retrieval", cmd_eval_retrieval)
    t.add_argument("dataset", help="caption dataset (Karpathy JSON or folder, COCO, CSV, ...)")
    option(t, "--split", source=f"{fn}.split")
    option(t, "--format", source=f"{fn}.format")

    t, fn = _task(tasks, "zeroshot", "zero-shot scene classification accuracy, top-5, per class, confusion matrix",
                  f"{_PROTOCOLS}:eval_zeroshot", cmd_eval_zeroshot)
    t.add_argument("dataset", help="labelled dataset (ImageFolder, or Karpathy with classes.csv)")
    option(t, "--split", source=f"{fn}.split")
    option(t, "--format", source=f"{fn}.format")
    t.add_argument("--label-set", default=None, help="class phrases: eurosat, ucmerced, aid, ... (default: "
                                                       "auto-detect)")
    t.add_argument("--labels", default=None, help="filename,class CSV labelling (and selecting) the images by file "
                                                  "name, for a caption set without classes.csv")
    _add_sampling_args(t, fn)

    t, fn = _task(tasks, "classify", "accuracy of `geovl classify` on a labelled ImageFolder (class = folder name): "
                                     "overall and per-class accuracy, top-5, confusion matrix",
                  f"{_PROTOCOLS}:eval_classifier", cmd_eval_classify, out_flags=("--out", "-o", "--report-dir"))
    t.add_argument("dataset", help="an ImageFolder: one sub-folder of images per class")
    add_class_args(t)
    _add_sampling_args(t, fn)

    t, fn = _task(tasks, "linear-probe", "linear-probe and k-NN accuracy on frozen embeddings",
                  f"{_PROTOCOLS}:eval_linear_probe", cmd_eval_linear_probe)
    t.add_argument("dataset")
    option(t, "--format", source=f"{fn}.format")
    option(t, "--test-fraction", type=float, source=f"{fn}.test_fraction", help="test share when the set has no splits")
    t.add_argument("--shots", type=int, default=None, help="training images per class (few-shot)")
    option(t, "--knn-k", type=int, source=f"{fn}.knn_k", help="neighbours of the k-NN classifier")
    t.add_argument("--limit-per-class", type=int, default=None, help="use N random images per class")
    option(t, "--seed", type=int, source=f"{fn}.seed")

    t, fn = _task(tasks, "suite", "zero-shot over the 10-dataset protocol and retrieval sets found under a folder",
                  f"{_PROTOCOLS}:eval_suite", cmd_eval_suite)
    t.add_argument("root", help="folder holding benchmark datasets (AID/, EuroSAT/, RESISC45/, UCM-Captions/, ...)")
    t.add_argument("--limit-per-class", type=int, default=None, help="evaluate N random images per class")

    for name, help in (("caption", "BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, S*m of predicted captions"),
                       ("change-caption", "the same metrics for change captions, split by changed / unchanged")):
        t, fn = _task(tasks, name, help, f"{_TASKS}:eval_captions", cmd_eval_captions, model=False)
        t.add_argument("--predictions", required=True,
                       help="JSON [{image_id, caption}] or {id: caption}, JSONL, or a `geovl caption` output folder")
        t.add_argument("--references", required=True, help="caption dataset with the reference sentences")
        option(t, "--split", source=f"{fn}.split")
        t.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
        t.add_argument("--only-predicted", action="store_true",
                       help="score only the split's images that have a prediction (when you have only some of a "
                            "dataset's images); the report says how many")

    t, fn = _task(tasks, "generation", "generated images: FD on backbone features, CLIP score, zero-shot accuracy; "
                                       "with --generator, generate class images and score them next to real "
                                       "held-out ones, with a GSD probe for resolution control",
                  f"{_TASKS}:eval_generation", cmd_eval_generation)
    t.add_argument("manifest", nargs="?", default=None,
                   help="JSONL with one {image, prompt[, label]} per generated image (or give --generator)")
    t.add_argument("--real", default=None,
                   help="manifest mode: folder of real images for the Frechet distance; --generator mode: labelled "
                        "real dataset at --gsd (default: eurosat_rgb of the shared data folder)")
    _add_generator_args(t)

    t, fn = _task(tasks, "index", "recall@k of a faiss index against exact search on embeddings",
                  f"{_TASKS}:eval_index", cmd_eval_index, model=False)
    t.add_argument("embeddings", help="a `geovl embed --out` folder or an .npy file of L2-normalised rows")
    option(t, "--factory", source=f"{fn}.factory", help="faiss index_factory string (HNSW32, IVF256,Flat, ...)")
    option(t, "--queries", type=int, source=f"{fn}.queries", help="rows held out as queries")
    t.add_argument("--nprobe", type=int, default=None)
    t.add_argument("--ef-search", type=int, default=None)
    option(t, "--seed", type=int, source=f"{fn}.seed")

    _add_rva_parser(tasks)


def _add_rva_parser(tasks: Any) -> None:
    t, fn = _task(tasks, "rva", "recall vs searched area: rank an index's georeferenced chips for queries with known "
                                "target footprints and report recall against the km² an analyst inspects (curve, "
                                "area at 50 and 90 percent recall, per query)", _RVA, cmd_eval_rva, model=False)
    t.add_argument("index", help="an index folder of georeferenced chips (lon_min/lat_min/lon_max/lat_max metadata)")
    t.add_argument("queries", help="JSONL or CSV: per query a text or image and a target box (lon_min, lat_min, "
                                   "lon_max, lat_max) or point (lon, lat); see docs/eval.md")
    option(t, "--max-chips", type=int, source=f"{fn}.max_chips", help="chips inspected per query at most")
    option(t, "--cover", type=float, source=f"{fn}.cover",
           help="share of a target box the inspected chips must cover for the query to count as found")
    t.add_argument("--area-range", default=None, metavar="MIN,MAX",
                   help="km² range of the curve and its AUC; give the same range to compare runs (default: the "
                        "first chip's area to the largest searched area)")
    t.add_argument("--model", default=None, help="query encoder (default: the model the index was built with)")
    option(t, "--device", source=f"{fn}.device", help="auto (CUDA when present), cpu, cuda, cuda:N")
    option(t, "--precision", choices=PRECISIONS, source=f"{fn}.precision")


def _task(tasks: Any, name: str, help: str, fn: str, handler: Handler, *, model: bool = True,
          out_flags: tuple[str, ...] = ("--out", "-o")) -> tuple[argparse.ArgumentParser, str]:
    """A task parser with the flags every task shares; returns it and ``fn`` (the library function's source)."""
    t = add_command(tasks, name, help, handler)
    if model:
        add_model_args(t)
        option(t, "--batch-size", type=int, source=f"{fn}.batch_size", help="images per forward pass")
        t.add_argument("--workers", type=int, default=None, help="decode workers")
    t.add_argument(*out_flags, dest="out", default=None, help=f"report folder (default: {REPORT_ROOT}/{name})")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return t, fn


def _add_sampling_args(t: argparse.ArgumentParser, fn: str) -> None:
    t.add_argument("--limit-per-class", type=int, default=None, help="evaluate N random images per class")
    t.add_argument("--holdout", type=float, default=None,
                   help="score only this stable hold-out fraction (what training's holdout_fraction kept out)")
    option(t, "--seed", type=int, source=f"{fn}.seed", help="seed of --limit-per-class sampling")


_PROTOCOL = "geovl.eval.generation_protocol:eval_generator"
#: ``--generator`` mode's flags (dest names), refused in manifest mode.
_GENERATOR_FLAGS = ("per_class", "steps", "guidance", "guidance_resolution", "sampler", "seed", "gsd",
                    "resolution_gsds", "probe_data", "probe_gsd", "label_set", "holdout", "save_images")


def _add_generator_args(t: argparse.ArgumentParser) -> None:
    g = t.add_argument_group("--generator mode (generate, then score next to real held-out images)")
    g.add_argument("--generator", default=None, metavar="NAME",
                   help="generator: registry name (geovl-gen-small) or folder; its own backbone scores the images")
    option(g, "--per-class", type=int, source=f"{_PROTOCOL}.per_class", help="images generated per class")
    g.add_argument("--steps", type=int, default=None, help="sampler steps (default: the generator's)")
    g.add_argument("--guidance", type=float, default=None, help="text guidance weight (default: the generator's)")
    g.add_argument("--guidance-resolution", type=float, default=None, metavar="G",
                   help="resolution guidance weight (default: --guidance)")
    option(g, "--sampler", source=f"{_PROTOCOL}.sampler", help="ddim, ddpm or euler")
    option(g, "--seed", type=int, source=f"{_PROTOCOL}.seed", help="image k of every prompt is seeded seed + k")
    option(g, "--gsd", type=float, source=f"{_PROTOCOL}.gsd", help="GSD (m/px) of --real and of the class images")
    option(g, "--resolution-gsds", source=f"{_PROTOCOL}.resolution_gsds", metavar="COARSE,FINE",
           help="the two GSDs of the resolution-control pairs")
    g.add_argument("--probe-data", default=None, metavar="DIR",
                   help="images of one known GSD for the GSD probe (default: ucm_captions of the shared data folder)")
    option(g, "--probe-gsd", type=float, source=f"{_PROTOCOL}.probe_gsd", help="GSD (m/px) of --probe-data")
    option(g, "--label-set", source=f"{_PROTOCOL}.label_set", help="class phrases of --real")
    option(g, "--holdout", type=float, source=f"{_PROTOCOL}.holdout",
           help="the held-out share of --real and --probe-data (what training's holdout_fraction kept out)")
    g.add_argument("--save-images", action="store_true",
                   help="also write every generated image and a generated.jsonl manifest to the report folder")


def _parse_area_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--area-range must be MIN,MAX in km² (e.g. 0.1,1000), got {text!r}") from None
    if not 0 < lo < hi:
        raise ValueError(f"--area-range must satisfy 0 < MIN < MAX, got {text!r}")
    return lo, hi


def _parse_gsds(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--resolution-gsds must be COARSE,FINE in metres per pixel (e.g. 10,0.5), got {text!r}") \
            from None


def _run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords every model-based task takes: batch size, workers, progress."""
    return {"progress": not args.quiet, **given(args, "batch_size", "workers")}


def finish_report(report: Any, args: argparse.Namespace, **extra: Any) -> int:
    """Write ``report`` to ``--out`` and print its summary (plus ``extra`` entries)."""
    from geovl.eval.report import write_report

    out = args.out or f"{REPORT_ROOT}/{report.task}"
    files = write_report(report, out)
    print_json({"task": report.task, "figures": report.figures, **extra,
                "report": {k: str(v) for k, v in files.items()}})
    return 0


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from geovl.eval.protocols import eval_retrieval

    report = eval_retrieval(load_backbone_from_args(args), args.dataset, **given(args, "split", "format"),
                            **_run_kwargs(args))
    return finish_report(report, args)


def cmd_eval_zeroshot(args: argparse.Namespace) -> int:
    from geovl.eval.protocols import eval_zeroshot

    report = eval_zeroshot(load_backbone_from_args(args), args.dataset, label_set=args.label_set,
                           limit_per_class=args.limit_per_class, holdout=args.holdout, labels=args.labels,
                           **given(args, "split", "format", "seed"), **_run_kwargs(args))
    return finish_report(report, args)


def cmd_eval_classify(args: argparse.Namespace) -> int:
    labels = check_classes(args)
    if not Path(args.dataset).is_dir():
        raise ValueError(f"{args.dataset}: eval classify needs one labelled dataset folder (an ImageFolder: one "
                         "sub-folder per class)")
    from geovl.eval.protocols import eval_classifier
    from geovl.tasks.zeroshot.classifier import ZeroShotClassifier

    classifier = ZeroShotClassifier(load_backbone_from_args(args), labels, label_set=args.label_set)
    report = eval_classifier(classifier, args.dataset, holdout=args.holdout, limit_per_class=args.limit_per_class,
                             **given(args, "seed"), **_run_kwargs(args))
    return finish_report(report, args, per_class=report.details["per_class"])


def cmd_eval_linear_probe(args: argparse.Namespace) -> int:
    from geovl.eval.protocols import eval_linear_probe

    report = eval_linear_probe(load_backbone_from_args(args), args.dataset, shots=args.shots,
                               limit_per_class=args.limit_per_class,
                               **given(args, "format", "test_fraction", "knn_k", "seed"), **_run_kwargs(args))
    return finish_report(report, args)


def cmd_eval_suite(args: argparse.Namespace) -> int:
    from geovl.eval.protocols import eval_suite

    args.out = args.out or f"{REPORT_ROOT}/suite"  # the per-dataset reports go beside the suite's
    report = eval_suite(load_backbone_from_args(args), args.root, limit_per_class=args.limit_per_class,
                        out_dir=args.out, **_run_kwargs(args))
    return finish_report(report, args)


def cmd_eval_captions(args: argparse.Namespace) -> int:
    from geovl.eval.tasks import eval_captions

    report = eval_captions(args.predictions, args.references, change=args.eval_task == "change-caption",
                           meteor=not args.no_meteor, only_predicted=args.only_predicted, **given(args, "split"))
    return finish_report(report, args)


def cmd_eval_generation(args: argparse.Namespace) -> int:
    if args.generator is not None:
        return _eval_generator(args)
    if args.manifest is None:
        raise ValueError("give a MANIFEST of generated images to score, or --generator NAME to generate class images "
                         "and score them")
    extra = [f"--{name.replace('_', '-')}" for name in _GENERATOR_FLAGS if vars(args).get(name) not in (None, False)]
    if extra:
        raise ValueError(f"{', '.join(extra)} apply with --generator only (a MANIFEST is scored as it is)")
    from geovl.eval.tasks import eval_generation

    report = eval_generation(load_backbone_from_args(args), args.manifest, real=args.real, **_run_kwargs(args))
    return finish_report(report, args)


def _eval_generator(args: argparse.Namespace) -> int:
    """``geovl eval generation --generator NAME``: the generation protocol."""
    if args.manifest is not None:
        raise ValueError(f"give a MANIFEST ({args.manifest}) or --generator, not both")
    if args.model is not None or args.arch is not None:
        raise ValueError("--model / --arch choose the scoring backbone of manifest mode; with --generator the "
                         "generator's own backbone scores the images")
    from geovl.eval.generation_protocol import eval_generator
    from geovl.models.generator import load_generator

    kwargs = given(args, "per_class", "steps", "guidance", "guidance_resolution", "sampler", "seed", "gsd",
                   "probe_gsd", "label_set", "holdout", "batch_size")
    if args.resolution_gsds is not None:
        kwargs["resolution_gsds"] = _parse_gsds(args.resolution_gsds)
    generator = load_generator(args.generator, **given(args, "device", "precision"))
    args.out = args.out or f"{REPORT_ROOT}/generation"
    report = eval_generator(generator, args.real, probe_data=args.probe_data, out=args.out,
                            save_images=args.save_images, progress=not args.quiet, **kwargs)
    return finish_report(report, args)


def cmd_eval_index(args: argparse.Namespace) -> int:
    from geovl.eval.tasks import eval_index

    report = eval_index(args.embeddings, nprobe=args.nprobe, ef_search=args.ef_search,
                        **given(args, "factory", "queries", "seed"))
    return finish_report(report, args)


def cmd_eval_rva(args: argparse.Namespace) -> int:
    from geovl.eval.rva import eval_rva, format_rva_table, write_rva_report

    report = eval_rva(args.index, args.queries, model=args.model, area_range=_parse_area_range(args.area_range),
                      progress=not args.quiet, **given(args, "max_chips", "cover", "device", "precision"))
    files = write_rva_report(report, args.out or f"{REPORT_ROOT}/rva")
    if not args.quiet:
        warn(format_rva_table(report))  # the JSON summary below is stdout's, as for every eval task
    print_json({"task": report.task, "figures": report.figures, "report": {k: str(v) for k, v in files.items()}})
    return 0
