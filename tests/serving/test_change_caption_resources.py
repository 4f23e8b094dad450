"""Change captioning in the serving resources: lazy loading that shares the backbone (or falls back to the model's
own), unavailable change captioners as domain errors (remembered), the threshold and the pair checked before
anything loads, unreadable dates named, and the change batcher (shared calls per decoding and threshold, nucleus
pairs alone, overload, the queue counted in ``pending``)."""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import geovl.models.change_captioner as change_module
from geovl.models import DEFAULT_CHANGE_CAPTIONER, load_backbone
from geovl.models.change_captioner import NO_CHANGE_CAPTION, ChangeResult
from geovl.models.decoding import DecodingConfig
from geovl.models.weights import CheckpointNotFoundError
from geovl.serving.change_captioning import ChangeJob
from geovl.serving.config import ServeConfig
from geovl.serving.errors import (
    InvalidImageError,
    InvalidRequestError,
    ModelUnavailableError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
)
from geovl.serving.resources import ImageInput, Resources
from tests.api_fixtures import png_bytes
from tests.caption_fixtures import make_tiny_captioner
from tests.change_fixtures import TinyChangeCaptioner, make_tiny_change_captioner
from tests.change_serving_fixtures import FAST, expected_changes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyChangeCaptioner:
    return make_tiny_change_captioner(tmp_path_factory.mktemp("tiny_change"))


@pytest.fixture
def resources(tiny: TinyChangeCaptioner) -> Iterator[Resources]:
    config = ServeConfig(model="tiny", captioner=None, change_captioner=str(tiny.folder), queue_size=16,
                         max_images_per_request=4)
    with Resources(config, backbone=tiny.backbone) as res:
        yield res


def _pair(i: int) -> tuple[ImageInput, ImageInput]:
    return ImageInput(png_bytes(2 * i)), ImageInput(png_bytes(2 * i + 1))


def _same(got: Any, want: ChangeResult) -> None:
    assert (got.caption, got.changed) == (want.caption, want.changed)
    assert got.probability == pytest.approx(want.probability, abs=1e-5)
    np.testing.assert_allclose(got.heatmap, want.heatmap, atol=1e-5)


class LoadCounter:
    """Wraps ``geovl.models.change_captioner.load_change_captioner`` (which the service looks up at load time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail
        real = change_module.load_change_captioner

        def load(name: Any, **kwargs: Any) -> Any:
            self.calls.append({"name": name, **kwargs})
            if self.fail is not None:
                raise self.fail
            return real(name, **kwargs)

        monkeypatch.setattr(change_module, "load_change_captioner", load)


# ---------------------------------------------------------------- loading


def test_loads_on_first_use_once_sharing_the_backbone(resources: Resources, tiny: TinyChangeCaptioner,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    counter = LoadCounter(monkeypatch)
    assert not resources.changes.loaded and resources.changes.record() == {}  # nothing loaded at start-up
    pairs = [_pair(i) for i in range(3)]
    answers: dict[int, Any] = {}

    def ask(i: int) -> None:
        answers[i] = resources.change_caption(*pairs[i], decoding=FAST)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers) == [0, 1, 2]
    assert len(counter.calls) == 1 and counter.calls[0]["backbone"] is tiny.backbone  # once, for 3 requests
    model = resources.change_captioner()
    assert resources.changes.shares_backbone and getattr(model, "backbone", None) is resources.backbone
    record = resources.changes.record()
    assert record["kind"] == "change-captioner" and record["backbone"]["checkpoint_sha256"]
    wanted = expected_changes(tiny, [p[0].data for p in pairs], [p[1].data for p in pairs])
    assert len({round(w.probability, 4) for w in wanted}) == 3  # different pairs: their order is checked too
    for i, want in enumerate(wanted):
        out = answers[i]
        _same(out, want)
        assert out.threshold == model.threshold == 0.5 and out.changed == (out.probability >= 0.5)
        assert out.model == str(tiny.folder) and out.decoding == FAST
        assert out.heatmap.shape == out.grid == (4, 4) and out.heatmap.dtype == np.float32
        assert out.timing.total_ms > 0 and out.timing.batch_size >= 1


def test_threshold_decides_the_verdict_and_the_caption(resources: Resources, tiny: TinyChangeCaptioner) -> None:
    before, after = _pair(5)
    changed = resources.change_caption(before, after, threshold=0.0, decoding=FAST)
    unchanged = resources.change_caption(before, after, threshold=1.0, decoding=FAST)
    (want,) = expected_changes(tiny, [before.data], [after.data], threshold=0.0)
    _same(changed, want)
    assert changed.changed and changed.caption != NO_CHANGE_CAPTION and changed.caption and changed.threshold == 0.0
    assert not unchanged.changed and unchanged.caption == NO_CHANGE_CAPTION == "There is no difference."
    assert unchanged.probability == pytest.approx(changed.probability, abs=1e-6) and unchanged.threshold == 1.0
    np.testing.assert_allclose(unchanged.heatmap, changed.heatmap, atol=1e-6)  # the map does not depend on it
    beam = DecodingConfig(method="beam", beam_size=2, max_length=6)
    (want_beam,) = expected_changes(tiny, [before.data], [after.data], beam, threshold=0.0)
    assert resources.change_caption(before, after, threshold=0, decoding=beam).caption == want_beam.caption


def test_a_change_captioner_of_another_backbone_loads_with_its_own(tiny: TinyChangeCaptioner,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    other = load_backbone("random:geovl-micro", device="cpu", precision="fp32")  # same shape, other weights
    before, after = _pair(7)
    config = ServeConfig(model="random:geovl-micro", captioner=None, change_captioner=str(tiny.folder))
    with Resources(config, backbone=other) as res:
        with caplog.at_level(logging.WARNING, logger="geovl.serving.change_captioning"):
            out = res.change_caption(before, after, threshold=0.0, decoding=FAST)
        model = res.change_captioner()
        assert not res.changes.shares_backbone
        assert getattr(model, "backbone", None) is not other and model.device == other.device
    assert "cannot share the served backbone" in caplog.text and "sha256" in caplog.text
    _same(out, expected_changes(tiny, [before.data], [after.data], threshold=0.0)[0])


def test_change_captioning_disabled_is_not_found(tiny: TinyChangeCaptioner) -> None:
    for name in (None, "none", " None", ""):
        config = ServeConfig(change_captioner=name)
        assert config.change_captioner is None
        with Resources(config, backbone=tiny.backbone) as res, pytest.raises(NotFoundError,
                                                                              match="change captioning is disabled"):
            res.change_caption(*_pair(1))
    assert ServeConfig().change_captioner == DEFAULT_CHANGE_CAPTIONER == "geovl-change-small"


@pytest.mark.parametrize(("name", "failure", "message", "attempts"), [
    ("geovl-change-small", CheckpointNotFoundError("Checkpoint 'geovl-change-small' is not on this machine"),
     "the change captioner 'geovl-change-small' cannot be loaded on this server: Checkpoint 'geovl-change-small' "
     "is not on this machine", 1),
    ("no-such-change-captioner", None, "unknown change captioner 'no-such-change-captioner'", 1),
    # a ValueError with the shared backbone is retried once with the model's own, then given up
    ("geovl-rs-small", None, "'geovl-rs-small' is a dual-encoder, not a change captioner", 2),
])
def test_an_unloadable_change_captioner_is_unavailable_and_not_retried(
        tiny: TinyChangeCaptioner, monkeypatch: pytest.MonkeyPatch, name: str, failure: Exception | None,
        message: str, attempts: int) -> None:
    counter = LoadCounter(monkeypatch, failure)
    with Resources(ServeConfig(change_captioner=name), backbone=tiny.backbone) as res:
        for _ in range(2):
            with pytest.raises(ModelUnavailableError, match=re.escape(message)) as err:
                res.change_caption(*_pair(1))
        assert err.value.code == "model_unavailable" and isinstance(err.value, NotFoundError)
    assert [c["name"] for c in counter.calls] == [name] * attempts  # the second request does not try again


def test_a_captioner_folder_is_not_a_change_captioner(tiny: TinyChangeCaptioner,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    captioner = make_tiny_captioner(tmp_path_factory.mktemp("plain_captioner"))
    config = ServeConfig(change_captioner=str(captioner.folder))
    with Resources(config, backbone=tiny.backbone) as res, pytest.raises(ModelUnavailableError,
                                                                          match="not a geovl change-captioner folder"):
        res.change_caption(*_pair(1))


# ---------------------------------------------------------------- requests


@pytest.mark.parametrize("threshold", [1.5, -0.1, True, "0.5", float("nan"), [0.5]])
def test_a_bad_threshold_is_refused_before_loading(resources: Resources, threshold: Any) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape("threshold must be a number in [0, 1], got")):
        resources.change_caption(*_pair(1), threshold=threshold)
    assert not resources.changes.loaded


def test_pair_checks_name_the_date(resources: Resources) -> None:
    before, after = _pair(2)
    with pytest.raises(InvalidRequestError, match="the after image is missing"):
        resources.changes.check_dates(["before"])
    with pytest.raises(InvalidRequestError, match="the before and after images are missing"):
        resources.changes.check_dates([])
    huge = ImageInput(b"x" * (resources.config.max_image_bytes + 1))
    with pytest.raises(PayloadTooLargeError, match=r"the after image is \d+ bytes; the limit is"):
        resources.change_caption(before, huge)
    assert not resources.changes.loaded  # refused before the model loads
    with pytest.raises(InvalidImageError, match="the before image cannot be read") as err:
        resources.change_caption(ImageInput(b"not an image"), after)
    assert "after" not in str(err.value)
    with pytest.raises(InvalidImageError, match="the after image cannot be read"):
        resources.change_caption(before, ImageInput(png_bytes(3)[:60]))
    with pytest.raises(InvalidImageError, match=r"the before image cannot be read.*; the after image cannot be read"):
        resources.change_caption(ImageInput(b""), ImageInput(b"garbage"))


def test_default_decoding_is_the_configs(resources: Resources, tiny: TinyChangeCaptioner) -> None:
    before, after = _pair(4)
    out = resources.change_caption(before, after, threshold=0.0)
    assert out.decoding == DecodingConfig()
    assert out.caption == expected_changes(tiny, [before.data], [after.data], DecodingConfig(), 0.0)[0].caption


# ---------------------------------------------------------------- batching


def _pixels(model: Any, seed: int) -> torch.Tensor:
    return model.uint8_transform(Image.open(io.BytesIO(png_bytes(seed))).convert("RGB"))


def _jobs(res: Resources, n: int, decoding: DecodingConfig, threshold: float) -> list[ChangeJob]:
    model = res.change_captioner()
    return [ChangeJob(_pixels(model, 2 * i), _pixels(model, 2 * i + 1), decoding, threshold) for i in range(n)]


def _batched(res: Resources, groups: list[list[ChangeJob]]) -> list[list[int]]:
    futures = [[res.changes.submit(job) for job in group] for group in groups]
    return [[f.result(60).batch_size for f in group] for group in futures]


def test_pairs_share_calls_per_decoding_and_threshold_and_nucleus_pairs_go_alone(tiny: TinyChangeCaptioner) -> None:
    config = ServeConfig(change_captioner=str(tiny.folder), max_batch=16, max_wait_ms=2000, queue_size=32,
                         max_images_per_request=8)
    seen: list[int] = []
    with Resources(config, backbone=tiny.backbone) as res:
        res.on_batch = seen.append
        assert _batched(res, [_jobs(res, 2, FAST, 0.0), _jobs(res, 3, FAST, 0.0)]) == [[5, 5], [5, 5, 5]]
        assert _batched(res, [_jobs(res, 2, FAST, 0.0), _jobs(res, 2, FAST, 1.0)]) == [[2, 2], [2, 2]]
        nucleus = DecodingConfig(method="nucleus", seed=3, max_length=8)
        assert _batched(res, [_jobs(res, 3, nucleus, 0.0)]) == [[1, 1, 1]]
        # results of a shared call are each pair's own
        together = [f.result(60).result for f in [res.changes.submit(j) for j in _jobs(res, 3, FAST, 0.0)]]
    assert seen == [5, 2, 2, 1, 1, 1, 3]
    befores, afters = [png_bytes(2 * i) for i in range(3)], [png_bytes(2 * i + 1) for i in range(3)]
    for got, want in zip(together, expected_changes(tiny, befores, afters, FAST, 0.0), strict=True):
        _same(got, want)


def test_a_full_change_queue_is_overloaded_and_counted_as_pending(tiny: TinyChangeCaptioner,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = ServeConfig(change_captioner=str(tiny.folder), max_batch=1, max_wait_ms=0, queue_size=2,
                         max_images_per_request=2, retry_after_s=3)
    rejected: list[bool] = []
    with Resources(config, backbone=tiny.backbone) as res:
        res.on_reject = lambda: rejected.append(True)
        model = res.change_captioner()
        entered, release = threading.Event(), threading.Event()
        real = model.describe_pixels

        def slow(*args: Any, **kwargs: Any) -> list[ChangeResult]:
            entered.set()
            release.wait(30)
            return real(*args, **kwargs)

        monkeypatch.setattr(model, "describe_pixels", slow)
        (job,) = _jobs(res, 1, FAST, 0.0)
        first = res.changes.submit(job)
        assert entered.wait(30)  # the worker holds the first pair
        queued = [res.changes.submit(job), res.changes.submit(job)]
        assert res.pending == 2 and res.changes.batcher.pending == 2
        with pytest.raises(OverloadedError, match="busy") as err:
            res.changes.submit(job)
        assert err.value.headers == {"Retry-After": "3"} and rejected == [True]
        release.set()
        assert len({f.result(60).result.caption for f in [first, *queued]}) == 1
        assert res.pending == 0


def test_close_stops_the_change_batcher(tiny: TinyChangeCaptioner) -> None:
    res = Resources(ServeConfig(change_captioner=str(tiny.folder)), backbone=tiny.backbone)
    res.start()
    res.change_caption(*_pair(1), decoding=FAST)
    assert res.changes.batcher.running
    res.close()
    assert not res.changes.batcher.running and not res.batcher.running
