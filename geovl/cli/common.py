"""Flag groups and parsers shared by the ``geovl`` subcommands.

Rules:

* A flag whose default belongs to the library is declared with :func:`option`: it parses to ``None`` when not given,
  the handler passes only the flags that were given (:func:`given`), so the library applies its own default, and
  ``--help`` shows that default by reading the library's signature or dataclass only when help is printed. No
  default is copied into the parser by hand, and ``geovl --help`` imports no model code.
* Every parser is made with :func:`add_command`, so it uses :class:`HelpFormatter`.
* Handlers take the parsed arguments and return the exit status; user errors are ``ValueError`` (``main`` turns
  them into one line on stderr and exit status 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "MODEL_KINDS",
    "PRECISIONS",
    "Handler",
    "HelpFormatter",
    "add_class_args",
    "add_command",
    "add_model_args",
    "add_source_args",
    "check_classes",
    "default_source",
    "given",
    "library_default",
    "load_backbone_from_args",
    "option",
    "parse_bands",
    "parse_labels",
    "parse_size",
    "print_json",
    "sources_from_args",
    "warn",
]

Handler = Callable[[argparse.Namespace], int]

#: The values ``--precision`` accepts: :data:`geovl.models.device.PRECISIONS` (not imported here, as that module
#: loads torch; ``tests/cli`` checks the two agree).
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

#: The model kinds ``geovl models --kind`` accepts: :data:`geovl.models.registry.MODEL_KINDS` (``tests/cli`` checks).
MODEL_KINDS: tuple[str, ...] = ("dual-encoder", "captioner", "change-captioner", "diffusion")

_SOURCE_ATTR = "geovl_default_source"  # set on an argparse.Action by option()


def library_default(source: str) -> Any:
    """The default of a library parameter, named ``"module:Qualified.name.parameter"``.

    ``Qualified.name`` is a function, a method or a dataclass; ``parameter`` one of its parameters or fields.

    Raises:
        KeyError: the object has no such parameter, or it has no default.
    """
    module_name, _, path = source.partition(":")
    *names, param = path.split(".")
    obj: Any = importlib.import_module(module_name)
    for name in names:
        obj = getattr(obj, name)
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if f.name == param:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
        raise KeyError(f"{source}: no field with a default")
    parameter = inspect.signature(obj).parameters.get(param)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise KeyError(f"{source}: no parameter with a default")
    return parameter.default


def option(parser: Any, *flags: str, source: str, **kwargs: Any) -> argparse.Action:
    """Add a flag whose default is the library's (see the module rules); ``source`` as for :func:`library_default`.

    ``parser`` is an :class:`argparse.ArgumentParser` or an argument group of one.
    """
    if "default" in kwargs:
        raise TypeError("option() takes its default from the library; use add_argument for a CLI default")
    action: argparse.Action = parser.add_argument(*flags, default=None, **kwargs)
    setattr(action, _SOURCE_ATTR, source)
    return action


def default_source(action: argparse.Action) -> str | None:
    """The library source of an :func:`option` flag's default, or None for other flags."""
    return getattr(action, _SOURCE_ATTR, None)


def given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: value}`` of the flags among ``names`` that were given (not ``None``), to pass on as keywords."""
    values = vars(args)
    return {name: values[name] for name in names if values.get(name) is not None}


class HelpFormatter(argparse.HelpFormatter):
    """Shows ``(default: X)`` after the help of :func:`option` flags, reading X from the library when help is
    printed."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        source = default_source(action)
        if source is None:
            return action.help
        text = action.help or ""
        try:
            value = library_default(source)
        except ImportError:  # a module that needs a missing extra: its command says so when run
            return text
        if value is None:
            return text
        return f"{text} (default: {str(value).replace('%', '%%')})".lstrip()


def add_command(sub: Any, name: str, help: str, handler: Handler | None = None,
                **kwargs: Any) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` to the subparsers action ``sub``, with ``help`` as its description too."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter,
                                                     **kwargs)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def print_json(data: Any, *, indent: int | None = 2) -> None:
    """Print ``data`` as JSON on stdout (sanitised by :func:`geovl.io.jsonable.to_jsonable`)."""
    from geovl.io.jsonable import to_jsonable

    print(json.dumps(to_jsonable(data), indent=indent))


def warn(message: str) -> None:
    """One line on stderr."""
    print(message, file=sys.stderr)


# ---------------------------------------------------------------- models


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--arch``, ``--device`` and ``--precision``, as :func:`geovl.models.load_backbone` takes them."""
    option(parser, "--model", "-m", source="geovl.models.factory:load_backbone.model",
           help="registry name, openclip:<arch>/<tag>, random:<arch>, or a local checkpoint path; the "
                "default is the small model bundled with geovl")
    parser.add_argument("--arch", default=None, help="architecture of a bare weights file (e.g. ViT-B-32)")
    option(parser, "--device", source="geovl.models.factory:load_backbone.device",
           help="auto (CUDA when present), cpu, cuda, cuda:N")
    option(parser, "--precision", choices=PRECISIONS, source="geovl.models.factory:load_backbone.precision",
           help="weight precision (auto: bf16 on GPUs and on CPUs with bf16 units, else fp32)")


def load_backbone_from_args(args: argparse.Namespace) -> Any:
    """The backbone named by the :func:`add_model_args` flags."""
    from geovl.models import load_backbone

    kwargs = given(args, "model", "device", "precision")
    return load_backbone(**kwargs, architecture=args.arch)


# ---------------------------------------------------------------- classes


def add_class_args(parser: argparse.ArgumentParser) -> None:
    """``--labels`` and ``--label-set``: the classes of a zero-shot classifier."""
    group = parser.add_argument_group("classes (one or both)")
    group.add_argument("--labels", default=None,
                       help="comma-separated class names, e.g. 'forest,river,farmland' (with --label-set: a subset "
                            "of the set, prompted with its phrases)")
    group.add_argument("--label-set", default=None, help="a benchmark label set, e.g. eurosat, aid, nwpu-resisc45 "
                                                         "(`geovl classify --list-label-sets` lists them)")


def check_classes(args: argparse.Namespace) -> list[str] | None:
    """The ``--labels`` list (None when not given), after checking that some classes were asked for and that a
    ``--label-set`` exists, so that a typo fails before the model loads."""
    labels = parse_labels(args.labels)
    if labels is None and args.label_set is None:
        raise ValueError("no classes: give --labels 'a,b,c' or --label-set NAME (see geovl classify --list-label-sets)")
    if args.label_set is not None:
        from geovl.data.labelsets import resolve_label_set

        resolve_label_set(args.label_set)
    return labels


# ---------------------------------------------------------------- parsers of flag values


def parse_labels(text: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; None stays None."""
    if text is None:
        return None
    labels = [part.strip() for part in text.split(",")]
    if not any(labels):
        raise ValueError("--labels is empty; give class names separated by commas, e.g. --labels 'forest,river'")
    return labels


def parse_bands(text: str | None) -> str | tuple[int, ...] | None:
    """``"4,3,2"`` -> ``(4, 3, 2)`` (1-based band indexes); anything else is a sensor preset name, kept as text."""
    if text is None:
        return None
    if all(part.strip().isdigit() for part in text.split(",")):
        return tuple(int(part) for part in text.split(","))
    return text


def parse_size(text: str | None) -> int | None:
    """A byte count such as ``4G``, ``512MiB``, ``1.5T`` or ``1500000000`` (binary units)."""
    if text is None:
        return None
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(float(t))
    except ValueError:
        raise ValueError(f"cannot read the size '{text}' (examples: 4G, 512M, 1500000000)") from None


# ---------------------------------------------------------------- inputs of batch runs

_SOURCES = "geovl.data.sources:sources_for"


def add_source_args(parser: argparse.ArgumentParser) -> None:
    """``--format``, ``--chip-size``, ``--chip-overlap``, ``--bands`` and ``--min-valid``, as
    :func:`geovl.data.sources.sources_for` takes them."""
    parser.add_argument("--format", default=None,
                        help="read the paths as datasets of this format (karpathy, imagefolder, csv, git10m, ...)")
    option(parser, "--chip-size", type=int, source=f"{_SOURCES}.chip_size", help="chip side for large GeoTIFF scenes")
    option(parser, "--chip-overlap", type=int, source=f"{_SOURCES}.chip_overlap",
           help="overlap between chips in pixels")
    parser.add_argument("--bands", default=None, help="band indexes (4,3,2) or a sensor preset for scenes")
    option(parser, "--min-valid", dest="min_valid_fraction", metavar="FRACTION", type=float,
           source=f"{_SOURCES}.min_valid_fraction", help="skip chips with less valid (non-nodata) area")


def sources_from_args(args: argparse.Namespace, paths: list[str]) -> list[Any]:
    """The sources of ``paths`` under the :func:`add_source_args` flags."""
    from geovl.data.sources import sources_for

    return sources_for(paths, dataset_format=args.format, bands=parse_bands(args.bands),
                       **given(args, "chip_size", "chip_overlap", "min_valid_fraction"))
