"""The ``geovl`` command: a table of command groups, each a thin layer over the Python API.

Each module of this package adds its subcommands (``add_parser``) with handlers of a few lines that parse flags,
call the library and print the result; heavy modules are imported inside the handlers, so ``geovl --help`` stays
fast. User errors (``ValueError``, ``KeyError``, ``FileNotFoundError``, ``ImportError`` for a missing extra) print
one line ``geovl <command>: error: ...`` and exit with status 1; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from geovl.cli import (
    caption,
    change_caption,
    classify,
    data,
    demo,
    embed,
    evaluate,
    generate,
    index,
    models,
    serve,
    train,
)
from geovl.cli.common import Handler, HelpFormatter

__all__ = ["COMMAND_GROUPS", "build_parser", "main"]

#: The command groups, in the order ``geovl --help`` lists their commands.
COMMAND_GROUPS = (models, embed, data, classify, caption, change_caption, generate, index, evaluate, serve, demo,
                  train)


def build_parser() -> argparse.ArgumentParser:
    from geovl import __version__

    parser = argparse.ArgumentParser(prog="geovl", description="Remote-sensing vision-language toolkit.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"geovl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
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
