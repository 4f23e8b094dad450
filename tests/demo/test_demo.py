"""The demo without a browser: the gallery cache (reuse, invalidation, clear errors), the page's callbacks over a small
synthetic gallery (bad input gives a readable ServiceError), DemoConfig's checks and the ``geovl demo`` command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geovl.demo.config import DemoConfig
from geovl.demo.gallery import GALLERY_FILE, gallery_key, open_gallery
from geovl.serving.errors import InvalidRequestError, ServiceError
from tests.demo_fixtures import MICRO, synthetic_gallery

N = 40


@pytest.fixture(scope="module")
def micro() -> Any:
    from geovl.models import load_backbone

    return load_backbone(MICRO, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def gallery_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """``(home, collection, images folder)`` of 40 synthetic scenes, shared read-only by this module's tests."""
    home = tmp_path_factory.mktemp("demo_gallery")
    collection, images = synthetic_gallery(home, N)
    return home, collection, images


@pytest.fixture(scope="module")
def calls(micro: Any, gallery_home: tuple[Path, str, Path]) -> Iterator[Any]:
    """The page's callbacks over the 40-scene gallery, with the micro model."""
    from geovl.demo.app import Callbacks
    from geovl.demo.search import DemoSearch
    from geovl.serving.config import ServeConfig
    from geovl.serving.resources import Resources

    home, collection, _ = gallery_home
    gallery = open_gallery(micro, [collection], cache_root=home / "cache", progress=False)
    with Resources(ServeConfig(model=MICRO, device="cpu"), backbone=micro) as resources:
        yield Callbacks(DemoSearch(resources, gallery))


def copy_gallery(tmp_path: Path, gallery_home: tuple[Path, str, Path]) -> tuple[str, Path]:
    """A private copy of the shared synthetic gallery (for tests that modify its files)."""
    _, collection, images = gallery_home
    root = images.parent
    shutil.copytree(root, tmp_path / root.name)
    return collection.replace(str(root), str(tmp_path / root.name)), tmp_path / root.name / "images"


# ---------------------------------------------------------------- gallery cache


def test_second_open_reuses_the_cache(micro: Any, gallery_home: tuple[Path, str, Path], tmp_path: Path) -> None:
    _, collection, _ = gallery_home
    first = open_gallery(micro, [collection], cache_root=tmp_path, progress=False)
    assert first.built and first.count == N and first.failed == 0
    marker = first.index_dir.parent / GALLERY_FILE
    written = marker.stat().st_mtime_ns
    second = open_gallery(micro, [collection], cache_root=tmp_path, progress=False)
    assert not second.built and (second.key, second.index_dir, second.count) == (first.key, first.index_dir, N)
    assert marker.stat().st_mtime_ns == written, "nothing is rewritten"
    assert second.seconds < first.seconds / 2, (second.seconds, first.seconds)


def test_touching_or_adding_an_image_rebuilds(micro: Any, gallery_home: tuple[Path, str, Path],
                                             tmp_path: Path) -> None:
    collection, images = copy_gallery(tmp_path, gallery_home)
    cache = tmp_path / "cache"
    first = open_gallery(micro, [collection], cache_root=cache, progress=False)
    touched = images / "000000.png"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after_touch = open_gallery(micro, [collection], cache_root=cache, progress=False)
    assert after_touch.built and after_touch.key != first.key and after_touch.count == N
    shutil.copy(touched, images / "extra.png")
    after_add = open_gallery(micro, [collection], cache_root=cache, progress=False)
    assert after_add.built and after_add.key not in (first.key, after_touch.key)
    assert not open_gallery(micro, [collection], cache_root=cache, progress=False).built


def test_another_model_gets_another_cache(micro: Any, gallery_home: tuple[Path, str, Path], tmp_path: Path) -> None:
    from geovl.models import load_backbone

    _, collection, _ = gallery_home
    bundled = load_backbone(DemoConfig().model, device="cpu", precision="fp32")
    assert gallery_key(bundled, [collection]) != gallery_key(micro, [collection])
    first = open_gallery(micro, [collection], cache_root=tmp_path, progress=False)
    other = open_gallery(bundled, [collection], cache_root=tmp_path, progress=False)
    assert other.built and other.index_dir != first.index_dir and other.count == N


def test_empty_or_missing_galleries_give_clear_errors(micro: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the gallery is empty"):
        open_gallery(micro, [], cache_root=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="nowhere: no such image folder"):
        open_gallery(micro, [str(tmp_path / "nowhere")], cache_root=tmp_path, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images found in .*empty"):
        open_gallery(micro, [str(tmp_path / "empty")], cache_root=tmp_path, progress=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"none of the 1 images in .*broken could be read"):
        open_gallery(micro, [str(tmp_path / "broken")], cache_root=tmp_path, progress=False)


# ---------------------------------------------------------------- callbacks


def test_text_search_fills_the_page(calls: Any) -> None:
    # hidden filter fields (no georeferenced or dated images) arrive as None
    update, latency, view, selected, details, heat, footprints = calls.text("a beach", 5, None, None, None, "")
    items = update["value"]
    assert update["selected_index"] is None  # a new result list starts with nothing selected
    assert len(items) == len(view.hits) == 5 and all(Path(path).is_file() for path, _ in items)
    assert [title for _, title in items] == [h.title for h in view.hits]
    assert "5 hits in" in latency and "(text query)" in latency
    assert (selected, heat, footprints) == (None, None, None) and "Select a hit" in details


def test_filters_restrict_the_hits(calls: Any) -> None:
    view = calls.text("anything", 48, "", "", "", "label = beach; split = train")[2]
    assert view.hits and all(h.label == "beach" and h.metadata["split"] == "train" for h in view.hits)


@pytest.mark.parametrize(("query", "bbox", "where", "message"), [
    ("   ", "", "", "type what to look for"),
    ("a beach", "", "label", "where condition 'label' does not parse"),
    ("a beach", "", "colour = red", "unknown column 'colour'"),
    ("a beach", "1,2,3", "", "must be four comma-separated numbers"),
    ("a beach", "", "label = volcano", "no image matches these filters"),
])
def test_bad_search_input_gives_a_readable_error(calls: Any, query: str, bbox: str, where: str, message: str) -> None:
    with pytest.raises(ServiceError, match=re.escape(message)):
        calls.text(query, 5, bbox, "", "", where)


def test_selecting_a_hit_explains_it_and_more_like_this_excludes_it(calls: Any) -> None:
    view = calls.text("a beach", 6, "", "", "", "")[2]
    with pytest.raises(ServiceError, match="select a hit first"):
        calls.similar(view, None, 6, "", "", "", "")
    index, details, heat, footprints = calls.select(view, 1)
    hit = view.hits[1]
    assert index == 1 and details.startswith("**#2**") and f"label: {hit.label}" in details
    assert heat.size == (320, 320) and footprints is None  # 128 px tiles are shown enlarged
    similar = calls.similar(view, 1, 6, "", "", "", "")[2]
    assert similar.kind == "similar" and hit.id not in [h.id for h in similar.hits] and len(similar.hits) == 6
    assert calls.select(view, 99) == (None, calls.select(None, 0)[1], None, None)


def test_image_search_finds_the_image_itself(calls: Any, gallery_home: tuple[Path, str, Path]) -> None:
    image = gallery_home[2] / "000007.png"
    view = calls.image(str(image), 3, "", "", "", "")[2]
    assert view.kind == "image" and Path(view.hits[0].path).name == image.name
    assert view.hits[0].score == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(InvalidRequestError, match="upload an image"):
        calls.image(None, 3, "", "", "", "")


def test_classify_needs_an_image_and_classes(calls: Any, gallery_home: tuple[Path, str, Path]) -> None:
    image = str(gallery_home[2] / "000007.png")
    with pytest.raises(InvalidRequestError, match="upload an image to classify"):
        calls.classify(None, "eurosat", "", False, 0.5)
    for label_set in ("custom", "", None):
        with pytest.raises(InvalidRequestError, match="pick a label set or type class names"):
            calls.classify(image, label_set, " , \n", False, 0.5)
    scores = calls.classify(image, "custom", "beach, forest\nriver", False, 0.5)
    assert set(scores) == {"beach", "forest", "river"} and sum(scores.values()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ServiceError, match=r"no class reaches the threshold 0\.99"):
        calls.classify(image, "custom", "beach, forest", True, 0.99)


# ---------------------------------------------------------------- settings and command


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"images": ["a"], "index": "b"}, "not both"),
    ({"max_upload_mb": 0}, "max_upload_mb must be >= 1"),
    ({"port": 0}, "port must be in 1..65535"),
    ({"port": 70000}, "port must be in 1..65535"),
])
def test_demo_config_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        DemoConfig(**kwargs)


def test_demo_config_defaults_are_local_and_private() -> None:
    config = DemoConfig()
    assert (config.host, config.share, config.port, config.images, config.index) == ("127.0.0.1", False, None, [],
                                                                                     None)


def test_demo_help_lists_its_flags_without_loading_gradio_or_torch() -> None:
    code = ("import sys, contextlib, io\nfrom geovl.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
            "    main(['demo', '--help'])\n"
            "print(out.getvalue())\n"
            "print(sorted(m for m in ('torch', 'gradio', 'geovl.demo.app') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    text = " ".join(result.stdout.split())
    for flag in ("--images PATH", "--index DIR", "--model MODEL", "--port PORT", "--share", "--cache-dir"):
        assert flag in text
    assert "(default: 127.0.0.1)" in text and "(default: geovl-rs-small)" in text
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_demo_command_maps_its_flags_onto_the_config(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import geovl.demo.app
    from geovl.cli import main

    seen: list[DemoConfig] = []
    monkeypatch.setattr(geovl.demo.app, "launch", lambda config: seen.append(config))
    assert main(["demo", "--images", "a", "--images", "karpathy:b/dataset.json", "--port", "7999",
                 "--max-upload-mb", "5", "--cache-dir", "c", "-q"]) == 0
    (config,) = seen
    assert config.images == ["a", "karpathy:b/dataset.json"] and config.port == 7999 and config.max_upload_mb == 5
    assert config.cache_dir == "c" and not config.progress and not config.share and config.host == "127.0.0.1"
    capsys.readouterr()
    assert main(["demo", "--images", "a", "--index", "b"]) == 1 and not seen[1:]
    assert "geovl demo: error: give image collections or an index, not both" in capsys.readouterr().err
