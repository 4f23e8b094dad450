"""The demo's captioning without a browser: the Caption tab's callback over the shared resources (same captions as the
captioner, the model and settings shown, readable errors), the tab shown only with a captioner, captions and
generated captions in a hit's details, and the ``--captioner`` setting from the command line to the page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geovl.demo.config import DemoConfig
from geovl.demo.gallery import open_gallery
from geovl.models.decoding import DecodingConfig
from geovl.serving.config import ServeConfig
from geovl.serving.errors import InvalidImageError, InvalidRequestError, NotFoundError
from geovl.serving.resources import Resources
from tests.caption_fixtures import TinyCaptioner, expected_captions, make_tiny_captioner
from tests.demo_fixtures import MICRO, synthetic_gallery

N = 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyCaptioner:
    return make_tiny_captioner(tmp_path_factory.mktemp("demo_captioner"))


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """``(home, collection, images folder)`` of a few synthetic scenes (they carry a ``caption`` column)."""
    home = tmp_path_factory.mktemp("demo_caption_gallery")
    collection, images = synthetic_gallery(home, N)
    return home, collection, images


def _search(tiny: TinyCaptioner, gallery: tuple[Path, str, Path], captioner: str | None) -> Iterator[Any]:
    from geovl.demo.search import DemoSearch

    home, collection, _ = gallery
    index = open_gallery(tiny.backbone, [collection], cache_root=home / "cache", progress=False)
    with Resources(ServeConfig(model="tiny", captioner=captioner), backbone=tiny.backbone) as resources:
        yield DemoSearch(resources, index)


@pytest.fixture(scope="module")
def search(tiny: TinyCaptioner, gallery: tuple[Path, str, Path]) -> Iterator[Any]:
    yield from _search(tiny, gallery, str(tiny.folder))


@pytest.fixture(scope="module")
def calls(search: Any) -> Any:
    from geovl.demo.app import Callbacks

    return Callbacks(search)


def test_caption_tab_captions_an_upload_with_the_chosen_decoding(calls: Any, tiny: TinyCaptioner,
                                                                 gallery: tuple[Path, str, Path]) -> None:
    path = gallery[2] / "000003.png"
    data = path.read_bytes()
    defaults = DecodingConfig()
    caption, summary = calls.caption(str(path), "greedy", 3.0, 0.9, 0)
    assert caption == expected_captions(tiny, [data], DecodingConfig(method="greedy"))[0] and caption
    assert summary == f"model `{tiny.folder}` · greedy decoding"
    caption, summary = calls.caption(str(path), "beam", 2.0, 0.9, 0)  # sliders send floats
    assert caption == expected_captions(tiny, [data], DecodingConfig(method="beam", beam_size=2))[0]
    assert summary.endswith("beam search, 2 beams")
    first = calls.caption(str(path), "nucleus", defaults.beam_size, 0.8, 4)
    assert first == calls.caption(str(path), "nucleus", defaults.beam_size, 0.8, 4.0)  # a seed repeats
    assert first[0] == expected_captions(tiny, [data], DecodingConfig(method="nucleus", top_p=0.8, seed=4))[0]
    assert first[1].endswith("nucleus sampling, top-p 0.8, seed 4")


def test_caption_tab_errors_are_readable(calls: Any, tmp_path: Path, gallery: tuple[Path, str, Path]) -> None:
    path = str(gallery[2] / "000003.png")
    with pytest.raises(InvalidRequestError, match="upload an image to caption"):
        calls.caption(None, "beam", 3, 0.9, 0)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(InvalidImageError, match="the upload cannot be read"):
        calls.caption(str(broken), "beam", 3, 0.9, 0)
    with pytest.raises(InvalidRequestError, match=re.escape("top_p must be in (0, 1]")):
        calls.caption(path, "nucleus", 3, 0.0, 0)
    with pytest.raises(InvalidRequestError, match="beam_size must be an integer"):
        calls.caption(path, "beam", 2.5, 0.9, 0)


def test_caption_tab_only_with_a_captioner(search: Any, tiny: TinyCaptioner,
                                           gallery: tuple[Path, str, Path]) -> None:
    from geovl.demo.app import Callbacks, build_app

    def page(app: Any) -> tuple[list[Any], list[Any]]:
        comps = app.config["components"]
        return ([c.get("props", {}).get("label") for c in comps if c.get("type") == "tabitem"],
                [c.get("props", {}).get("elem_id") for c in comps])

    tabs, ids = page(build_app(search))
    assert "Caption" in tabs and {"caption-image", "caption-method", "caption-button", "caption-output"} <= set(ids)
    assert "caption" in [d.get("api_name") for d in build_app(search).config["dependencies"]]
    for plain in _search(tiny, gallery, None):
        tabs, ids = page(build_app(plain))
        assert "Caption" not in tabs and "caption-button" not in ids and "Classify" in tabs
        with pytest.raises(NotFoundError, match="captioning is disabled"):
            Callbacks(plain).caption(str(gallery[2] / "000003.png"), "beam", 3, 0.9, 0)


def test_hit_details_show_the_caption_and_a_generated_one(calls: Any) -> None:
    view = calls.text("a beach", 3, "", "", "", "")[2]
    hit = view.hits[0]
    assert hit.metadata.get("caption")
    details = calls.select(view, 0)[1]
    assert f"- caption: {hit.metadata['caption']}" in details and "generated caption" not in details
    hit.metadata["generated_caption"] = "Sand next to the sea."
    details = calls.select(view, 0)[1]
    lines = details.splitlines()
    assert "- generated caption: Sand next to the sea." in lines
    assert lines.index(f"- caption: {hit.metadata['caption']}") < lines.index("- generated caption: Sand next to "
                                                                              "the sea.")


# ---------------------------------------------------------------- settings and command


def test_demo_config_captioner() -> None:
    assert DemoConfig().captioner == ServeConfig().captioner == "geovl-caption-small"
    assert DemoConfig(captioner="none").captioner is None and DemoConfig(captioner=" None ").captioner is None


def test_demo_command_passes_the_captioner(monkeypatch: pytest.MonkeyPatch) -> None:
    import geovl.demo.app
    from geovl.cli import build_parser, main

    assert build_parser().parse_args(["demo"]).captioner == DemoConfig().captioner
    seen: list[DemoConfig] = []
    monkeypatch.setattr(geovl.demo.app, "launch", lambda config: seen.append(config))
    assert main(["demo", "--captioner", "none", "-q"]) == 0
    assert main(["demo", "--captioner", "blip-base", "-q"]) == 0
    assert [c.captioner for c in seen] == [None, "blip-base"]


def test_prepare_serves_the_configured_captioner(tiny: TinyCaptioner, gallery: tuple[Path, str, Path]) -> None:
    """End to end from the settings: the demo's model is another backbone, so the captioner brings its own."""
    from geovl.demo.app import Callbacks, prepare

    home, collection, images = gallery
    config = DemoConfig(images=[collection], model=MICRO, captioner=str(tiny.folder), device="cpu",
                        cache_dir=str(home / "prepared"), progress=False)
    search = prepare(config)
    try:
        assert search.resources.config.captioner == str(tiny.folder)
        caption, summary = Callbacks(search).caption(str(images / "000001.png"), "greedy", 3, 0.9, 0)
        assert caption == expected_captions(tiny, [(images / "000001.png").read_bytes()],
                                            DecodingConfig(method="greedy"))[0]
        assert not search.resources.captions.shares_backbone and str(tiny.folder) in summary
    finally:
        search.resources.close()
