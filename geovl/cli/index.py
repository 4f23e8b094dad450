"""``geovl index ACTION``: build, update, inspect and search FAISS indexes of ``geovl embed`` folders.

Every action but ``search`` prints the index manifest as JSON; ``search`` prints ranked hits (or JSON).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from geovl.cli.common import PRECISIONS, add_command, given, option, parse_size, print_json

_BUILD = "geovl.index.store:build_index"
_SEARCH = "geovl.index.search:Searcher.search"
_SEARCHER = "geovl.index.search:Searcher.__init__"


def add_parser(sub: Any) -> None:
    p = add_command(sub, "index", "build, update, inspect and search FAISS indexes of embeddings")
    actions = p.add_subparsers(dest="index_action", metavar="ACTION", required=True)

    t = add_command(actions, "build", "build an index from `geovl embed` folders (atomic: replaces --out only when "
                                      "complete)", cmd_index_build)
    t.add_argument("embeddings", nargs="+", help="embeddings folders of one model")
    t.add_argument("--out", "-o", required=True, help="index folder")
    option(t, "--factory", source=f"{_BUILD}.factory",
           help="auto (by size and memory budget) or a faiss index_factory string: Flat, HNSW32, IVF4096,Flat, "
                "IVF4096,SQ8, OPQ64,IVF16384,PQ64, ...")
    t.add_argument("--memory-budget", default=None, help="RAM the index may use, e.g. 4G (for --factory auto)")
    t.add_argument("--nprobe", type=int, default=None, help="default IVF lists probed per query")
    t.add_argument("--ef-search", type=int, default=None, help="default HNSW efSearch")
    t.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the float32 vectors (vectors.npy, memory-mapped) and re-rank ANN candidates with them "
                        "(default: on for the compressed indexes --factory auto picks, off for explicit factories)")
    t.add_argument("--recall-target", type=float, default=None,
                   help="recall@10 the build-time calibration widens nprobe / efSearch for (default 0.99)")
    t.add_argument("--no-calibrate", action="store_true",
                   help="skip measuring recall and latency at build time (keeps the default nprobe / efSearch)")
    t.add_argument("--quiet", "-q", action="store_true")

    t = add_command(actions, "add", "add new embeddings folders to an index without a rebuild", cmd_index_add)
    t.add_argument("index")
    t.add_argument("embeddings", nargs="+")
    t.add_argument("--quiet", "-q", action="store_true")

    t = add_command(actions, "remove", "remove vectors by id", cmd_index_remove)
    t.add_argument("index")
    t.add_argument("--ids", default=None, help="comma-separated ids")
    t.add_argument("--ids-file", default=None, help="file with one id per line")
    t.add_argument("--missing-ok", action="store_true", help="ignore ids that are not in the index")

    t = add_command(actions, "info", "print an index manifest", cmd_index_info)
    t.add_argument("index")

    t = add_command(actions, "search", "search an index by text or image, with geo / time / metadata filters",
                    cmd_index_search)
    t.add_argument("index")
    t.add_argument("query", nargs="?", default=None, help="text query")
    t.add_argument("--image", default=None, help="image query (image-to-image search)")
    option(t, "-k", type=int, source=f"{_SEARCH}.k", help="hits to return")
    t.add_argument("--bbox", default=None, help="west,south,east,north in degrees (footprints that intersect)")
    t.add_argument("--start", default=None, help="acquired on or after (ISO date or time)")
    t.add_argument("--end", default=None, help="acquired on or before (ISO date or time)")
    t.add_argument("--where", action="append", default=None,
                   help="metadata condition, repeatable: 'sensor=sentinel-2', 'gsd<=10', 'label in forest,river', "
                        "'caption contains storage tank'")
    t.add_argument("--model", default=None, help="query encoder (default: the model the index was built with)")
    option(t, "--device", source=f"{_SEARCHER}.device", help="auto (CUDA when present), cpu, cuda, cuda:N")
    option(t, "--precision", choices=PRECISIONS, source=f"{_SEARCHER}.precision")
    t.add_argument("--nprobe", type=int, default=None)
    t.add_argument("--ef-search", type=int, default=None)
    t.add_argument("--json", action="store_true", help="print hits as JSON")


def _print_manifest(manifest: Any) -> int:
    print_json(manifest.to_dict())
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from geovl.index.store import build_index

    extra = {} if args.recall_target is None else {"recall_target": args.recall_target}
    manifest = build_index(args.embeddings, args.out, memory_budget_bytes=parse_size(args.memory_budget),
                           nprobe=args.nprobe, ef_search=args.ef_search, progress=not args.quiet, rerank=args.rerank,
                           calibrate=not args.no_calibrate, **extra, **given(args, "factory"))
    if not args.quiet:
        print(describe_expected(manifest), file=sys.stderr)
    return _print_manifest(manifest)


def describe_expected(manifest: Any) -> str:
    """One line on what the build-time calibration measured (or that it did not run)."""
    exp = manifest.expected
    if not exp:
        return f"{manifest.index_type}: recall and latency not measured at build time"
    knob = next((f"{k} {exp[k]}" for k in ("nprobe", "efSearch") if k in exp), "exact search")
    rerank = f", re-ranking k x {manifest.params.k_factor:g} from vectors.npy" if manifest.params.rerank else ""
    reached = "" if exp.get("reached", True) else f" (below the {exp['target']} target at the widest setting)"
    return (f"{manifest.index_type}{rerank}: expected recall@{exp['k']} {exp['recall_at_k']:.3f}{reached} at {knob}, "
            f"p50 {exp['p50_ms']:.2f} ms, p99 {exp['p99_ms']:.2f} ms per query ({exp['queries']} queries drawn from "
            f"the collection, measured {exp['measured']})")


def cmd_index_add(args: argparse.Namespace) -> int:
    from geovl.index.store import add_to_index

    return _print_manifest(add_to_index(args.index, args.embeddings, progress=not args.quiet))


def parse_ids(ids: str | None, ids_file: str | None) -> list[int]:
    """Ids from ``--ids 1,2,3`` and / or ``--ids-file`` (whitespace-separated)."""
    try:
        found = [int(x) for x in ids.split(",") if x.strip()] if ids else []
        if ids_file:
            found += [int(x) for x in Path(ids_file).read_text().split()]
    except ValueError as exc:
        raise ValueError(f"ids must be integers: {exc}") from None
    if not found:
        raise ValueError("give the ids to remove with --ids 1,2,3 or --ids-file FILE")
    return found


def cmd_index_remove(args: argparse.Namespace) -> int:
    from geovl.index.store import remove_from_index

    ids = parse_ids(args.ids, args.ids_file)
    return _print_manifest(remove_from_index(args.index, ids, missing_ok=args.missing_ok))


def cmd_index_info(args: argparse.Namespace) -> int:
    from geovl.index.store import load_index

    manifest = load_index(args.index).manifest
    print(describe_expected(manifest), file=sys.stderr)
    return _print_manifest(manifest)


def cmd_index_search(args: argparse.Namespace) -> int:
    from geovl.index.filters import Filters
    from geovl.index.search import Searcher

    if (args.query is None) == (args.image is None):
        raise ValueError("give either a text query or --image PATH")
    filters = Filters.parse(bbox=args.bbox, start=args.start, end=args.end, where=args.where or None)
    searcher = Searcher(args.index, model=args.model, **given(args, "device", "precision"))
    query = args.query if args.query is not None else Path(args.image)
    hits = searcher.search(query, filters=None if filters.is_empty else filters, nprobe=args.nprobe,
                           ef_search=args.ef_search, **given(args, "k"))
    if args.json:
        print_json([h.to_dict() for h in hits])
        return 0
    if not hits:
        print("no hits")
    for h in hits:
        meta = h.to_dict().get("metadata", {})
        extra = "  ".join(f"{k}={meta[k]}" for k in ("caption", "label", "acquired", "sensor") if meta.get(k))
        print(f"{h.rank + 1:>3}  {h.score:.4f}  id={h.id}  {meta.get('chip_id') or meta.get('path')}  {extra}")
    return 0
