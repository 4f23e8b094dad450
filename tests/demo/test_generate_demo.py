"""The demo's Generate tab without a browser: the GSD slider's powers of two, the callback over the shared
resources (the same pixels as ``GenerationPipeline`` for the same settings and seed; readable errors), the steps and
guidance set to the generator's defaults when the tab opens, a clear message in the tab when the generator cannot
be loaded, the tab shown only with a generator, and ``--generator`` from the command line to the page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import geovl.models.generator as generator_module
from geovl.demo.config import DemoConfig
from geovl.demo.gallery import open_gallery
from geovl.demo.generate import SAMPLER_CHOICES, generate_image, generate_status, gsd_caption, slider_gsd
from geovl.models.diffusion import SAMPLERS
from geovl.models.generator import load_generator
from geovl.models.weights import CheckpointNotFoundError
from geovl.serving.config import GENERATION_MAX_SIDE, GENERATION_MAX_STEPS, ServeConfig
from geovl.serving.errors import InvalidRequestError, ModelUnavailableError, NotFoundError
from geovl.serving.resources import Resources
from geovl.tasks.generation import GenerationPipeline
from tests.demo_fixtures import synthetic_gallery
from tests.generation_fixtures import TinyGenerator, make_tiny_generator

PROMPT = "a river through farmland"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyGenerator:
    return make_tiny_generator(tmp_path_factory.mktemp("demo_generate"))


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    home = tmp_path_factory.mktemp("demo_generate_gallery")
    collection, images = synthetic_gallery(home, 4)
    return home, collection, images


def _search(tiny: TinyGenerator, gallery: tuple[Path, str, Path], generator: str | None) -> Iterator[Any]:
    from geovl.demo.search import DemoSearch

    home, collection, _ = gallery
    index = open_gallery(tiny.backbone, [collection], cache_root=home / "cache", progress=False)
    config = ServeConfig(model="tiny", captioner=None, change_captioner=None, generator=generator)
    with Resources(config, backbone=tiny.backbone) as resources:
        yield DemoSearch(resources, index)


@pytest.fixture(scope="module")
def search(tiny: TinyGenerator, gallery: tuple[Path, str, Path]) -> Iterator[Any]:
    yield from _search(tiny, gallery, str(tiny.folder))


def test_constants_agree_with_the_model_module() -> None:
    from geovl.models.diffusion import MAX_SIDE, MAX_STEPS

    assert SAMPLER_CHOICES == SAMPLERS
    assert (GENERATION_MAX_STEPS, GENERATION_MAX_SIDE) == (MAX_STEPS, MAX_SIDE)


def test_slider_positions_are_powers_of_two_and_name_the_zoom_level() -> None:
    assert slider_gsd(-1) == 0.5 and slider_gsd(3) == 8.0 and slider_gsd(7) == 128.0
    assert slider_gsd(3, no_condition=True) is None
    assert gsd_caption(-1) == "**0.5 m per pixel** · web-map zoom level 18"
    assert gsd_caption(7) == "**128 m per pixel** · web-map zoom level 10"
    assert "no resolution condition" in gsd_caption(0, True)


def test_the_tab_gives_the_pipelines_pixels_and_settings(search: Any, tiny: TinyGenerator) -> None:
    from geovl.demo.app import Callbacks

    image, settings, summary = Callbacks(search).generate(PROMPT, 1.0, False, 3.0, 2.5, 1.5, 7.0, 64.0, 32.0, "ddim")
    pipe = GenerationPipeline(load_generator(tiny.folder, backbone=tiny.backbone), steps=3, guidance=2.5,
                              guidance_resolution=1.5, sampler="ddim")
    want = pipe(PROMPT, 2.0, seed=7, size=(64, 32)).images[0]
    assert np.array_equal(np.asarray(image), np.asarray(want))
    assert image.size == (64, 32)
    assert settings["gsd"] == 2.0 and settings["level"] == 16 and settings["seed"] == 7 and settings["steps"] == 3
    assert settings["guidance"] == 2.5 and settings["guidance_resolution"] == 1.5
    assert summary.startswith("64x32 px · seed 7 · 3 ddim steps")
    other = generate_image(search.resources, PROMPT, log2_gsd=1.0, no_gsd=True, steps=3, seed=7)
    assert other.settings["gsd"] is None and other.settings["level"] == 0
    assert not np.array_equal(np.asarray(other.image), np.asarray(generate_image(
        search.resources, PROMPT, log2_gsd=1.0, steps=3, seed=7).image))  # the GSD changes the image


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prompt": "  "}, "the prompt is empty"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"steps": 0}, "steps must be an integer"),
    ({"width": 42}, "multiple of 4"),
])
def test_bad_values_are_readable(search: Any, kwargs: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"prompt": PROMPT, "steps": 2, **kwargs}
    prompt = values.pop("prompt")
    with pytest.raises(InvalidRequestError, match=message):
        generate_image(search.resources, prompt, **values)


def test_opening_the_tab_sets_the_generators_defaults(search: Any, tiny: TinyGenerator) -> None:
    from geovl.demo.app import Callbacks

    steps, guidance, guidance_res, status = Callbacks(search).generate_ready()
    assert steps["value"] == 4 and guidance["value"] == 4.0 and guidance_res["value"] == 4.0
    assert status.startswith("model `") and "32 px tiles" in status
    assert generate_status(search.resources)[0] == {"steps": 4, "guidance": 4.0, "tile": 32}


def test_the_tab_only_with_a_generator_and_a_message_when_it_cannot_load(
        search: Any, tiny: TinyGenerator, gallery: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from geovl.demo.app import Callbacks, build_app

    def page(app: Any) -> tuple[list[Any], dict[str, Any]]:
        comps = app.config["components"]
        return ([c.get("props", {}).get("label") for c in comps if c.get("type") == "tabitem"],
                {c.get("props", {}).get("elem_id"): c.get("props", {}) for c in comps})

    app = build_app(search)
    tabs, ids = page(app)
    assert "Generate" in tabs
    assert {"generate-prompt", "generate-gsd", "generate-no-gsd", "generate-steps", "generate-guidance",
            "generate-guidance-resolution", "generate-seed", "generate-button", "generate-image",
            "generate-settings", "generate-model"} <= set(ids)
    assert "generate" in [d.get("api_name") for d in app.config["dependencies"]]
    for plain in _search(tiny, gallery, None):
        tabs, ids = page(build_app(plain))
        assert "Generate" not in tabs and "generate-button" not in ids and "Classify" in tabs
        with pytest.raises(NotFoundError, match="generation is disabled"):
            generate_image(plain.resources, PROMPT, steps=2)

    def missing(name: str, **_: Any) -> Any:
        raise CheckpointNotFoundError(f"Checkpoint '{name}' is not on this machine")

    monkeypatch.setattr(generator_module, "load_generator", missing)
    for broken in _search(tiny, gallery, "geovl-gen-missing"):
        tabs, _ = page(build_app(broken))  # the app builds; the tab waits for the model
        assert "Generate" in tabs
        *updates, status = Callbacks(broken).generate_ready()  # no error: a message in the tab
        assert all("value" not in u for u in updates)
        assert status.startswith("**The generator is not available**") and "is not on this machine" in status
        with pytest.raises(ModelUnavailableError, match="'geovl-gen-missing' cannot be loaded"):
            generate_image(broken.resources, PROMPT, steps=2)


def test_demo_command_passes_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    import geovl.demo.app
    from geovl.cli import build_parser, main

    assert DemoConfig().generator == ServeConfig().generator == "geovl-gen-small"
    assert DemoConfig(generator=" None ").generator is None
    assert build_parser().parse_args(["demo"]).generator == DemoConfig().generator
    seen: list[DemoConfig] = []
    monkeypatch.setattr(geovl.demo.app, "launch", lambda config: seen.append(config))
    assert main(["demo", "--generator", "none", "-q"]) == 0
    assert main(["demo", "--generator", "/models/my-gen", "-q"]) == 0
    assert [c.generator for c in seen] == [None, "/models/my-gen"]
