"""``geovl generate`` with the tiny generator folder (32 px tiles, 2 steps): the PNG the pipeline makes, with its
settings in text chunks; same seed -> same bytes, another seed or GSD -> another image; ``--n`` files seeded
seed..seed+N-1; tiled scenes; ``--extend`` keeping the original pixels; ``--json``; bad inputs as one error line,
exit 1 and nothing written; a missing bundled generator named clearly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import geovl.models.generator as generator_module
from geovl.cli import build_parser, main
from geovl.models.generator import load_generator
from geovl.models.weights import CheckpointNotFoundError
from geovl.tasks.generation import GenerationPipeline, read_png_settings
from tests.generation_fixtures import TinyGenerator, make_tiny_generator

PROMPT = "a river through farmland"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyGenerator:
    return make_tiny_generator(tmp_path_factory.mktemp("cli_generate"))


def _run(tiny: TinyGenerator, out: Path, *flags: str, prompt: str = PROMPT) -> int:
    return main(["generate", prompt, "--steps", "2", "--model", str(tiny.folder), "--device", "cpu", "--out",
                 str(out), *flags])


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_writes_the_pipelines_image_with_its_settings(tiny: TinyGenerator, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.png"
    assert _run(tiny, out, "--gsd", "10", "--seed", "3", "--guidance", "3", "--guidance-resolution", "2") == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (32x32 px, seed 3)" in printed
    assert "gsd 10 m -> zoom level 14 (8 m/px)" in printed and "guidance 3 (resolution 2)" in printed
    pipe = GenerationPipeline(load_generator(tiny.folder, backbone=tiny.backbone, device="cpu"), steps=2,
                              guidance=3, guidance_resolution=2)
    assert np.array_equal(_pixels(out), np.asarray(pipe(PROMPT, 10, seed=3).images[0]))
    settings = read_png_settings(out)
    assert settings == {**settings, "prompt": PROMPT, "gsd": 10.0, "level": 14, "seed": 3, "steps": 2,
                        "guidance": 3.0, "guidance_resolution": 2.0, "sampler": "ddpm", "model": str(tiny.folder)}
    same = tmp_path / "same.png"
    assert _run(tiny, same, "--gsd", "10", "--seed", "3", "--guidance", "3", "--guidance-resolution", "2") == 0
    assert same.read_bytes() == out.read_bytes()
    for flags in (("--gsd", "10", "--seed", "4"), ("--gsd", "100", "--seed", "3")):
        other = tmp_path / "other.png"
        assert _run(tiny, other, *flags, "--guidance", "3", "--guidance-resolution", "2") == 0
        assert not np.array_equal(_pixels(other), _pixels(out))


def test_n_files_seeded_in_turn_and_tiled_scenes(tiny: TinyGenerator, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tiny, tmp_path / "one.png", "--seed", "6", "--width", "64", "--height", "48") == 0
    capsys.readouterr()
    assert _run(tiny, tmp_path / "scene.png", "--n", "3", "--seed", "5", "--width", "64", "--height", "48",
                "--sampler", "ddpm", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    files = [tmp_path / f"scene-{k}.png" for k in range(3)]
    assert report["files"] == [str(f) for f in files] and report["seeds"] == [5, 6, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "scene-0.png", "scene-1.png", "scene-2.png"]
    assert [read_png_settings(f)["seed"] for f in files] == [5, 6, 7]
    assert Image.open(files[0]).size == (64, 48) and report["settings"]["sampler"] == "ddpm"
    assert read_png_settings(tmp_path / "one.png")["sampler"] == "ddpm"
    assert _run(tiny, tmp_path / "square.png", "--width", "48") == 0
    assert Image.open(tmp_path / "square.png").size == (48, 48)


def test_extend_keeps_the_original_pixels(tiny: TinyGenerator, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    tile = tmp_path / "tile.png"
    assert _run(tiny, tile, "--gsd", "2") == 0
    out = tmp_path / "wide.png"
    assert _run(tiny, out, "--gsd", "2", "--extend", str(tile), "--width", "64", "--height", "32", "--seed", "1") == 0
    assert f"extended from {tile}" in capsys.readouterr().out
    assert np.array_equal(_pixels(out)[:, 16:48], _pixels(tile))
    assert read_png_settings(out)["extended_from"] == str(tile) and Image.open(out).size == (64, 32)
    left = tmp_path / "left.png"
    assert _run(tiny, left, "--extend", str(tile), "--size", "64", "--offset", "0,32") == 0
    assert np.array_equal(_pixels(left)[32:, :32], _pixels(tile))


@pytest.mark.parametrize(("prompt", "flags", "message"), [
    ("", (), "the prompt is empty"),
    (PROMPT, ("--steps", "0"), "steps must be an integer in 1..1000, got 0"),
    (PROMPT, ("--size", "34"), "width must be a multiple of 4 px, got 34"),
    (PROMPT, ("--size", "2048"), "width must be 32..1024 px"),
    (PROMPT, ("--gsd", "-1"), "gsd must be a positive number of metres per pixel, got -1.0"),
    (PROMPT, ("--sampler", "plms"), "unknown sampler 'plms'; choose from ddim, ddpm, euler"),
    (PROMPT, ("--seed", "-3"), "seed must be an integer in 0.."),
    (PROMPT, ("--n", "0"), "the number of images (n) must be an integer in 1.."),
    (PROMPT, ("--size", "64", "--width", "64"), "give --size N, or --width W / --height H, not both"),
    (PROMPT, ("--extend", "missing.png", "--size", "64"), "--extend missing.png: no such file"),
    (PROMPT, ("--offset", "0,0"), "--offset places the --extend image"),
    (PROMPT, ("--guidance", "99"), "guidance must be a number in [0, 50]"),
])
def test_bad_inputs_are_one_line_and_write_nothing(tiny: TinyGenerator, tmp_path: Path, prompt: str,
                                                   flags: tuple[str, ...], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "x.png"
    assert _run(tiny, out, *flags, prompt=prompt) == 1
    err = capsys.readouterr().err
    assert err.startswith("geovl generate: error: ") and message in err, err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_extend_needs_a_size_and_png_outputs(tiny: TinyGenerator, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    tile = tmp_path / "tile.png"
    Image.new("RGB", (32, 32)).save(tile)
    assert _run(tiny, tmp_path / "x.png", "--extend", str(tile)) == 1
    assert "--extend needs the size of the scene" in capsys.readouterr().err
    assert _run(tiny, tmp_path / "x.jpg") == 1
    assert re.search(r"give a path ending in \.png", capsys.readouterr().err)
    assert _run(tiny, tmp_path / "x.png", "--extend", str(tile), "--size", "32", "--offset", "4,0") == 1
    assert "offset (4, 0) must be a multiple of 4 px that keeps the image in the scene" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tile.png"]


def test_missing_bundled_generator_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[dict[str, Any]] = []

    def missing(model: str = "geovl-gen-small", **kwargs: Any) -> Any:
        seen.append({"model": model, **kwargs})
        raise CheckpointNotFoundError(f"Checkpoint '{model}' is not on this machine: reinstall geovl, or pass a "
                                      "trained folder path as the model name.")

    monkeypatch.setattr(generator_module, "load_generator", missing)
    assert main(["generate", PROMPT, "--gsd", "10", "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err == ("geovl generate: error: Checkpoint 'geovl-gen-small' is not on this machine: reinstall geovl, or "
                   "pass a trained folder path as the model name.\n")
    assert seen == [{"model": "geovl-gen-small"}] and list(tmp_path.iterdir()) == []


def test_help_shows_the_library_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no line breaks inside a default
    help_text = " ".join(_subparser("generate").format_help().split())
    assert "(default: geovl-gen-small)" in help_text and "(default: ddpm)" in help_text
    assert "(default: 0)" in help_text and "ddim, ddpm or euler" in help_text
    args = build_parser().parse_args(["generate", "x", "--out", "x.png"])
    assert (args.seed, args.sampler, args.model, args.steps, args.gsd, args.n) == (None, None, None, None, None, 1)


def _subparser(name: str) -> Any:
    import argparse

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError("no subcommands")
