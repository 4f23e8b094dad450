"""Captioning in the serving resources: lazy loading that shares the backbone (or falls back to the captioner's own),
unavailable captioners as domain errors (remembered), decoding settings checked as request fields, per-image errors,
and the caption batcher (shared calls per decoding setting, nucleus images alone, overload)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import geovl.models.captioner as captioner_module
from geovl.models import load_backbone
from geovl.models.decoding import DecodingConfig
from geovl.models.weights import CheckpointNotFoundError
from geovl.serving.captioning import MAX_SEED, decoding_config
from geovl.serving.config import ServeConfig
from geovl.serving.errors import (
    InvalidRequestError,
    ModelUnavailableError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
)
from geovl.serving.resources import ImageInput, Resources
from tests.api_fixtures import png_bytes
from tests.caption_fixtures import TinyCaptioner, distinct_images, expected_captions, make_tiny_captioner

GREEDY = DecodingConfig(method="greedy", max_length=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyCaptioner:
    return make_tiny_captioner(tmp_path_factory.mktemp("tiny_captioner"))


@pytest.fixture
def resources(tiny: TinyCaptioner) -> Iterator[Resources]:
    with Resources(ServeConfig(model="tiny", captioner=str(tiny.folder), max_images_per_request=4, queue_size=16),
                   backbone=tiny.backbone) as res:
        yield res


class LoadCounter:
    """Wraps ``geovl.models.captioner.load_captioner`` (which the service imports at load time) to count calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail
        real = captioner_module.load_captioner

        def load(name: Any, **kwargs: Any) -> Any:
            self.calls.append({"name": name, **kwargs})
            if self.fail is not None:
                raise self.fail
            return real(name, **kwargs)

        monkeypatch.setattr(captioner_module, "load_captioner", load)


# ---------------------------------------------------------------- loading


def test_captioner_loads_on_first_use_once_sharing_the_backbone(resources: Resources, tiny: TinyCaptioner,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    counter = LoadCounter(monkeypatch)
    assert not resources.captions.loaded  # nothing loaded at start-up
    images, expected = distinct_images(tiny, 3, GREEDY)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(resources.caption([ImageInput(images[0])], GREEDY)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    items = resources.caption([ImageInput(img, f"{i}.png") for i, img in enumerate(images)], GREEDY)
    assert len(counter.calls) == 1 and counter.calls[0]["backbone"] is tiny.backbone  # once, for 4 requests
    model = resources.captioner()
    assert resources.captions.shares_backbone and getattr(model, "backbone", None) is resources.backbone
    assert [(c.index, c.name, c.error) for c in items] == [(0, "0.png", None), (1, "1.png", None), (2, "2.png", None)]
    assert [c.caption for c in items] == expected
    assert [r[0].caption for r in results] == [expected[0]] * 3
    record = resources.captions.record()
    assert record["kind"] == "captioner" and record["backbone"]["checkpoint_sha256"]


def test_a_captioner_of_another_backbone_loads_with_its_own(tiny: TinyCaptioner,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    other = load_backbone("random:geovl-micro", device="cpu", precision="fp32")  # same shape, other weights
    images = [png_bytes(4), png_bytes(5)]
    with Resources(ServeConfig(model="random:geovl-micro", captioner=str(tiny.folder)), backbone=other) as res:
        with caplog.at_level(logging.WARNING, logger="geovl.serving.captioning"):
            items = res.caption([ImageInput(img) for img in images], GREEDY)
        model = res.captioner()
        assert not res.captions.shares_backbone
        assert getattr(model, "backbone", None) is not other and model.device == other.device
    assert "cannot share the served backbone" in caplog.text and "sha256" in caplog.text
    assert [c.caption for c in items] == expected_captions(tiny, images, GREEDY)


def test_captioning_disabled_is_not_found(tiny: TinyCaptioner) -> None:
    for name in (None, "none", "None", ""):
        config = ServeConfig(captioner=name)
        assert config.captioner is None
        with Resources(config, backbone=tiny.backbone) as res, pytest.raises(NotFoundError, match="disabled"):
            res.caption([ImageInput(png_bytes(1))])
    assert ServeConfig().captioner == "geovl-caption-small"


@pytest.mark.parametrize(("name", "failure", "message", "attempts"), [
    ("geovl-caption-small", CheckpointNotFoundError("Checkpoint 'geovl-caption-small' is not on this machine"),
     "'geovl-caption-small' cannot be loaded on this server: Checkpoint 'geovl-caption-small' is not on this machine",
     1),
    ("no-such-captioner", None, "unknown captioner 'no-such-captioner'", 1),
    # a ValueError with the shared backbone is retried once with the captioner's own, then given up
    ("geovl-rs-small", None, "'geovl-rs-small' is a dual-encoder, not a captioner", 2),
])
def test_an_unloadable_captioner_is_unavailable_and_not_retried(tiny: TinyCaptioner, monkeypatch: pytest.MonkeyPatch,
                                                                name: str, failure: Exception | None,
                                                                message: str, attempts: int) -> None:
    counter = LoadCounter(monkeypatch, failure)
    with Resources(ServeConfig(captioner=name), backbone=tiny.backbone) as res:
        for _ in range(2):
            with pytest.raises(ModelUnavailableError, match=re.escape(message)) as err:
                res.caption([ImageInput(png_bytes(1))])
        assert err.value.code == "model_unavailable" and isinstance(err.value, NotFoundError)
    assert [c["name"] for c in counter.calls] == [name] * attempts  # the second request does not try again


# ---------------------------------------------------------------- requests


def test_unreadable_images_get_an_error_each(resources: Resources, tiny: TinyCaptioner) -> None:
    images = [ImageInput(png_bytes(6), "good.png"), ImageInput(b"not an image", "bad.png"),
              ImageInput(png_bytes(6)[:60], "cut.png"), ImageInput(png_bytes(7))]
    items = resources.caption(images, GREEDY)
    assert [c.caption is None for c in items] == [False, True, True, False]
    assert items[1].name == "bad.png" and items[1].error and items[2].error and items[0].error is None
    assert [items[0].caption, items[3].caption] == expected_captions(tiny, [png_bytes(6), png_bytes(7)], GREEDY)
    none_readable = resources.caption([ImageInput(b"garbage"), ImageInput(b"")], GREEDY)
    assert [c.caption for c in none_readable] == [None, None] and all(c.error for c in none_readable)


def test_request_limits(resources: Resources) -> None:
    with pytest.raises(InvalidRequestError, match="no images"):
        resources.caption([])
    with pytest.raises(PayloadTooLargeError, match="limit is 4"):
        resources.caption([ImageInput(png_bytes(1))] * 5)
    with pytest.raises(PayloadTooLargeError, match="bytes per image"):
        resources.caption([ImageInput(b"x" * (resources.config.max_image_bytes + 1), "huge.png")])
    assert not resources.captions.loaded  # refused before the captioner is loaded


def test_default_decoding_is_the_configs(resources: Resources, tiny: TinyCaptioner) -> None:
    images = [png_bytes(8)]
    assert [c.caption for c in resources.caption([ImageInput(images[0])])] == expected_captions(tiny, images,
                                                                                         DecodingConfig())


@pytest.mark.parametrize(("options", "message"), [
    ({"beam_size": 0}, "beam_size must be in 1..32"),
    ({"beam_size": 2.5}, "beam_size must be an integer"),
    ({"max_length": "7"}, "max_length must be an integer"),
    ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    ({"top_p": "high"}, "top_p must be a number"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"method": "sample"}, "decoding method must be one of greedy, beam, nucleus"),
    ({"min_length": 9, "max_length": 5}, "min_length must be in 0..max_length=5"),
    ({"seed": -1}, "seed must be an integer from 0"),
    ({"seed": MAX_SEED + 1}, "seed must be an integer from 0"),
    ({"beam_size": True}, "must be numbers, not booleans"),
    ({"beams": 3}, "unknown decoding option(s) beams"),
    ({"beam_size": 9}, "at most 8 beams and 64 words"),
    ({"max_length": 65, "min_length": 1}, "at most 8 beams and 64 words"),
])
def test_bad_decoding_settings_are_invalid_requests(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        decoding_config(options)


def test_decoding_settings_from_fields() -> None:
    assert decoding_config() == DecodingConfig()
    assert decoding_config({"method": "nucleus", "top_p": None, "seed": 7.0}) == DecodingConfig(method="nucleus",
                                                                                                 seed=7)
    assert Resources.decoding({"beam_size": 5}).beam_size == 5


# ---------------------------------------------------------------- batching


def _batched(res: Resources, submissions: list[tuple[int, DecodingConfig]]) -> list[list[int]]:
    """Submit ``(images, decoding)`` groups back to back (the batcher waits for them) and return each group's batch
    sizes."""
    model = res.captioner()
    pixels = [model.uint8_transform(_image(i)) for i in range(max(n for n, _ in submissions))]
    futures = [res.captions.submit(pixels[:n], decoding) for n, decoding in submissions]
    return [[f.result(60).batch_size for f in group] for group in futures]


def _image(seed: int) -> Any:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png_bytes(seed))).convert("RGB")


def test_requests_share_calls_per_decoding_setting_and_nucleus_images_go_alone(tiny: TinyCaptioner) -> None:
    config = ServeConfig(captioner=str(tiny.folder), max_batch=16, max_wait_ms=2000, queue_size=32,
                         max_images_per_request=8)
    seen: list[int] = []
    with Resources(config, backbone=tiny.backbone) as res:
        res.on_batch = seen.append
        assert _batched(res, [(2, GREEDY), (3, GREEDY)]) == [[5, 5], [5, 5, 5]]
        other = DecodingConfig(method="greedy", max_length=6)
        assert _batched(res, [(2, GREEDY), (2, other)]) == [[2, 2], [2, 2]]
        nucleus = DecodingConfig(method="nucleus", seed=3, max_length=8)
        assert _batched(res, [(3, nucleus)]) == [[1, 1, 1]]
    assert seen == [5, 2, 2, 1, 1, 1]


def test_nucleus_captions_do_not_depend_on_the_queue(resources: Resources) -> None:
    nucleus = DecodingConfig(method="nucleus", seed=11, max_length=8)
    images = [ImageInput(png_bytes(i)) for i in (20, 21, 22)]
    alone = [resources.caption([image], nucleus)[0].caption for image in images]
    together = [c.caption for c in resources.caption(images, nucleus)]
    assert together == alone
    reseeded = {resources.caption(images[:1], DecodingConfig(method="nucleus", seed=s, max_length=8))[0].caption
                for s in range(4)}
    assert len(reseeded) > 1


def test_a_full_caption_queue_is_overloaded(tiny: TinyCaptioner, monkeypatch: pytest.MonkeyPatch) -> None:
    config = ServeConfig(captioner=str(tiny.folder), max_batch=1, max_wait_ms=0, queue_size=2,
                         max_images_per_request=2, retry_after_s=3)
    rejected: list[bool] = []
    with Resources(config, backbone=tiny.backbone) as res:
        res.on_reject = lambda: rejected.append(True)
        model = res.captioner()
        entered, release = threading.Event(), threading.Event()
        real = model.caption_pixels

        def slow(pixels: torch.Tensor, decoding: DecodingConfig) -> list[str]:
            entered.set()
            release.wait(30)
            return real(pixels, decoding)

        monkeypatch.setattr(model, "caption_pixels", slow)
        pixel = model.uint8_transform(_image(1))
        first = res.captions.submit([pixel], GREEDY)
        assert entered.wait(30)  # the worker holds the first image
        queued = res.captions.submit([pixel, pixel], GREEDY)
        with pytest.raises(OverloadedError, match="busy") as err:
            res.captions.submit([pixel], GREEDY)
        assert err.value.headers == {"Retry-After": "3"} and rejected == [True]
        release.set()
        assert len({f.result(60).caption for f in first + queued}) == 1


def test_close_stops_both_batchers(tiny: TinyCaptioner) -> None:
    res = Resources(ServeConfig(captioner=str(tiny.folder)), backbone=tiny.backbone)
    res.start()
    res.caption([ImageInput(png_bytes(1))], GREEDY)
    assert res.captions.batcher.running
    res.close()
    assert not res.captions.batcher.running and not res.batcher.running
