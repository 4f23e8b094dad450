"""The `geovl` parser: fast top-level help, defaults read from the library, flag-value parsers, error mapping."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from geovl.cli import build_parser, main
from geovl.cli.common import (
    PRECISIONS,
    default_source,
    given,
    library_default,
    option,
    parse_bands,
    parse_labels,
    parse_size,
)


def _parsers(parser: argparse.ArgumentParser, prefix: str = "geovl") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prefix} {name}")


def test_top_level_help_imports_no_model_code() -> None:
    code = ("import sys, contextlib, io\nfrom geovl.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "assert 'classify-scene' in out.getvalue(), out.getvalue()\n"
            "print(sorted(m for m in ('torch', 'numpy', 'geovl.models', 'geovl.tasks') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "[]"


def test_every_command_prints_help_with_library_defaults() -> None:
    helps = {name: " ".join(parser.format_help().split()) for name, parser in _parsers(build_parser())}
    assert {"geovl classify", "geovl classify-scene", "geovl eval classify", "geovl serve"} <= set(helps)
    assert "--top-k TOP_K" in helps["geovl classify"] and "(default: 5)" in helps["geovl classify"]
    assert "--map" not in helps["geovl classify"] and "--evaluate" not in helps["geovl classify"]
    scene = helps["geovl classify-scene"]
    assert "(default: 64)" in scene and "--probabilities P.tif" in scene and "--out MAP.tif" in scene
    assert "--report-dir" in helps["geovl eval classify"] and "--holdout" in helps["geovl eval classify"]
    assert "(default: 10000)" in helps["geovl embed"]  # EmbedConfig.partition_size
    assert "(default: 8000)" in helps["geovl serve"]


def test_flags_with_library_defaults_parse_to_none_and_the_library_applies_them() -> None:
    from geovl.index.pipeline import EmbedConfig
    from geovl.serving.config import ServeConfig

    args = build_parser().parse_args(["embed", "x", "--out", "o"])
    assert args.batch_size is None and args.partition_size is None and given(args, "batch_size", "limit") == {}
    assert library_default("geovl.index.pipeline:EmbedConfig.batch_size") == EmbedConfig().batch_size
    args = build_parser().parse_args(["embed", "x", "--out", "o", "--batch-size", "8"])
    assert given(args, "batch_size", "partition_size") == {"batch_size": 8}
    serve = build_parser().parse_args(["serve"])
    config = ServeConfig()
    assert (serve.port, serve.max_batch, serve.queue_size, serve.max_images) == (
        config.port, config.max_batch, config.queue_size, config.max_images_per_request)
    assert serve.max_image_mb * 2**20 == config.max_image_bytes


def test_every_library_default_source_resolves() -> None:
    sources = {}
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            source = default_source(action)
            if source is not None:
                sources[f"{name} {action.option_strings[0]}"] = source
    assert len(sources) > 30 and sources["geovl classify --top-k"].endswith("ZeroShotClassifier.__call__.top_k")
    for flag, source in sources.items():
        try:
            library_default(source)
        except (ImportError, AttributeError, KeyError) as exc:  # a renamed module, function or parameter
            pytest.fail(f"{flag}: default source {source} does not resolve: {exc!r}")


def test_library_default_sources() -> None:
    assert library_default("geovl.tasks.zeroshot.classifier:ZeroShotClassifier.__call__.top_k") == 5
    assert library_default("geovl.serving.config:ServeConfig.cors_origins") == []  # a default_factory
    with pytest.raises(KeyError, match="no parameter"):
        library_default("geovl.cli.common:parse_size.nope")
    with pytest.raises(TypeError, match="takes its default from the library"):
        option(argparse.ArgumentParser(), "--x", source="m:f.x", default=3)


def test_precisions_match_the_library() -> None:
    from geovl.models.device import PRECISIONS as LIBRARY_PRECISIONS

    assert PRECISIONS == LIBRARY_PRECISIONS
    from geovl.cli.common import MODEL_KINDS
    from geovl.models.registry import MODEL_KINDS as LIBRARY_KINDS

    assert MODEL_KINDS == LIBRARY_KINDS


def test_flag_value_parsers() -> None:
    assert parse_size("4G") == 4 * 2**30 and parse_size("512MiB") == 512 * 2**20 and parse_size("1500") == 1500
    assert parse_size(None) is None
    with pytest.raises(ValueError, match="cannot read the size 'lots'"):
        parse_size("lots")
    assert parse_bands("4,3,2") == (4, 3, 2) and parse_bands("sentinel2-rgb") == "sentinel2-rgb"
    assert parse_bands(None) is None
    assert parse_labels(" forest, river ") == ["forest", "river"] and parse_labels(None) is None
    with pytest.raises(ValueError, match="--labels is empty"):
        parse_labels(" , ")


@pytest.mark.parametrize(("error", "code", "message"), [
    (KeyboardInterrupt(), 130, "interrupted"),
    (KeyError("no such thing"), 1, "geovl models: error: no such thing"),
    (ValueError("bad value"), 1, "geovl models: error: bad value"),
    (ImportError("install geovl[api]"), 1, "geovl models: error: install geovl[api]"),
])
def test_errors_map_to_exit_codes(error: BaseException, code: int, message: str, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import geovl.cli.models

    def fail(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(geovl.cli.models, "cmd_models", fail)
    assert main(["models"]) == code
    assert message in capsys.readouterr().err


def test_classify_rejects_the_old_scene_and_evaluate_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in (["--map", "m.tif"], ["--evaluate"]):
        with pytest.raises(SystemExit) as exc:
            main(["classify", "x.png", "--labels", "a,b", *flag])
        assert exc.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
