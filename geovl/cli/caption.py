"""``geovl caption``: images, GeoTIFF scenes (as chips), caption datasets or an index's collection to captions, in a
resumable folder of Parquet (or JSONL) shards; ``--attach-to INDEX`` makes the captions searchable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from geovl.cli.common import (
    PRECISIONS,
    add_command,
    add_source_args,
    given,
    option,
    print_json,
    sources_from_args,
    warn,
)

_CONFIG = "geovl.tasks.captioning.batch:CaptionRunConfig"
_DECODING = "geovl.models.decoding:DecodingConfig"
_LOAD = "geovl.models.captioner:load_captioner"


def add_decoding_args(p: Any) -> None:
    """The :class:`geovl.models.decoding.DecodingConfig` flags (defaults read from it)."""
    g = p.add_argument_group("decoding")
    option(g, "--decoding", dest="method", choices=["greedy", "beam", "nucleus"], source=f"{_DECODING}.method",
           help="greedy, beam search or nucleus sampling")
    option(g, "--beam-size", type=int, source=f"{_DECODING}.beam_size", help="beams per image (beam)")
    option(g, "--length-penalty", type=float, source=f"{_DECODING}.length_penalty",
           help="exponent of the length normalisation of finished beams (> 0 favours longer captions)")
    option(g, "--top-p", type=float, source=f"{_DECODING}.top_p", help="nucleus mass (nucleus)")
    option(g, "--temperature", type=float, source=f"{_DECODING}.temperature", help="softmax temperature (nucleus)")
    option(g, "--max-length", type=int, source=f"{_DECODING}.max_length", help="most words per caption")
    option(g, "--min-length", type=int, source=f"{_DECODING}.min_length", help="fewest words per caption")
    option(g, "--no-repeat-ngram", dest="no_repeat_ngram_size", type=int,
           source=f"{_DECODING}.no_repeat_ngram_size", help="never repeat an n-gram of this size (0: off)")
    option(g, "--repetition-penalty", type=float, source=f"{_DECODING}.repetition_penalty",
           help="penalty on words already used (1: off)")
    option(g, "--seed", type=int, source=f"{_DECODING}.seed", help="sampling seed (nucleus)")


def decoding_from_args(args: argparse.Namespace) -> Any:
    from geovl.models.decoding import DecodingConfig

    return DecodingConfig(**given(args, "method", "beam_size", "length_penalty", "top_p", "temperature",
                                  "max_length", "min_length", "no_repeat_ngram_size", "repetition_penalty", "seed"))


def add_parser(sub: Any) -> None:
    p = add_command(sub, "caption", "caption images, GeoTIFF scenes (as chips), caption datasets, a list file or an "
                                    "index's collection into Parquet / JSONL shards (re-running resumes)", cmd_caption)
    p.add_argument("paths", nargs="+", help="image folders/files, a .txt list of image paths, GeoTIFF scenes, "
                                           "dataset files (caption JSON, CSV/JSONL/parquet, .tar), or an index or "
                                           "embeddings folder (its collection)")
    option(p, "--model", "-m", source=f"{_LOAD}.model",
           help="captioner: registry name (geovl-caption-small, blip-base), captioner folder or BLIP hub id")
    option(p, "--device", source=f"{_LOAD}.device", help="auto (CUDA when present), cpu, cuda, cuda:N")
    option(p, "--precision", choices=PRECISIONS, source=f"{_LOAD}.precision", help="weight precision")
    p.add_argument("--out", "-o", required=True, help="output folder (re-running into it resumes)")
    add_source_args(p)
    add_decoding_args(p)
    option(p, "--batch-size", type=int, source=f"{_CONFIG}.batch_size", help="images per model call")
    p.add_argument("--workers", type=int, default=None,
                   help="decode processes beside the model (default: 0 on a CPU with <= 4 cores, else cores - 1)")
    option(p, "--partition-size", type=int, source=f"{_CONFIG}.partition_size",
           help="inputs per shard (unit of resume)")
    option(p, "--shard-format", dest="shard_format", choices=["parquet", "jsonl"], source=f"{_CONFIG}.format",
           help="output shard format")
    p.add_argument("--limit", type=int, default=None, help="caption only the first N inputs")
    p.add_argument("--runner", choices=["local", "ray"], default="local",
                   help="local: this process; ray: a Ray Data job over partitions (a cluster via --ray-address)")
    option(p, "--ray-actors", dest="num_actors", metavar="N", type=int,
           source="geovl.tasks.captioning.ray_runner:run_captions_ray.num_actors", help="captioner replicas (ray)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--attach-to", metavar="INDEX", default=None,
                   help="also write the captions into this index's metadata (searchable with --where, shown in the "
                        "demo)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _sources(args: argparse.Namespace) -> list[Any]:
    from geovl.index.captions import index_sources, is_collection_folder

    indexes = [p for p in args.paths if is_collection_folder(Path(p))]  # index or embeddings folders
    others = [p for p in args.paths if p not in indexes]
    sources = [s for p in indexes for s in index_sources(Path(p))]
    if others:
        sources += sources_from_args(args, others)
    return sources


def cmd_caption(args: argparse.Namespace) -> int:
    from geovl._optional import require
    from geovl.tasks.captioning.batch import CaptionRunConfig, run_captions

    if args.runner == "ray":
        require("ray", extra="dist", feature="--runner ray")  # before any work starts
    if args.attach_to is not None and not Path(args.attach_to).is_dir():
        raise FileNotFoundError(f"--attach-to {args.attach_to}: no such index folder")
    decoding = decoding_from_args(args)
    config = CaptionRunConfig(workers=args.workers, progress=not args.quiet, limit=args.limit,
                              **given(args, "batch_size", "partition_size"),
                              **({"format": args.shard_format} if args.shard_format else {}))
    sources = _sources(args)
    if args.runner == "ray":
        from geovl.cli.common import library_default
        from geovl.tasks.captioning.ray_runner import run_captions_ray

        model = args.model if args.model is not None else library_default(f"{_LOAD}.model")
        summary = run_captions_ray(model, sources, args.out, config, decoding, address=args.ray_address,
                                   **given(args, "device", "precision", "num_actors"))
    else:
        from geovl.models.captioner import load_captioner

        captioner = load_captioner(**given(args, "model", "device", "precision"))
        warn(f"captioner: {captioner!r}")
        summary = run_captions(captioner, sources, args.out, config, decoding)
    for path, err in summary.failures[:10]:
        warn(f"skipped {path}: {err}")
    report: dict[str, Any] = {
        "images": summary.captioned + summary.resumed, "captioned_now": summary.captioned,
        "resumed": summary.resumed, "failed": summary.failed, "partitions": summary.partitions,
        "seconds": round(summary.seconds, 2), "images_per_second": round(summary.images_per_second, 2),
        "decoding": decoding.to_dict(), "out": str(summary.out_dir),
    }
    if args.attach_to is not None:
        from geovl.index.captions import attach_captions

        report["attached"] = attach_captions(args.attach_to, summary.out_dir)
    print_json(report, indent=None)
    return 0
