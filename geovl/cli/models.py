"""``geovl models``: the model registry and which checkpoints are available locally."""

from __future__ import annotations

import argparse
from typing import Any

from geovl.cli.common import MODEL_KINDS, add_command, print_json


def add_parser(sub: Any) -> None:
    p = add_command(sub, "models", "list the model registry and what is available locally", cmd_models)
    p.add_argument("--all", action="store_true", help="include every open_clip pretrained tag")
    p.add_argument("--kind", choices=MODEL_KINDS, default=None,
                   help="only models of this kind")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_models(args: argparse.Namespace) -> int:
    from geovl.models.registry import list_architectures, list_checkpoints
    from geovl.models.weights import checkpoint_dir, local_checkpoint

    specs = list_checkpoints(include_openclip=args.all, kind=args.kind)
    if not specs:
        print(f"no {args.kind} models in this version of geovl")
        return 0
    rows = []
    for spec in specs:
        path = local_checkpoint(spec)
        rows.append({
            "name": spec.name, "kind": spec.kind, "family": spec.family, "architecture": spec.architecture,
            "format": spec.format,
            "source": spec.source.url, "local": str(path) if path else None, "description": spec.description,
        })
    if args.json:
        print_json({"checkpoints": rows, "architectures": list_architectures()})
        return 0
    width = max(len(spec.name) for spec in specs)
    arch_w = max([4, *(len(spec.architecture or "") for spec in specs)])
    kind_w = max([4, *(len(str(r["kind"])) for r in rows)])
    format_w = max([6, *(len(str(r["format"])) for r in rows)])
    print(f"{'NAME':<{width}}  {'KIND':<{kind_w}} {'ARCH':<{arch_w}} {'FORMAT':<{format_w}} LOCAL  SOURCE")
    for r in rows:
        local = "yes" if r["local"] else "no"
        print(f"{r['name']:<{width}}  {r['kind']:<{kind_w}} {r['architecture']:<{arch_w}} {r['format']:<{format_w}} "
              f"{local:<5}  {r['source']}")
    n_local = sum(1 for r in rows if r["local"])
    print(f"\n{len(rows)} checkpoints, {n_local} available locally. Weights you download by hand go in "
          f"{checkpoint_dir()} (or pass a file path as --model).")
    print("Random-weight architectures (random:<arch>): " + ", ".join(list_architectures()[:12]) + ", ...")
    if not args.all:
        print("Add --all to list every open_clip pretrained tag (openclip:<arch>/<tag>).")
    return 0
