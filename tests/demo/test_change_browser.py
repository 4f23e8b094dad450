"""The Change tab end to end in headless Chromium, with a tiny change captioner: opening the tab names the model and
sets the slider to its threshold; two uploads and the button give the caption, the verdict and the heat map the
server's change captioner gives. Screenshots go to ``out/test-artifacts/demo/``. Skipped when Chromium, chromedriver
or selenium is missing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.change_fixtures import TinyChangeCaptioner, make_tiny_change_captioner
from tests.demo.test_browser import assert_no_error, css, open_page, screenshot, wait
from tests.demo_fixtures import RunningDemo, chrome_driver, running_demo

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chrome_driver()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyChangeCaptioner:
    return make_tiny_change_captioner(tmp_path_factory.mktemp("browser_change"), threshold=0.0)


@pytest.fixture(scope="module")
def demo(browser: Any, tiny: TinyChangeCaptioner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    # the demo serves the tiny change captioner's own backbone, so that the two share it
    with running_demo(tmp_path_factory.mktemp("change_demo_home"), n=8, model=str(tiny.folder.parent / "tiny-backbone"),
                      captioner="none", change_captioner=str(tiny.folder)) as running:
        yield running


def test_change_tab_describes_an_uploaded_pair(browser: Any, demo: RunningDemo, tiny: TinyChangeCaptioner) -> None:
    from geovl.serving.resources import ImageInput

    before, after = sorted(demo.images.iterdir())[:2]
    open_page(browser, demo.url)
    with screenshot(browser, "6-change"):
        next(t for t in css(browser, "button[role='tab']") if t.text.strip() == "Change").click()
        status = wait(browser, lambda d: " ".join(e.text for e in css(d, "#change-model")).strip(), "the model")
        assert "calibrated threshold 0.00" in status and tiny.folder.name in status
        slider = wait(browser, lambda d: (css(d, "#change-threshold input[type='number']") or [False])[0],
                      "the threshold")
        assert float(slider.get_attribute("value")) == 0.0  # the model's threshold, not the 0.5 placeholder
        for elem_id, image in (("change-before", before), ("change-after", after)):
            upload = wait(browser, lambda d, e=elem_id: (css(d, f"#{e} input[type='file']") or [False])[0],
                          f"the {elem_id} upload")
            upload.send_keys(str(image))
            wait(browser, lambda d, e=elem_id: css(d, f"#{e} img"), f"the {elem_id} preview")
        css(browser, "#change-button")[0].click()
        shown = wait(browser, lambda d: (css(d, "#change-caption textarea")[0].get_attribute("value") or "").strip(),
                     "the change caption")
        verdict = wait(browser, lambda d: " ".join(e.text for e in css(d, "#change-verdict")).strip(), "the verdict")
        wait(browser, lambda d: css(d, "#change-heatmap img"), "the heat map")
        assert_no_error(browser)
    direct = demo.search.resources.change_caption(ImageInput(before.read_bytes()), ImageInput(after.read_bytes()))
    assert shown == direct.caption and direct.changed
    assert verdict.startswith(f"changed · P(changed) {direct.probability:.2f}")
    assert demo.search.resources.changes.shares_backbone
