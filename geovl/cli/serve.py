"""``geovl serve``: the HTTP API (zero-shot classification, embeddings, search); flags map one to one onto
:class:`geovl.serving.config.ServeConfig`, whose defaults they show."""

from __future__ import annotations

import argparse
from typing import Any

from geovl.cli.common import PRECISIONS, add_command, warn

MIB = 1024 * 1024


def add_parser(sub: Any) -> None:
    from geovl.serving.config import TOKENS_ENV, ServeConfig  # a plain dataclass module: cheap to import

    defaults = ServeConfig()
    p = add_command(sub, "serve", "serve zero-shot classification, embeddings, search, captions and generation over "
                                         "HTTP (/v1/...)",
                    cmd_serve)
    d = "(default: %(default)s)"
    p.add_argument("--model", "-m", default=defaults.model, help=f"model to load, as for embed {d}")
    p.add_argument("--device", default=defaults.device, help=f"auto (CUDA when present), cpu, cuda, cuda:N {d}")
    p.add_argument("--precision", default=defaults.precision, choices=PRECISIONS, help=f"weight precision {d}")
    p.add_argument("--host", default=defaults.host, help=f"interface to bind; 0.0.0.0 exposes it {d}")
    p.add_argument("--port", type=int, default=defaults.port, help=f"TCP port {d}")
    p.add_argument("--max-batch", type=int, default=defaults.max_batch, help=f"most images per forward pass {d}")
    p.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                   help=f"how long a batch waits to fill, in ms {d}")
    p.add_argument("--queue-size", type=int, default=defaults.queue_size,
                   help=f"most images waiting; beyond it HTTP 503 {d}")
    p.add_argument("--max-images", type=int, default=defaults.max_images_per_request,
                   help=f"most images per request; more: HTTP 413 {d}")
    p.add_argument("--max-image-mb", type=int, default=defaults.max_image_bytes // MIB,
                   help=f"largest image file in MiB; larger: HTTP 413 {d}")
    p.add_argument("--token", dest="tokens", action="append", default=[], metavar="T",
                   help=f"accepted bearer token (repeatable). Visible to other users in the process list: prefer "
                        f"{TOKENS_ENV}=tok1,tok2 in the environment, read when --token is not given. Neither: no "
                        "authentication")
    p.add_argument("--cors-origin", dest="cors_origins", action="append", default=[], metavar="ORIGIN",
                   help="allow browser calls from this origin (repeatable, or *; default: no CORS)")
    p.add_argument("--index", default=defaults.index, metavar="DIR",
                   help="serve POST /v1/search over this geovl index folder (built with the same model)")
    p.add_argument("--captioner", default=defaults.captioner, metavar="NAME",
                   help=f"captioner of POST /v1/caption, loaded on first use; 'none' disables captioning {d}")
    p.add_argument("--change-captioner", default=defaults.change_captioner, metavar="NAME",
                   help=f"change captioner of POST /v1/change-caption (registry name or folder), loaded on first "
                        f"use; 'none' disables change captioning {d}")
    p.add_argument("--generator", default=defaults.generator, metavar="NAME",
                   help=f"text-to-image generator of POST /v1/generate (registry name or folder), loaded on first "
                        f"use; 'none' disables generation {d}")


def cmd_serve(args: argparse.Namespace) -> int:
    from geovl.api.app import serve
    from geovl.serving.config import ServeConfig, tokens_from_env

    tokens = tuple(args.tokens) or tokens_from_env()  # --token wins over GEOVL_API_TOKENS
    config = ServeConfig(model=args.model, device=args.device, precision=args.precision, host=args.host,
                         port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                         queue_size=args.queue_size, max_images_per_request=args.max_images,
                         max_image_bytes=args.max_image_mb * MIB, api_tokens=tokens,
                         cors_origins=list(args.cors_origins), index=args.index, captioner=args.captioner,
                         change_captioner=args.change_captioner, generator=args.generator)
    warn(f"geovl serve: loading {config.model}; API on http://{config.host}:{config.port}/v1 "
         f"(docs at /docs){'' if config.api_tokens else ', no token needed'}")
    serve(config)
    return 0
