"""``geovl change-caption``: what changed between two dates of one place: a caption, a changed / unchanged verdict,
P(changed) and a change heat map, for two images, two GeoTIFFs of the same area, or a folder of pairs.

Rules:

* ``BEFORE AFTER``: when both are georeferenced rasters, the after one is reprojected onto the before one's grid and
  both are cut into the same chips (the model's input size, ``--chip-size``), one line (row) per chip; otherwise the
  two images are one pair. ``--plain`` compares georeferenced rasters as plain images; one georeferenced raster and
  one plain image is an error.
* ``--heatmap PATH``: ``.tif`` / ``.tiff`` writes a float32 GeoTIFF of P(changed) (georeferenced inputs only: one
  mosaic covering the before scene); any other suffix (``.png``, ``.jpg``) the after image with the heat map drawn
  over it in red.
* ``--output FILE`` writes the rows of the pair or chips (``.parquet``: GeoParquet with chip footprints; else JSON
  Lines); with ``--pairs DIR`` it is the run folder (re-running into it resumes; ``geovl caption``'s rules).
* Lines for people by default, ``--json`` for programs; skipped pairs and images without a partner go to stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from geovl.cli.caption import add_decoding_args, decoding_from_args
from geovl.cli.common import PRECISIONS, add_command, given, option, parse_bands, print_json, warn

_LOAD = "geovl.models.change_captioner:load_change_captioner"
_CONFIG = "geovl.tasks.change_captioning.batch:ChangeCaptionRunConfig"
_GEO = "geovl.tasks.change_captioning.geo"
_GEOTIFF_SUFFIXES = (".tif", ".tiff")


def add_parser(sub: Any) -> None:
    p = add_command(sub, "change-caption", "describe what changed between two images, two GeoTIFFs of one area "
                                           "(aligned and cut into chips) or a folder of pairs (--pairs, resumable): "
                                           "caption, changed / unchanged, P(changed), heat map", cmd_change_caption)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="BEFORE AFTER: two images or two GeoTIFFs")
    p.add_argument("--pairs", metavar="DIR", default=None,
                   help="a pairs folder (A/ and B/, <split>/A|B or images/<split>/A|B; label/ masks optional)")
    p.add_argument("--output", "--out", "-o", dest="output", metavar="OUT", default=None,
                   help="with --pairs: the run folder (re-running resumes); else a .jsonl / .parquet file of rows")
    option(p, "--model", "-m", source=f"{_LOAD}.model", help="change captioner: registry name or folder")
    option(p, "--device", source=f"{_LOAD}.device", help="auto (CUDA when present), cpu, cuda, cuda:N")
    option(p, "--precision", choices=PRECISIONS, source=f"{_LOAD}.precision", help="weight precision")
    p.add_argument("--threshold", type=float, default=None,
                   help="P(changed) at or above which a pair is changed (default: the model's calibrated one)")
    p.add_argument("--heatmap", metavar="PATH", default=None,
                   help="write the heat map: .tif for georeferenced inputs (a GeoTIFF mosaic), .png / .jpg an overlay "
                        "on the after image")
    p.add_argument("--json", action="store_true", help="print JSON")
    option(p, "--batch-size", type=int, source=f"{_CONFIG}.batch_size", help="pairs per model call")
    p.add_argument("--workers", type=int, default=None,
                   help="decode processes beside the model (default: 0 on a CPU with <= 4 cores, else cores - 1)")
    g = p.add_argument_group("GeoTIFF pairs")
    g.add_argument("--plain", action="store_true", help="compare georeferenced rasters as plain images (no chips)")
    g.add_argument("--chip-size", type=int, default=None, help="chip side in pixels (default: the model's input size)")
    g.add_argument("--stride", type=int, default=None, help="pixels between chip origins (default: the chip size)")
    option(g, "--resampling", source=f"{_GEO}:align_pair.resampling",
           help="how the after raster is resampled onto the before grid (nearest, bilinear, cubic, ...)")
    g.add_argument("--bands", default=None, help="band indexes (4,3,2) or a sensor preset, for both dates")
    g.add_argument("--nodata", type=float, default=None, help="nodata value of both rasters (default: the files')")
    option(g, "--min-valid", dest="min_valid_fraction", metavar="FRACTION", type=float,
           source=f"{_GEO}:pair_chips.min_valid_fraction", help="skip chips with less area valid in both dates")
    r = p.add_argument_group("--pairs runs")
    option(r, "--partition-size", type=int, source=f"{_CONFIG}.partition_size", help="pairs per shard (unit of resume)")
    option(r, "--shard-format", dest="shard_format", choices=["parquet", "jsonl"], source=f"{_CONFIG}.format",
           help="output shard format")
    r.add_argument("--limit", type=int, default=None, help="describe only the first N pairs")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_decoding_args(p)


def cmd_change_caption(args: argparse.Namespace) -> int:
    from geovl.models.change_captioner import check_threshold

    if args.threshold is not None:
        check_threshold(args.threshold)
    if args.pairs is not None:
        if args.images:
            raise ValueError("give BEFORE AFTER or --pairs DIR, not both")
        if args.output is None:
            raise ValueError("--pairs needs --output OUT (the run folder; re-running into it resumes)")
        if args.heatmap is not None:
            raise ValueError("--heatmap is for one BEFORE AFTER pair; a --pairs run stores each heat map in its rows")
        return _run_pairs(args)
    if len(args.images) != 2:
        raise ValueError(f"give two images, BEFORE AFTER (got {len(args.images)}), or --pairs DIR --output OUT")
    before, after = args.images
    for path in (before, after):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
    if args.output is not None and Path(args.output).is_dir():
        raise ValueError(f"--output {args.output} is a folder; for BEFORE AFTER give a .jsonl or .parquet file (a "
                         "folder is for --pairs runs)")
    geo = not args.plain and _georeferenced(before, after)
    if args.heatmap is not None and not geo and Path(args.heatmap).suffix.lower() in _GEOTIFF_SUFFIXES:
        raise ValueError(f"--heatmap {args.heatmap}: plain images have no georeference; write the heat map as .png")
    pipeline = _pipeline(args)
    if geo:
        return _geo_pair(args, pipeline, before, after)
    return _plain_pair(args, pipeline, before, after)


def _georeferenced(before: str, after: str) -> bool:
    from geovl.tasks.change_captioning.geo import is_georeferenced

    flags = is_georeferenced(before), is_georeferenced(after)
    if flags[0] != flags[1]:
        geo, plain = (before, after) if flags[0] else (after, before)
        raise ValueError(f"{geo} is georeferenced but {plain} is not: give two GeoTIFFs of the same area, or --plain "
                         "to compare them as plain images")
    return flags[0]


def _pipeline(args: argparse.Namespace) -> Any:
    from geovl.models.change_captioner import load_change_captioner
    from geovl.tasks.change_captioning import ChangeCaptioningPipeline

    model = load_change_captioner(**given(args, "model", "device", "precision"))
    warn(f"change captioner: {model!r}")
    return ChangeCaptioningPipeline(model, decoding=decoding_from_args(args), threshold=args.threshold,
                                    workers=args.workers, **given(args, "batch_size"))


def _threshold(pipeline: Any) -> float:
    return float(pipeline.model.threshold if pipeline.threshold is None else pipeline.threshold)


def _line(label: str, row: dict[str, Any], width: int = 0) -> str:
    verdict = "changed" if row["changed"] else "unchanged"
    return f"{label:<{width}}  {verdict:<9}  {row['probability']:.3f}  {row['caption']}"


def _save_image(image: Any, path: str) -> None:
    from geovl.io.fs import atomic_path

    with atomic_path(path, suffix=".tmp" + Path(path).suffix) as tmp:
        image.save(tmp)


# ---------------------------------------------------------------- one pair of plain images


def _view_box(model: Any, size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """The part of an image of ``size`` the model sees (its centre square when it crops), or None for all of it."""
    from geovl.tasks.explain import model_view_box

    preprocess = getattr(getattr(model, "backbone", None), "preprocess", None)
    return None if preprocess is None else model_view_box(size, preprocess)


def _plain_pair(args: argparse.Namespace, pipeline: Any, before: str, after: str) -> int:
    from geovl.io.loading import load_image
    from geovl.tasks.change_captioning.batch import write_rows
    from geovl.tasks.change_captioning.geo import heatmap_overlay, result_columns

    described = pipeline([before], [after])
    if described.failures:
        raise ValueError(described.failures[0][1])
    result = described.results[0]
    row = {"before": before, "after": after, **result_columns(result), "threshold": _threshold(pipeline),
           "model": pipeline.model.name}
    if args.heatmap is not None:
        picture = load_image(after)
        _save_image(heatmap_overlay(picture, result.heatmap, box=_view_box(pipeline.model, picture.size)),
                    args.heatmap)
        row["heatmap_file"] = args.heatmap
    if args.output is not None:
        write_rows(args.output, [row])
    if args.json:
        print_json(row, indent=None)
    else:
        print(result.caption)
        print(f"{'changed' if result.changed else 'unchanged'} (P(changed) {result.probability:.3f}, threshold "
              f"{row['threshold']:.3f})")
        if args.heatmap is not None:
            warn(f"heat map: {args.heatmap}")
    return 0


# ---------------------------------------------------------------- two GeoTIFFs of one area


def _geo_pair(args: argparse.Namespace, pipeline: Any, before: str, after: str) -> int:
    from geovl.tasks.change_captioning.batch import write_rows
    from geovl.tasks.change_captioning.geo import describe_geotiff_pair, heatmap_overlay

    out = describe_geotiff_pair(pipeline, before, after, bands=parse_bands(args.bands), nodata=args.nodata,
                                chip_size=args.chip_size, stride=args.stride,
                                **given(args, "resampling", "min_valid_fraction"))
    for chip_id, err in out.failures:
        warn(f"skipped chip {chip_id}: {err}")
    pair = out.aligned
    rows = [{"before": before, "after": after, **row} for row in out.rows()]
    if args.heatmap is not None and out.chips:
        if Path(args.heatmap).suffix.lower() in _GEOTIFF_SUFFIXES:
            out.write_mosaic(args.heatmap)
        else:
            _save_image(heatmap_overlay(pair.after, out.mosaic()), args.heatmap)
    if args.output is not None:
        write_rows(args.output, rows)
    note = (f"{out.changed} of {len(out.chips)} chips changed ({out.grid[0]} x {out.grid[1]} grid; "
            f"{len(out.skipped)} skipped: no pixel valid in both dates; {len(out.failures)} unreadable); "
            f"{'after reprojected onto' if pair.reprojected else 'after already on'} the before grid ({pair.crs})")
    if args.json:
        print_json({"before": before, "after": after, "crs": pair.crs, "transform": list(pair.transform),
                    "shape": list(pair.shape), "reprojected": pair.reprojected, "grid": list(out.grid),
                    "threshold": _threshold(pipeline), "model": pipeline.model.name, "changed_chips": out.changed,
                    "chips": rows, "skipped": [list(cell) for cell in out.skipped],
                    "failures": [{"chip_id": c, "error": e} for c, e in out.failures],
                    "heatmap_file": args.heatmap if out.chips else None}, indent=None)
    else:
        width = max((len(r["chip_id"]) for r in rows), default=0)
        for row in rows:
            print(_line(row["chip_id"], row, width))
        print(note)
        if args.heatmap is not None and out.chips:
            warn(f"heat map: {args.heatmap}")
    if not out.chips:
        warn("no chip was described: the two rasters share no valid pixel in any chip")
        return 1
    return 0


# ---------------------------------------------------------------- a pairs folder


def _run_pairs(args: argparse.Namespace) -> int:
    from geovl.models.change_captioner import load_change_captioner
    from geovl.tasks.change_captioning.batch import (
        ChangeCaptionRunConfig,
        find_pairs,
        read_change_captions,
        run_change_captions,
    )

    config = ChangeCaptionRunConfig(workers=args.workers, progress=not args.quiet, limit=args.limit,
                                    threshold=args.threshold, **given(args, "batch_size", "partition_size"),
                                    **({"format": args.shard_format} if args.shard_format else {}))
    decoding = decoding_from_args(args)
    listing = find_pairs(args.pairs)  # a bad folder fails before the model loads
    model = load_change_captioner(**given(args, "model", "device", "precision"))
    warn(f"change captioner: {model!r}")
    summary = run_change_captions(model, listing, args.output, config, decoding)
    for pair_id, err in summary.failures[:10]:
        warn(f"skipped {pair_id}: {err}")
    for side, names in (("A (before)", summary.only_before), ("B (after)", summary.only_after)):
        if names:
            warn(f"{len(names)} image(s) only in {side}, without a pair: {', '.join(names[:10])}")
    rows = read_change_captions(summary.out_dir, ["pair_id", "caption", "changed", "probability",
                                                  "mask_changed_fraction"])
    changed = sum(bool(r["changed"]) for r in rows)
    report: dict[str, Any] = {
        "pairs": summary.described + summary.resumed, "described_now": summary.described,
        "resumed": summary.resumed, "changed": changed, "unchanged": len(rows) - changed, "failed": summary.failed,
        "only_before": len(summary.only_before), "only_after": len(summary.only_after),
        "partitions": summary.partitions, "seconds": round(summary.seconds, 2),
        "pairs_per_second": round(summary.pairs_per_second, 2),
        "threshold": model.threshold if config.threshold is None else config.threshold,
        "out": str(summary.out_dir),
    }
    if args.json:
        print_json(report, indent=None)
        return 0
    width = max((len(str(r["pair_id"])) for r in rows), default=0)
    for row in rows:
        mask = row.get("mask_changed_fraction")
        print(_line(str(row["pair_id"]), row, width) + ("" if mask is None else f"  (mask: {100 * mask:.1f}% changed)"))
    print(f"{report['pairs']} pairs: {changed} changed, {report['unchanged']} unchanged, {summary.failed} unreadable; "
          f"{report['only_before'] + report['only_after']} without a pair; rows in {summary.out_dir}")
    return 0
