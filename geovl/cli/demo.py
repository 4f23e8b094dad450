"""``geovl demo``: the Gradio app (search, classify, scene label maps); flags map one to one onto
:class:`geovl.demo.config.DemoConfig`, whose defaults they show."""

from __future__ import annotations

import argparse
from typing import Any

from geovl.cli.common import PRECISIONS, add_command, warn


def add_parser(sub: Any) -> None:
    from geovl.demo.config import DemoConfig  # a plain dataclass module: cheap to import

    defaults = DemoConfig()
    d = "(default: %(default)s)"
    p = add_command(sub, "demo", "the web demo: search images in plain language, classify, map scenes (Gradio)",
                    cmd_demo)
    p.add_argument("--images", action="append", default=[], metavar="PATH",
                   help="an image folder, GeoTIFF scene or dataset file to search (repeatable; 'karpathy:FILE' or "
                        "'imagefolder:DIR' forces a format). Default: UCM, RSICD and EuroSAT from ../shared/data "
                        "when present, else synthetic scenes made on first run. Embedded once, cached under "
                        "$GEOVL_HOME/demo, rebuilt when the images or the model change")
    p.add_argument("--index", default=defaults.index, metavar="DIR", help="search this `geovl index` folder instead")
    p.add_argument("--model", "-m", default=defaults.model, help=f"model, as for embed {d}")
    p.add_argument("--captioner", default=defaults.captioner, metavar="NAME",
                   help=f"captioner of the Caption tab, loaded on first use; 'none' hides the tab {d}")
    p.add_argument("--change-captioner", default=defaults.change_captioner, metavar="NAME",
                   help=f"change captioner of the Change tab (registry name or folder), loaded when the tab is "
                        f"opened; 'none' hides the tab {d}")
    p.add_argument("--generator", default=defaults.generator, metavar="NAME",
                   help=f"text-to-image generator of the Generate tab (registry name or folder), loaded on the first "
                        f"generation; 'none' hides the tab {d}")
    p.add_argument("--device", default=defaults.device, help=f"auto (CUDA when present), cpu, cuda, cuda:N {d}")
    p.add_argument("--precision", default=defaults.precision, choices=PRECISIONS, help=f"weight precision {d}")
    p.add_argument("--host", default=defaults.host, help=f"interface to bind; 0.0.0.0 exposes it {d}")
    p.add_argument("--port", type=int, default=defaults.port, help="TCP port (default: the first free from 7860)")
    p.add_argument("--share", action="store_true", help="also ask Gradio for a public share link (off by default)")
    p.add_argument("--max-upload-mb", type=int, default=defaults.max_upload_mb, help=f"largest upload {d}")
    p.add_argument("--cache-dir", default=defaults.cache_dir, help="gallery caches (default: $GEOVL_HOME/demo/cache)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def cmd_demo(args: argparse.Namespace) -> int:
    from geovl.demo.app import launch
    from geovl.demo.config import DemoConfig

    config = DemoConfig(images=list(args.images), index=args.index, model=args.model, captioner=args.captioner,
                        change_captioner=args.change_captioner, generator=args.generator,
                        device=args.device, precision=args.precision, host=args.host, port=args.port, share=args.share,
                        max_upload_mb=args.max_upload_mb, cache_dir=args.cache_dir, progress=not args.quiet)
    warn(f"geovl demo: loading {config.model} and the gallery (embedded on first start, then cached)")
    launch(config)
    return 0
