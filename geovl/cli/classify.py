"""``geovl classify`` (zero-shot classes of images) and ``geovl classify-scene`` (a label map of a GeoTIFF scene).

Rules of ``geovl classify``: unreadable images are skipped, each named on stderr (``skipped PATH: reason``) and in
the ``--json`` output (``"failures"``); the command succeeds when at least one image was classified and fails
(exit status 1) when none could be. With ``--multi-label``, ``--top-k`` caps the classes reported per image and
defaults to all of them.
"""

from __future__ import annotations

import argparse
from typing import Any

from geovl.cli.common import (
    add_class_args,
    add_command,
    add_model_args,
    check_classes,
    given,
    load_backbone_from_args,
    option,
    parse_bands,
    print_json,
    warn,
)

#: ``--threshold`` when ``--multi-label`` is given without one.
DEFAULT_THRESHOLD = 0.5

_CALL = "geovl.tasks.zeroshot.classifier:ZeroShotClassifier.__call__"
_SCENE = "geovl.tasks.zeroshot.labelmap:classify_scene"


def add_parser(sub: Any) -> None:
    p = add_command(sub, "classify", "zero-shot scene classification of images and folders", cmd_classify)
    p.add_argument("paths", nargs="*", help="images and folders (searched recursively)")
    add_class_args(p)
    p.add_argument("--list-label-sets", action="store_true", help="print the label sets and exit")
    add_model_args(p)
    option(p, "--top-k", type=int, source=f"{_CALL}.top_k",
           help="classes reported per image; with --multi-label, the most reported, all when not given")
    p.add_argument("--multi-label", action="store_true",
                   help="report every class whose own score passes --threshold (sigmoid of the logit for SigLIP "
                        "models, else a softmax against generic background prompts) instead of the top k")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"score threshold in (0, 1) for --multi-label (default: {DEFAULT_THRESHOLD})")
    option(p, "--batch-size", type=int, source=f"{_CALL}.batch_size", help="images per forward pass")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", "-o", default=None, help="write predictions to a .csv (one row per rank) or .json file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = add_command(sub, "classify-scene", "zero-shot label map of a GeoTIFF scene: a uint8 GeoTIFF with one pixel "
                                           "per chip (255 = nodata), .classes.json / .classes.csv tables and a "
                                           ".chips.geojson of chip footprints with their classes", cmd_classify_scene)
    p.add_argument("scene", help="GeoTIFF (any band count / bit depth)")
    p.add_argument("--out", "-o", required=True, metavar="MAP.tif", help="the label map to write")
    add_class_args(p)
    add_model_args(p)
    p.add_argument("--probabilities", default=None, metavar="P.tif",
                   help="also write a float32 per-class probability GeoTIFF")
    option(p, "--chip-size", type=int, source=f"{_SCENE}.chip_size", help="chip side in scene pixels (= map pixel)")
    p.add_argument("--bands", default=None, help="band indexes (4,3,2) or a sensor preset (sentinel2-rgb, ...)")
    p.add_argument("--nodata", type=float, default=None, help="nodata value (default: the file's)")
    option(p, "--min-valid", dest="min_valid_fraction", metavar="FRACTION", type=float,
           source=f"{_SCENE}.min_valid_fraction",
           help="leave chips with a smaller valid-pixel fraction as nodata")
    option(p, "--batch-size", type=int, source=f"{_SCENE}.batch_size", help="chips per forward pass")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def list_label_sets() -> int:
    from geovl.data.labelsets import LABEL_SETS

    for name, table in LABEL_SETS.items():
        print(f"{name:<14} {len(table):>3} classes: {', '.join(table)}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    if args.list_label_sets:
        return list_label_sets()
    if not args.paths:
        raise ValueError("give images or folders to classify (or --list-label-sets; a GeoTIFF label map is "
                         "geovl classify-scene)")
    labels = check_classes(args)
    from geovl.data.sources import list_images
    from geovl.tasks.zeroshot.classifier import ZeroShotClassifier, check_threshold, check_top_k

    threshold = check_threshold_flags(args)
    if threshold is not None:
        check_threshold(threshold)
    if args.top_k is not None:
        check_top_k(args.top_k)
    paths = list_images(args.paths)
    if not paths:
        raise ValueError(f"no images found under {', '.join(args.paths)}")
    classifier = ZeroShotClassifier(load_backbone_from_args(args), labels, label_set=args.label_set)
    top_k = given(args, "top_k")
    if args.multi_label and not top_k:
        top_k["top_k"] = len(classifier.classes)
    result = classifier(paths, threshold=threshold, progress=not args.quiet, **top_k, **given(args, "batch_size"))
    failures = [{"image": str(paths[i]), "error": reason} for i, reason in result.failures]
    for failure in failures:
        warn(f"skipped {failure['image']}: {failure['error']}")
    if not result.predictions:
        raise ValueError(f"none of the {len(paths)} images could be read (each is listed above)")
    rows = [{"image": str(paths[i]), **pred.to_dict()} for i, pred in zip(result.kept, result.predictions, strict=True)]
    report_predictions(args, rows, failures, classes=classifier.classes, threshold=threshold)
    return 0


def check_threshold_flags(args: argparse.Namespace) -> float | None:
    """The multi-label threshold, or None for top-k classification."""
    if not args.multi_label:
        if args.threshold is not None:
            raise ValueError("--threshold applies to --multi-label; add --multi-label")
        return None
    return DEFAULT_THRESHOLD if args.threshold is None else float(args.threshold)


def report_predictions(args: argparse.Namespace, rows: list[dict[str, Any]], failures: list[dict[str, str]], *,
                       classes: list[str], threshold: float | None) -> None:
    """Write ``--out``, then print JSON (``--json``) or one line per image (unless ``--out`` was given)."""
    if args.out:
        from geovl.tasks.zeroshot.io import write_predictions

        write_predictions(args.out, rows)
        warn(f"wrote {len(rows)} predictions to {args.out}")
    if args.json:
        extra = {"multi_label": True, "threshold": threshold} if threshold is not None else {}
        print_json({"classes": classes, **extra, "predictions": rows, "failures": failures})
    elif not args.out:
        for row in rows:
            ranked = ", ".join(f"{lab} {score:.3f}" for lab, score in zip(row["labels"], row["scores"], strict=True))
            print(f"{row['image']}\t{ranked or '(no class passes the threshold)'}")


def cmd_classify_scene(args: argparse.Namespace) -> int:
    labels = check_classes(args)
    from geovl.tasks.zeroshot.classifier import ZeroShotClassifier
    from geovl.tasks.zeroshot.labelmap import classify_scene

    classifier = ZeroShotClassifier(load_backbone_from_args(args), labels, label_set=args.label_set)
    result = classify_scene(classifier, args.scene, args.out, bands=parse_bands(args.bands), nodata=args.nodata,
                            probabilities=args.probabilities, progress=not args.quiet,
                            **given(args, "chip_size", "min_valid_fraction", "batch_size"))
    print_json({
        "map": str(result.path), "classes": str(result.table_json), "table": str(result.table_csv),
        "footprints": str(result.footprints),
        "probabilities": str(result.probabilities_path) if result.probabilities_path else None,
        "grid": list(result.grid_shape), "classified": result.classified, "skipped": result.skipped,
        "counts": {k: v for k, v in result.counts.items() if v},
    })
    return 0
