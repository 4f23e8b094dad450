"""The demo's Change tab without a browser: the heat-map overlay (size, bilinear upsampling, drawn where the heat is,
untouched where it is zero, over the model's view box), the tab's callbacks over the shared resources (the same
answer as the change captioner, from paths and arrays; readable errors), the slider set to the model's threshold
when the tab opens, a clear message in the tab when the change captioner cannot be loaded, the tab shown only with
a change captioner, and ``--change-captioner`` from the command line to the page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import geovl.models.change_captioner as change_module
from geovl.demo.change import DEFAULT_THRESHOLD, change_status, heat_overlay
from geovl.demo.config import DemoConfig
from geovl.demo.gallery import open_gallery
from geovl.models.change_captioner import NO_CHANGE_CAPTION
from geovl.models.decoding import DecodingConfig
from geovl.models.weights import CheckpointNotFoundError
from geovl.serving.config import ServeConfig
from geovl.serving.errors import InvalidImageError, InvalidRequestError, ModelUnavailableError, NotFoundError
from geovl.serving.resources import Resources
from tests.change_fixtures import TinyChangeCaptioner, make_tiny_change_captioner
from tests.change_serving_fixtures import expected_changes
from tests.demo_fixtures import synthetic_gallery

N = 6


def _rng_image(seed: int, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)


# ---------------------------------------------------------------- the overlay


def test_overlay_is_drawn_where_the_heat_is_and_keeps_the_image_size() -> None:
    image = Image.fromarray(_rng_image(1, (90, 60)))
    heat = np.zeros((3, 3), np.float32)
    heat[0, 2] = 1.0  # the top-right cell changed
    out = heat_overlay(image, heat)
    assert out.size == image.size and out.mode == "RGB"
    diff = np.abs(np.asarray(out, np.int16) - np.asarray(image, np.int16)).sum(axis=2)
    assert diff[5:15, 70:85].min() > 0  # the hot cell's centre is coloured
    assert diff[:, :30].max() == 0 and diff[45:, :].max() == 0  # cells far from it are untouched
    # bilinear: on black, in grey, the drawn level fades from the hot cell's centre outwards past its edge (x = 60)
    level = np.asarray(heat_overlay(Image.new("RGB", (90, 60)), heat, cmap="gray", alpha=1.0))[10, :, 0]
    assert level[75] > level[62] > level[55] > level[50] > 0 and level[40] == 0
    assert level[75] == pytest.approx(255 * 0.975**2, abs=2)  # heat 0.975 (row 10 of 60, 3 cells), drawn 0.975 x 0.975
    same = heat_overlay(image, np.zeros((4, 4), np.float32))
    assert np.array_equal(np.asarray(same), np.asarray(image.convert("RGB")))


def test_overlay_heat_is_absolute_not_rescaled() -> None:
    image = Image.fromarray(np.full((32, 32, 3), 128, np.uint8))
    cool = np.asarray(heat_overlay(image, np.full((2, 2), 0.1, np.float32)), np.int16)
    hot = np.asarray(heat_overlay(image, np.full((2, 2), 0.9, np.float32)), np.int16)
    assert np.abs(hot - 128).sum() > 3 * np.abs(cool - 128).sum() > 0


def test_overlay_covers_only_the_box() -> None:
    image = Image.fromarray(_rng_image(2, (80, 40)))
    out = heat_overlay(image, np.ones((2, 2), np.float32), box=(20, 0, 60, 40))  # the centre square
    diff = np.abs(np.asarray(out, np.int16) - np.asarray(image, np.int16)).sum(axis=2)
    assert diff[:, 20:60].min() > 0 and diff[:, :20].max() == 0 and diff[:, 60:].max() == 0


@pytest.mark.parametrize(("heat", "kwargs", "message"), [
    (np.zeros(4), {}, "non-empty (h, w) array"),
    (np.zeros((0, 3)), {}, "non-empty (h, w) array"),
    (np.array([[np.nan]]), {}, "NaN or infinite"),
    (np.zeros((2, 2)), {"alpha": 1.5}, "alpha must be in [0, 1]"),
    (np.zeros((2, 2)), {"cmap": "no-such-map"}, "unknown matplotlib colormap"),
])
def test_overlay_refuses_bad_input(heat: np.ndarray, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        heat_overlay(Image.new("RGB", (8, 8)), heat, **kwargs)


# ---------------------------------------------------------------- the tab's callbacks


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyChangeCaptioner:
    return make_tiny_change_captioner(tmp_path_factory.mktemp("demo_change"))


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    home = tmp_path_factory.mktemp("demo_change_gallery")
    collection, images = synthetic_gallery(home, N)
    return home, collection, images


def _search(tiny: TinyChangeCaptioner, gallery: tuple[Path, str, Path], change_captioner: str | None) -> Iterator[Any]:
    from geovl.demo.search import DemoSearch

    home, collection, _ = gallery
    index = open_gallery(tiny.backbone, [collection], cache_root=home / "cache", progress=False)
    config = ServeConfig(model="tiny", captioner=None, change_captioner=change_captioner)
    with Resources(config, backbone=tiny.backbone) as resources:
        yield DemoSearch(resources, index)


@pytest.fixture(scope="module")
def search(tiny: TinyChangeCaptioner, gallery: tuple[Path, str, Path]) -> Iterator[Any]:
    yield from _search(tiny, gallery, str(tiny.folder))


@pytest.fixture(scope="module")
def calls(search: Any) -> Any:
    from geovl.demo.app import Callbacks

    return Callbacks(search)


def test_change_tab_describes_a_pair_from_paths(calls: Any, tiny: TinyChangeCaptioner,
                                                gallery: tuple[Path, str, Path]) -> None:
    before, after = gallery[2] / "000001.png", gallery[2] / "000002.png"
    caption, verdict, overlay = calls.change(str(before), str(after), 0.0)
    want = expected_changes(tiny, [before.read_bytes()], [after.read_bytes()], DecodingConfig(), 0.0)[0]
    assert caption == want.caption and caption != NO_CHANGE_CAPTION
    assert verdict.startswith(f"**changed** · P(changed) {want.probability:.2f} ≥ threshold 0.00")
    assert f"model `{tiny.folder}`" in verdict
    picture = Image.open(after).convert("RGB")
    assert overlay.size == picture.size
    diff = np.abs(np.asarray(overlay, np.int16) - np.asarray(picture, np.int16)).sum(axis=2)
    h, w = want.heatmap.shape
    i, j = np.unravel_index(int(np.argmax(want.heatmap)), want.heatmap.shape)
    centre = (int((i + 0.5) * picture.height / h), int((j + 0.5) * picture.width / w))
    assert want.heatmap[i, j] > 0.1 and diff[centre] > 0  # drawn where the heat is highest
    caption, verdict, _ = calls.change(str(before), str(after), 1.0)
    assert caption == NO_CHANGE_CAPTION and verdict.startswith("**unchanged** · P(changed)")
    assert "< threshold 1.00" in verdict


def test_change_tab_takes_arrays_and_the_models_threshold(calls: Any, tiny: TinyChangeCaptioner) -> None:
    before, after = _rng_image(3), _rng_image(4)
    view = calls.change(before, after, None)
    from geovl.demo.search import encode_upload

    want = expected_changes(tiny, [encode_upload(before)], [encode_upload(after)], DecodingConfig())[0]
    assert view[0] == want.caption and "threshold 0.50" in view[1]
    assert view[2].size == (after.shape[1], after.shape[0])


def test_change_tab_errors_are_readable(calls: Any, gallery: tuple[Path, str, Path], tmp_path: Path) -> None:
    path = str(gallery[2] / "000001.png")
    with pytest.raises(InvalidRequestError, match="upload the before image of the pair"):
        calls.change(None, path, 0.5)
    with pytest.raises(InvalidRequestError, match="upload the before and the after images of the pair"):
        calls.change(None, None, 0.5)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(InvalidImageError, match="the after image cannot be read"):
        calls.change(path, str(broken), 0.5)
    with pytest.raises(InvalidRequestError, match=re.escape("threshold must be a number in [0, 1]")):
        calls.change(path, path, 1.5)


def test_opening_the_tab_sets_the_models_threshold(calls: Any, search: Any, tiny: TinyChangeCaptioner) -> None:
    update, status = calls.change_ready()
    assert update["value"] == search.resources.change_captioner().threshold == 0.5
    assert status == f"model `{tiny.folder}` · calibrated threshold 0.50"
    assert change_status(search.resources) == (0.5, status)


def test_the_tab_only_with_a_change_captioner_and_a_message_when_it_cannot_load(
        search: Any, tiny: TinyChangeCaptioner, gallery: tuple[Path, str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from geovl.demo.app import Callbacks, build_app

    def page(app: Any) -> tuple[list[Any], dict[str, Any]]:
        comps = app.config["components"]
        return ([c.get("props", {}).get("label") for c in comps if c.get("type") == "tabitem"],
                {c.get("props", {}).get("elem_id"): c.get("props", {}) for c in comps})

    app = build_app(search)
    tabs, ids = page(app)
    assert "Change" in tabs
    assert {"change-before", "change-after", "change-threshold", "change-button", "change-caption",
            "change-verdict", "change-heatmap", "change-model"} <= set(ids)
    assert ids["change-threshold"]["value"] == 0.5  # loaded by now: the model's threshold
    assert "change_caption" in [d.get("api_name") for d in app.config["dependencies"]]
    comps = {c["id"]: c for c in app.config["components"]}
    on_open = [[comps[o].get("props", {}).get("elem_id") for o in d["outputs"]] for d in app.config["dependencies"]
               if any(comps[i].get("props", {}).get("label") == "Change" and event == "select"
                      for i, event in d["targets"])]
    assert on_open == [["change-threshold", "change-model"]]  # opening the tab loads the model and names it
    for plain in _search(tiny, gallery, None):
        tabs, ids = page(build_app(plain))
        assert "Change" not in tabs and "change-button" not in ids and "Classify" in tabs
        with pytest.raises(NotFoundError, match="change captioning is disabled"):
            Callbacks(plain).change(str(gallery[2] / "000001.png"), str(gallery[2] / "000002.png"), 0.5)

    def missing(name: str, **_: Any) -> Any:
        raise CheckpointNotFoundError(f"Checkpoint '{name}' is not on this machine")

    monkeypatch.setattr(change_module, "load_change_captioner", missing)
    for broken in _search(tiny, gallery, "geovl-change-small"):
        tabs, ids = page(build_app(broken))  # the app builds; the tab waits for the model
        assert "Change" in tabs and ids["change-threshold"]["value"] == DEFAULT_THRESHOLD
        calls = Callbacks(broken)
        update, status = calls.change_ready()  # no error: a message in the tab
        assert "value" not in update
        assert status.startswith("**The change captioner is not available**: the change captioner "
                                 "'geovl-change-small' cannot be loaded on this server")
        assert "is not on this machine" in status
        with pytest.raises(ModelUnavailableError, match="'geovl-change-small' cannot be loaded"):
            calls.change(str(gallery[2] / "000001.png"), str(gallery[2] / "000002.png"), 0.5)


# ---------------------------------------------------------------- settings and command


def test_demo_config_change_captioner() -> None:
    assert DemoConfig().change_captioner == ServeConfig().change_captioner == "geovl-change-small"
    assert DemoConfig(change_captioner="none").change_captioner is None
    assert DemoConfig(change_captioner=" None ").change_captioner is None


def test_demo_command_passes_the_change_captioner(monkeypatch: pytest.MonkeyPatch) -> None:
    import geovl.demo.app
    from geovl.cli import build_parser, main

    assert build_parser().parse_args(["demo"]).change_captioner == DemoConfig().change_captioner
    seen: list[DemoConfig] = []
    monkeypatch.setattr(geovl.demo.app, "launch", lambda config: seen.append(config))
    assert main(["demo", "--change-captioner", "none", "-q"]) == 0
    assert main(["demo", "--change-captioner", "/models/my-change", "-q"]) == 0
    assert [c.change_captioner for c in seen] == [None, "/models/my-change"]


def test_prepare_passes_the_change_captioner(tiny: TinyChangeCaptioner, gallery: tuple[Path, str, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import geovl.demo.app as demo_app

    seen: list[ServeConfig] = []

    class Stop(Exception):
        pass

    def resources(config: ServeConfig, *args: Any, **kwargs: Any) -> Any:
        seen.append(config)
        raise Stop

    monkeypatch.setattr(demo_app, "Resources", resources)
    with pytest.raises(Stop):
        demo_app.prepare(DemoConfig(images=[gallery[1]], change_captioner=str(tiny.folder), progress=False))
    assert seen[0].change_captioner == str(tiny.folder)
