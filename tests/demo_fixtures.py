"""Demo test helpers: small synthetic galleries, a running demo server, and a headless Chromium that cannot reach any
address outside this machine (skipped cleanly when Chromium, chromedriver or selenium is missing)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: Screenshots of the browser test, kept as CI artifacts (``out/`` is git-ignored).
ARTIFACTS = Path(__file__).resolve().parents[1] / "out" / "test-artifacts" / "demo"
#: A query the bundled model answers well on synthetic scenes, and the class its hits should have.
QUERY = "an aerial image of beach"
QUERY_LABEL = "beach"
#: The micro model for tests where the embeddings' meaning does not matter.
MICRO = "random:geovl-micro"

#: Chromium flags: headless, and no request leaves this machine (every host name but 127.0.0.1 fails to resolve,
#: no proxy, no background or component-update traffic).
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
)


@dataclass
class RunningDemo:
    """A demo served in a thread: its search (gallery, resources), its URL, and the synthetic images folder."""

    search: Any
    app: Any
    url: str
    images: Path


def synthetic_gallery(home: Path, n: int) -> tuple[str, Path]:
    """A synthetic caption dataset of ``n`` scenes under ``home``: its collection string and its images folder."""
    from geovl.demo.gallery import synthetic_collection

    collection = synthetic_collection(home=home, n=n, progress=False)
    return collection, Path(collection.partition(":")[2]).parent / "images"


@contextmanager
def running_demo(home: Path, *, n: int = 300, model: str | None = None, **settings: Any) -> Iterator[RunningDemo]:
    """Serve the demo over ``n`` synthetic scenes (gallery cache and Gradio's temporary files under ``home``) on a
    free local port, with other :class:`~geovl.demo.config.DemoConfig` ``settings``; stops the server and the
    model's batch worker on exit."""
    from geovl.demo.app import prepare, serve
    from geovl.demo.config import DemoConfig

    collection, images = synthetic_gallery(home, n)
    config = DemoConfig(images=[collection], cache_dir=str(home / "demo" / "cache"), progress=False, device="cpu",
                        **({"model": model} if model else {}), **settings)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOVL_HOME", str(home))
        mp.setenv("GRADIO_TEMP_DIR", str(home / "gradio"))
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        search = prepare(config)
        try:
            app, url = serve(search, config)
            try:
                yield RunningDemo(search=search, app=app, url=url, images=images)
            finally:
                app.close()
        finally:
            search.resources.close()


def chrome_driver() -> Any:
    """A headless Chromium driven by selenium (see :data:`CHROME_FLAGS`); skips the test when a part is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Chromium or chromedriver is missing (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.binary_location = browser
    return webdriver.Chrome(options=options, service=Service(driver, log_output=os.devnull))
