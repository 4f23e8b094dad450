"""End to end in a real browser: the demo served over a synthetic gallery, driven by headless Chromium (search, a hit's
details and heat map, "more like this", classify an upload). Screenshots go to ``out/test-artifacts/demo/``, saved
after each step whether it passed or not. Skipped when Chromium, chromedriver or selenium is missing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.demo_fixtures import ARTIFACTS, QUERY, QUERY_LABEL, RunningDemo, chrome_driver, running_demo

pytestmark = pytest.mark.browser

TIMEOUT = 60  # seconds for one step on a loaded 2-core machine (a step takes 1-5 s)
TOP = 5
CLASSES = "beach, desert, forest, river, airport"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chrome_driver()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def demo(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    # depends on `browser` so that a missing Chromium skips before the gallery is embedded
    with running_demo(tmp_path_factory.mktemp("demo_home"), n=300) as running:
        yield running


def wait(driver: Any, condition: Callable[[Any], Any], what: str, *, error_expected: bool = False) -> Any:
    """Poll ``condition`` until it returns something true; an error shown by the page fails at once."""
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d: Any) -> Any:
        if not error_expected:
            assert_no_error(d)
        return condition(d)

    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.1).until(check, f"timed out waiting for {what}")


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def error_toasts(driver: Any) -> list[str]:
    """The texts of the error toasts shown (textContent: a toast still fading in has no visible text yet)."""
    texts = [(e.get_attribute("textContent") or "").strip() for e in css(driver, "[data-testid='toast-body'].error")]
    return [t for t in texts if t]


def assert_no_error(driver: Any) -> None:
    assert not error_toasts(driver), f"the page shows an error: {error_toasts(driver)}"


@contextmanager
def screenshot(driver: Any, name: str) -> Iterator[None]:
    """Save a screenshot of the page when the block ends, passed or failed."""
    try:
        yield
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def thumbnails_loaded(n: int) -> Callable[[Any], bool]:
    """At least ``n`` hits in the gallery, the first ``n`` images decoded (so they are visible)."""
    script = ("const imgs = [...document.querySelectorAll('#results img')].slice(0, arguments[0]);"
              "return imgs.length === arguments[0] && imgs.every(i => i.complete && i.naturalWidth > 0);")
    return lambda driver: bool(driver.execute_script(script, n))


def latency_says(kind: str) -> Callable[[Any], str | bool]:
    def check(driver: Any) -> str | bool:
        text = " ".join(e.text for e in css(driver, "#latency"))
        return text if f"({kind} query)" in text else False

    return check


def hit_titles(driver: Any) -> list[str]:
    """The gallery's captions in rank order: ``label · score · file``."""
    return [img.get_attribute("alt") or "" for img in css(driver, "#results img")]


def labels_of(titles: list[str]) -> list[str]:
    return [t.split(" · ")[0] for t in titles]


def open_page(driver: Any, url: str) -> Any:
    driver.get(url)
    return wait(driver, lambda d: (css(d, "#query textarea") or [False])[0], "the query box")


def test_empty_query_shows_a_readable_message_in_the_page(browser: Any, demo: RunningDemo) -> None:
    open_page(browser, demo.url)
    with screenshot(browser, "0-empty-query-error"):
        css(browser, "#search-button")[0].click()
        visible = "[data-testid='toast-body'].error [data-testid='toast-text']"
        message = wait(browser, lambda d: "".join(e.text for e in css(d, visible)), "a visible error message",
                       error_expected=True)
    assert "type what to look for" in message
    assert "Traceback" not in browser.page_source


def test_search_select_more_like_this_and_classify(browser: Any, demo: RunningDemo) -> None:
    box = open_page(browser, demo.url)
    with screenshot(browser, "1-search"):
        box.send_keys(QUERY)
        css(browser, "#search-button")[0].click()
        latency = wait(browser, latency_says("text"), "the latency of the text query")
        wait(browser, thumbnails_loaded(TOP), f"{TOP} visible thumbnails")
        assert_no_error(browser)
    assert re.search(r"\d+ hits in \d+ ms", latency), latency
    titles = hit_titles(browser)
    labels = labels_of(titles[:TOP])
    assert sum(label == QUERY_LABEL for label in labels) >= 3, titles

    rank = labels.index(QUERY_LABEL)
    name = titles[rank].split(" · ")[-1]
    with screenshot(browser, "2-hit-details"):
        css(browser, "#results button.thumbnail-item")[rank].click()
        details = wait(browser, lambda d: (t := d.find_element("id", "hit-details").text) and name in t and t,
                       "the hit's details")
        wait(browser, lambda d: css(d, "#heatmap img"), "the heat map")
        assert_no_error(browser)
    assert f"#{rank + 1}" in details and f"label: {QUERY_LABEL}" in details, details

    with screenshot(browser, "3-more-like-this"):
        css(browser, "#more-like-this")[0].click()
        wait(browser, latency_says("similar"), "the latency of the similar query")
        wait(browser, thumbnails_loaded(TOP), f"{TOP} visible thumbnails")
        assert_no_error(browser)
    similar = hit_titles(browser)
    assert all(t.split(" · ")[-1] != name for t in similar), "the hit itself is excluded"
    assert sum(label == QUERY_LABEL for label in labels_of(similar[:TOP])) >= 3, similar

    classify_upload(browser, demo.images / name)


def classify_upload(driver: Any, image: Path) -> None:
    """Classify tab: upload ``image``, restrict the label set to a few classes, expect the query's class on top."""
    with screenshot(driver, "4-classify"):
        next(t for t in css(driver, "button[role='tab']") if t.text.strip() == "Classify").click()
        upload = wait(driver, lambda d: (css(d, "#classify-image input[type='file']") or [False])[0], "the upload")
        upload.send_keys(str(image))
        wait(driver, lambda d: css(d, "#classify-image img"), "the uploaded image's preview")
        css(driver, "#labels textarea")[0].send_keys(CLASSES)
        css(driver, "#classify-button")[0].click()
        top = wait(driver, lambda d: "".join(e.text for e in css(d, "#classify-output .output-class")).strip(),
                   "the class scores")
        assert_no_error(driver)
    assert top == QUERY_LABEL, top
    shown = {e.text.strip() for e in css(driver, "#classify-output dt")}
    assert shown == {c.strip() for c in CLASSES.split(",")}, shown


def test_caption_tab_captions_an_upload(browser: Any, demo: RunningDemo) -> None:
    """Caption tab in the page: upload a scene, press Caption, read the same caption the server's captioner gives."""
    from geovl.models.decoding import DecodingConfig
    from geovl.serving.resources import ImageInput

    image = sorted(demo.images.iterdir())[0]
    open_page(browser, demo.url)
    with screenshot(browser, "5-caption"):
        next(t for t in css(browser, "button[role='tab']") if t.text.strip() == "Caption").click()
        upload = wait(browser, lambda d: (css(d, "#caption-image input[type='file']") or [False])[0], "the upload")
        upload.send_keys(str(image))
        wait(browser, lambda d: css(d, "#caption-image img"), "the uploaded image's preview")
        css(browser, "#caption-button")[0].click()
        shown = wait(browser, lambda d: (css(d, "#caption-output textarea")[0].get_attribute("value") or "").strip(),
                     "the caption", )
        model = wait(browser, lambda d: " ".join(e.text for e in css(d, "#caption-model")).strip(), "the model name")
        assert_no_error(browser)
    direct = demo.search.resources.caption([ImageInput(image.read_bytes(), image.name)], DecodingConfig())
    assert shown == direct[0].caption and shown.endswith(".")
    assert "geovl-caption-small" in model
