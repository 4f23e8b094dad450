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
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def _add_model_args(p: argparse.ArgumentParser, default: str = "random:geovl-tiny") -> None:
    p.add_argument("--model", "-m", default=default,
                   help="registry name, openclip:<arch>/<tag>, random:<arch>, or a local checkpoint path "
                        f"(default: {default}, an untrained model)")
    p.add_argument("--arch", default=None, help="architecture of a bare weights file (e.g. ViT-B-32)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="weight precision (auto: bf16 on GPUs and on CPUs with bf16 units, else fp32)")


def _load(args: argparse.Namespace) -> Any:
    from geovl.vlm import load_backbone

    return load_backbone(args.model, architecture=args.arch, device=args.device, precision=args.precision)


# ---------------------------------------------------------------- models


def cmd_models(args: argparse.Namespace) -> int:
    from geovl.vlm.registry import list_architectures, list_checkpoints
    from geovl.vlm.weights import checkpoint_dir, local_checkpoint

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
    print(f"{'NAME':<{width}}  {'ARCH':<10} {'FORMAT':<14} LOCAL  SOURCE")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['architecture']:<10} {r['format']:<14} {'yes' if r['local'] else 'no ':<5}  "
              f"{r['source']}")
    n_local = sum(1 for r in rows if r["local"])
    print(f"\n{len(rows)} checkpoints, {n_local} available locally. Weights you download by hand go in "
          f"{checkpoint_dir()} (or pass a file path as --model).")
    print("Random-weight architectures (random:<arch>): " + ", ".join(list_architectures()[:12]) + ", ...")
    if not args.all:
        print("Add --all to list every open_clip pretrained tag (openclip:<arch>/<tag>).")
    return 0


# ---------------------------------------------------------------- embed


def cmd_embed(args: argparse.Namespace) -> int:
    from geovl.index.embed import embed_images, model_record, save_embed_result

    backbone = _load(args)
    print(f"model: {backbone}", file=sys.stderr)
    result = embed_images(backbone, args.paths, batch_size=args.batch_size, workers=args.workers, limit=args.limit,
                          progress=not args.quiet)
    if args.out:
        save_embed_result(result, args.out, model_record(backbone))
    summary = {
        "images": len(result.files), "failed": len(result.failures), "dim": backbone.embed_dim,
        "seconds": round(result.seconds, 2), "images_per_second": round(result.images_per_second, 1),
        "precision": backbone.precision, "device": str(backbone.device), "out": args.out,
    }
    for _path, err in result.failures[:10]:
        print(f"skipped: {err}", file=sys.stderr)
    print(json.dumps(summary))
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


# ---------------------------------------------------------------- parser


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

    p = sub.add_parser("embed", help="embed image files or folders and report throughput")
    p.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    _add_model_args(p)
    p.add_argument("--out", "-o", default=None, help="folder for embeddings.npy, files.txt, manifest.json")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="decode workers (default: cores - 1, at least 1)")
    p.add_argument("--limit", type=int, default=None, help="embed only the first N files")
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

    p = sub.add_parser("data", help="inspect a dataset: detected format, counts, splits, first sample")
    p.add_argument("path", help="dataset file or folder")
    p.add_argument("--format", default="auto", help="karpathy, coco, imagefolder, skyscript, gaia, webdataset, "
                   "git10m, levircc, second-cc, csv, jsonl, parquet (default: detect)")
    p.add_argument("--no-image-check", action="store_true", help="do not require the image files to exist")
    p.set_defaults(handler=cmd_data)

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
