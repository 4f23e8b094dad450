"""``geovl embed``: images, GeoTIFF scenes (as chips) or datasets to a resumable folder of embeddings."""

from __future__ import annotations

import argparse
from typing import Any

from geovl.cli.common import (
    add_command,
    add_model_args,
    add_source_args,
    given,
    library_default,
    load_backbone_from_args,
    option,
    print_json,
    sources_from_args,
    warn,
)

_CONFIG = "geovl.index.pipeline:EmbedConfig"


def add_parser(sub: Any) -> None:
    p = add_command(sub, "embed", "embed images, GeoTIFF scenes (as chips) or datasets into a folder "
                                  "(partitioned .npy + metadata parquet; re-running resumes)", cmd_embed)
    p.add_argument("paths", nargs="+", help="image folders/files, GeoTIFF scenes, or dataset files (caption JSON, "
                                           "CSV/JSONL/parquet, webdataset .tar)")
    add_model_args(p)
    p.add_argument("--out", "-o", required=True, help="output folder (re-running into it resumes)")
    add_source_args(p)
    option(p, "--batch-size", type=int, source=f"{_CONFIG}.batch_size", help="images per forward pass")
    p.add_argument("--workers", type=int, default=None,
                   help="decode processes beside the model; 0 decodes in the model's process (default: 0 for a "
                        "model on a CPU with <= 4 cores, where that is faster, else cores - 1)")
    option(p, "--partition-size", type=int, source=f"{_CONFIG}.partition_size",
           help="records per partition (unit of resume)")
    p.add_argument("--limit", type=int, default=None, help="embed only the first N inputs")
    p.add_argument("--runner", choices=["local", "ray"], default="local",
                   help="local: this process; ray: a Ray Data job over partitions (a cluster via --ray-address)")
    option(p, "--ray-actors", dest="num_actors", metavar="N", type=int,
           source="geovl.index.ray_runner:run_embed_ray.num_actors", help="model replicas for --runner ray")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def cmd_embed(args: argparse.Namespace) -> int:
    if args.runner == "ray":
        from geovl._optional import require

        require("ray", extra="dist", feature="--runner ray")  # before any work starts
    from geovl.index.pipeline import EmbedConfig, run_embed

    sources = sources_from_args(args, args.paths)
    config = EmbedConfig(workers=args.workers, progress=not args.quiet, limit=args.limit,
                         **given(args, "batch_size", "partition_size"))
    backbone = load_backbone_from_args(args)
    warn(f"model: {backbone}")
    if args.runner == "ray":
        from geovl.index.ray_runner import run_embed_ray

        model = args.model if args.model is not None else library_default("geovl.models.factory:load_backbone.model")
        summary = run_embed_ray(model, sources, args.out, config, address=args.ray_address,
                                **given(args, "device", "precision", "num_actors"))
    else:
        summary = run_embed(backbone, sources, args.out, config)
    for path, err in summary.failures[:10]:
        warn(f"skipped {path}: {err}")
    print_json({
        "images": summary.embedded + summary.resumed, "embedded_now": summary.embedded, "resumed": summary.resumed,
        "failed": summary.failed, "partitions": summary.partitions, "dim": backbone.embed_dim,
        "seconds": round(summary.seconds, 2), "images_per_second": round(summary.images_per_second, 1),
        "precision": backbone.precision, "device": str(backbone.device), "out": str(summary.out_dir),
    }, indent=None)
    return 0
