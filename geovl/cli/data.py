"""``geovl data``, ``geovl chips`` and ``geovl synth``: inspect datasets, cut scenes into chips, write synthetic
datasets."""

from __future__ import annotations

import argparse
import json
from typing import Any

from geovl.cli.common import add_command, given, option, parse_bands, print_json

_CHIPS = "geovl.io.chips:ChipReader.__init__"

#: Tiles written by ``geovl synth`` when ``--n`` is not given (pairs for change; per class for classification).
SYNTH_TILES = 500


def add_parser(sub: Any) -> None:
    p = add_command(sub, "chips", "cut a GeoTIFF scene into chips with a GeoJSON footprint index", cmd_chips)
    p.add_argument("scene", help="GeoTIFF (any band count / bit depth)")
    p.add_argument("--out", "-o", required=True, help="output folder (re-running resumes)")
    option(p, "--size", type=int, source=f"{_CHIPS}.size", help="chip side in pixels")
    option(p, "--overlap", type=int, source=f"{_CHIPS}.overlap", help="overlap between neighbouring chips in pixels")
    p.add_argument("--bands", default=None,
                   help="1-based band indexes (4,3,2) or a sensor preset (sentinel2-rgb, landsat8-rgb, naip-rgb, ...)")
    p.add_argument("--nodata", type=float, default=None, help="nodata value (default: the file's)")
    option(p, "--min-valid", dest="min_valid_fraction", metavar="FRACTION", type=float,
           source=f"{_CHIPS}.min_valid_fraction",
           help="skip chips with a smaller valid-pixel fraction")
    option(p, "--edge", choices=["pad", "shift", "drop"], source=f"{_CHIPS}.edge", help="what to do at the scene edge")
    option(p, "--format", dest="fmt", choices=["png", "jpg", "tif"], source="geovl.io.chip_export:export_chips.fmt",
           help="chip file format; tif writes georeferenced chips")
    p.add_argument("--quiet", "-q", action="store_true")

    p = add_command(sub, "data", "inspect a dataset: detected format, counts, splits, first sample", cmd_data)
    p.add_argument("path", help="dataset file or folder")
    p.add_argument("--format", default="auto", help="karpathy, coco, imagefolder, skyscript, gaia, webdataset, "
                   "git10m, levircc, second-cc, csv, jsonl, parquet (default: detect)")
    p.add_argument("--no-image-check", action="store_true", help="do not require the image files to exist")

    p = add_command(sub, "synth", "write a synthetic remote-sensing dataset in a real layout", cmd_synth)
    p.add_argument("kind", choices=["captions", "classification", "change"],
                   help="captions: Karpathy JSON; classification: ImageFolder; change: LEVIR-CC layout")
    p.add_argument("out", help="output folder (re-running resumes)")
    p.add_argument("--n", type=int, default=SYNTH_TILES, help="tiles (pairs; per class for classification)")
    option(p, "--seed", type=int, source="geovl.data.synthetic.writer:write_caption_dataset.seed")
    option(p, "--size", type=int, source="geovl.data.synthetic.config:SceneConfig.size", help="tile side in pixels")


def cmd_chips(args: argparse.Namespace) -> int:
    from geovl.io.chip_export import export_chips
    from geovl.io.chips import ChipReader

    reader = ChipReader(args.scene, bands=parse_bands(args.bands), nodata=args.nodata,
                        **given(args, "size", "overlap", "min_valid_fraction", "edge"))
    result = export_chips(reader, args.out, progress=not args.quiet, **given(args, "fmt"))
    print_json({"written": result.written, "existing": result.existing, "skipped": result.skipped,
                "index": str(result.index)}, indent=None)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from collections import Counter

    from geovl.data import autodetect, open_dataset

    kind = autodetect(args.path) if args.format == "auto" else args.format
    kwargs: dict[str, Any] = {}
    if args.no_image_check:
        kwargs["require_images"] = False
    samples: list[Any] = list(open_dataset(kind, args.path, **kwargs))
    splits = Counter(str(s["split"]) for s in samples)
    captions = sum(len(s["captions"]) for s in samples)
    labels = Counter(s.get("label") for s in samples if s.get("label") is not None)
    info = {"format": kind, "samples": len(samples), "captions": captions, "splits": dict(splits),
            "classes": len(labels), "first": samples[0] if samples else None}
    print(json.dumps(info, indent=2, default=str))  # samples may hold any value: print it as text
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from geovl.data import synthetic

    config = synthetic.SceneConfig(**given(args, "size"))
    seed = given(args, "seed")
    if args.kind == "captions":
        synthetic.write_caption_dataset(args.out, n=args.n, config=config, **seed)
    elif args.kind == "classification":
        synthetic.write_classification_dataset(args.out, n_per_class=args.n, config=config, **seed)
    else:
        synthetic.write_change_dataset(args.out, n=args.n, config=config, **seed)
    print(f"wrote {args.kind} dataset to {args.out}")
    return 0
