"""``POST /v1/generate`` with the tiny generator (32 px tiles, 2 steps): JSON with base64 PNGs and raw PNGs
(``?format=png`` / ``Accept: image/png``) holding the same pixels as the generation pipeline, seeds, the settings in
the PNG chunks, the server's limits, bad fields as 422 naming them (before the generator loads), disabled /
unloadable generators as 404, the queue limit as 503, the client, OpenAPI, metrics, tokens and the CLI flag."""

from __future__ import annotations

import base64
import io
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

import geovl.models.generator as generator_module  # noqa: E402
from geovl.api.app import create_app  # noqa: E402
from geovl.api.client import GeovlAPIError, GeovlClient  # noqa: E402
from geovl.api.routes.generate import wants_png  # noqa: E402
from geovl.api.schemas import GENERATE_SAMPLERS  # noqa: E402
from geovl.models.diffusion import MAX_SIDE, MAX_STEPS, SAMPLERS  # noqa: E402
from geovl.models.generator import load_generator  # noqa: E402
from geovl.models.weights import CheckpointNotFoundError  # noqa: E402
from geovl.serving.config import GENERATION_MAX_SIDE, GENERATION_MAX_STEPS, ServeConfig  # noqa: E402
from geovl.serving.errors import OverloadedError  # noqa: E402
from geovl.serving.generation import GenerationRequest  # noqa: E402
from geovl.serving.resources import Resources  # noqa: E402
from geovl.tasks.generation import GenerationPipeline, read_png_settings  # noqa: E402
from tests.api_fixtures import live_server  # noqa: E402
from tests.generation_fixtures import TinyGenerator, make_tiny_generator  # noqa: E402

PROMPT = "a river through farmland"


pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST: dict[str, Any] = {"prompt": PROMPT, "steps": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyGenerator:
    return make_tiny_generator(tmp_path_factory.mktemp("api_generate"))


def _config(tiny: TinyGenerator, **overrides: Any) -> ServeConfig:
    settings: dict[str, Any] = {"model": "tiny", "captioner": None, "change_captioner": None,
                                "generator": str(tiny.folder), "max_generation_steps": 8, "max_generation_side": 64,
                                "max_generation_images": 2}
    return ServeConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def server(tiny: TinyGenerator) -> Iterator[tuple[str, Any]]:
    with live_server(_config(tiny), tiny.backbone) as s:
        yield s


@pytest.fixture(scope="module")
def url(server: tuple[str, Any]) -> str:
    return server[0]


@pytest.fixture(scope="module")
def reference(tiny: TinyGenerator) -> GenerationPipeline:
    return GenerationPipeline(load_generator(tiny.folder, backbone=tiny.backbone, device="cpu"), steps=2)


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def _error(response: Any, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    if code is not None:
        assert body["error"] == code, body
    return str(body["detail"])


# ---------------------------------------------------------------- answers


def test_json_answer_matches_the_pipeline_and_carries_the_settings(url: str, server: tuple[str, Any], tiny: Any,
                                                                   reference: GenerationPipeline) -> None:
    r = httpx.post(f"{url}/v1/generate", json={**FAST, "gsd": 10, "seed": 4, "n": 2, "width": 64, "height": 32},
                   timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    want = reference(PROMPT, 10, seed=4, size=(64, 32), n=2)
    assert [(i["index"], i["seed"], i["width"], i["height"]) for i in body["images"]] == [(0, 4, 64, 32),
                                                                                          (1, 5, 64, 32)]
    for item, image in zip(body["images"], want.images, strict=True):
        png = base64.b64decode(item["png"])
        assert np.array_equal(_pixels(png), np.asarray(image))
        assert read_png_settings(png)["seed"] == item["seed"]
    settings = body["settings"]
    assert settings == {**settings, "prompt": PROMPT, "gsd": 10.0, "level": 14, "level_gsd": 8.0, "seed": 4,
                        "steps": 2, "sampler": "ddpm", "width": 64, "height": 32, "n": 2, "model": str(tiny.folder)}
    assert body["model"] == str(tiny.folder) and body["model_record"]["kind"] == "diffusion"
    assert body["timing"]["total_ms"] >= body["timing"]["inference_ms"] > 0
    resources = server[1].state.resources
    assert resources.generation.shares_backbone and resources.generation.model().backbone is resources.backbone


def test_raw_png_answers(url: str, reference: GenerationPipeline) -> None:
    want = np.asarray(reference(PROMPT, seed=7).images[0])
    for kwargs in ({"params": {"format": "png"}}, {"headers": {"Accept": "image/png"}}):
        r = httpx.post(f"{url}/v1/generate", json={**FAST, "seed": 7}, timeout=60, **kwargs)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png" and r.headers["x-geovl-seed"] == "7"
        assert np.array_equal(_pixels(r.content), want)
        settings = read_png_settings(r.content)
        assert settings["gsd"] is None and settings["level"] == 0 and settings["prompt"] == PROMPT
    r = httpx.post(f"{url}/v1/generate", json={**FAST, "n": 2}, params={"format": "png"}, timeout=60)
    assert "format=png answers with one image" in _error(r, 422)
    assert wants_png(None, "image/png, */*;q=0.1") and not wants_png(None, "*/*")
    assert not wants_png(None, "application/json, image/png") and not wants_png("json", "image/png")


def test_client_round_trip(url: str, reference: GenerationPipeline, tmp_path: Path) -> None:
    with GeovlClient(url) as client:
        reply = client.generate(PROMPT, gsd=0.5, steps=2, seed=3, guidance=2.0, guidance_resolution=1.0,
                                sampler="euler")
        path = reply.save(tmp_path / "x.png")
        with pytest.raises(GeovlAPIError) as err:
            client.generate("", steps=2)
    want = GenerationPipeline(reference.model, steps=2, guidance=2.0, guidance_resolution=1.0, sampler="euler")(
        PROMPT, 0.5, seed=3)
    (item,) = reply.images
    assert item.seed == 3 and item.image.size == (32, 32)
    assert np.array_equal(np.asarray(item.image), np.asarray(want.images[0]))
    assert reply.settings["guidance_resolution"] == 1.0 and reply.settings["sampler"] == "euler"
    assert read_png_settings(path) == read_png_settings(item.png) and reply.model_record["kind"] == "diffusion"
    assert err.value.status == 422 and "the prompt is empty" in err.value.detail


# ---------------------------------------------------------------- bad requests and limits


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"prompt": ""}, 422, "the prompt is empty"),
    ({"prompt": "  "}, 422, "the prompt is empty"),
    ({}, 422, "prompt: Field required"),
    ({"prompt": PROMPT, "steps": 0}, 422, "steps must be an integer in 1..8, got 0"),
    ({"prompt": PROMPT, "steps": 9}, 422, "steps must be an integer in 1..8, got 9"),
    ({"prompt": PROMPT, "gsd": -2}, 422, "gsd must be a positive number"),
    ({"prompt": PROMPT, "gsd": 0}, 422, "gsd must be a positive number"),
    ({"prompt": PROMPT, "sampler": "plms"}, 422, "unknown sampler 'plms'; choose from ddim, ddpm, euler"),
    ({"prompt": PROMPT, "guidance": 80}, 422, "guidance must be a number in [0, 50]"),
    ({"prompt": PROMPT, "width": 128}, 422, "width must be an integer number of pixels up to 64"),
    ({"prompt": PROMPT, "height": 0}, 422, "height must be an integer number of pixels up to 64"),
    ({"prompt": PROMPT, "width": 34, "steps": 2}, 422, "width must be a multiple of 4 px, got 34"),
    ({"prompt": PROMPT, "width": 16, "steps": 2}, 422, "width must be 32..64 px"),
    ({"prompt": PROMPT, "n": 3}, 413, "3 images in one request; the limit is 2"),
    ({"prompt": PROMPT, "n": 0}, 422, "the number of images (n) must be an integer in 1.."),
    ({"prompt": PROMPT, "seed": -1}, 422, "seed: Input should be greater than or equal to 0"),
    ({"prompt": PROMPT, "steps": True}, 422, "steps: Value error, must be a number, not a boolean"),
    ({"prompt": PROMPT, "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ({"prompt": "x" * 2001}, 422, "the prompt has 2001 characters; the limit is 2000"),
])
def test_bad_bodies_name_the_problem(url: str, body: dict[str, Any], status: int, message: str) -> None:
    detail = _error(httpx.post(f"{url}/v1/generate", json=body, timeout=60), status)
    assert message in detail


def test_disabled_generation_is_404(tiny: TinyGenerator) -> None:
    with TestClient(create_app(_config(tiny, generator="none"), backbone=tiny.backbone)) as client:
        detail = _error(client.post("/v1/generate", json=FAST), 404, "not_found")
    assert "image generation is disabled on this server" in detail and "--generator" in detail


def test_missing_weights_are_404_named_checked_first_and_not_retried(tiny: TinyGenerator,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def missing(name: str, **_: Any) -> Any:
        calls.append(name)
        raise CheckpointNotFoundError(f"Checkpoint '{name}' is not on this machine: train it or install it")

    monkeypatch.setattr(generator_module, "load_generator", missing)
    config = ServeConfig(captioner=None, change_captioner=None)  # the default generator: the bundled one
    assert config.generator == "geovl-gen-small"
    with TestClient(create_app(config, backbone=tiny.backbone)) as client:
        bad = client.post("/v1/generate", json={"prompt": PROMPT, "steps": 0})
        assert "steps must be an integer" in _error(bad, 422) and calls == []  # checked before loading
        for _ in range(2):
            detail = _error(client.post("/v1/generate", json=FAST), 404, "model_unavailable")
            assert detail.startswith("the generator 'geovl-gen-small' cannot be loaded on this server")
            assert "train it or install it" in detail
    assert calls == ["geovl-gen-small"]  # remembered, not retried per request


def test_queue_limit_is_503_with_retry_after(tiny: TinyGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    original = GenerationPipeline.__call__

    def slow(self: GenerationPipeline, *args: Any, **kwargs: Any) -> Any:
        release.wait(60)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationPipeline, "__call__", slow)
    with Resources(_config(tiny, generation_queue_size=1), backbone=tiny.backbone) as resources:
        service = resources.generation
        threads = [threading.Thread(target=service.generate, args=(GenerationRequest(PROMPT, steps=1),))
                   for _ in range(2)]
        for thread in threads:  # one runs (blocked), one waits
            thread.start()
        try:
            for _ in range(3000):
                if service.pending == 2:
                    break
                threading.Event().wait(0.01)
            assert service.pending == 2
            with pytest.raises(OverloadedError, match="the server is busy") as err:
                service.generate(GenerationRequest(PROMPT, steps=1))
            assert err.value.headers == {"Retry-After": "1"}
        finally:
            release.set()
            for thread in threads:
                thread.join(60)
        assert service.pending == 0


def test_generate_needs_the_token(tiny: TinyGenerator) -> None:
    with TestClient(create_app(_config(tiny, api_tokens=("s3cret",)), backbone=tiny.backbone)) as client:
        _error(client.post("/v1/generate", json=FAST), 401, "unauthorized")
        ok = client.post("/v1/generate", json=FAST, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["images"][0]["seed"] == 0


# ---------------------------------------------------------------- service, settings and the command


def test_openapi_and_metrics(url: str) -> None:
    spec = httpx.get(f"{url}/openapi.json").json()
    op = spec["paths"]["/v1/generate"]["post"]
    assert {"200", "404", "413", "422", "503"} <= set(op["responses"])
    assert {"application/json", "image/png"} <= set(op["responses"]["200"]["content"])
    assert {"format"} == {p["name"] for p in op["parameters"]}
    schemas = spec["components"]["schemas"]
    assert {"prompt", "gsd", "steps", "guidance", "guidance_resolution", "seed", "width", "height", "sampler",
            "n"} == set(schemas["GenerateRequest"]["properties"])
    before = _metric(httpx.get(f"{url}/metrics").text, "geovl_images_generated_total")
    httpx.post(f"{url}/v1/generate", json={**FAST, "n": 2}, timeout=60)
    assert _metric(httpx.get(f"{url}/metrics").text, "geovl_images_generated_total") == before + 2


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is missing")


def test_config_limits_and_spelled_out_constants() -> None:
    assert (GENERATION_MAX_STEPS, GENERATION_MAX_SIDE, GENERATE_SAMPLERS) == (MAX_STEPS, MAX_SIDE, SAMPLERS)
    assert ServeConfig(generator=" None ").generator is None
    for field, value, message in (("max_generation_steps", 1001, "at most 1000"),
                                  ("max_generation_side", 2048, "at most 1024"),
                                  ("max_generation_images", 0, "a positive integer"),
                                  ("generation_queue_size", 0, "a positive integer")):
        with pytest.raises(ValueError, match=re.escape(f"ServeConfig.{field} must be {message}")):
            ServeConfig(**{field: value})


def test_cli_serve_generator_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import geovl.api.app
    from geovl.cli import build_parser, main

    assert build_parser().parse_args(["serve"]).generator == ServeConfig().generator == "geovl-gen-small"
    seen: list[ServeConfig] = []
    monkeypatch.setattr(geovl.api.app, "serve", lambda config: seen.append(config))
    assert main(["serve", "--generator", "none"]) == 0
    assert main(["serve", "--generator", str(tmp_path)]) == 0
    assert [c.generator for c in seen] == [None, str(tmp_path)]
