"""``POST /v1/caption`` over real HTTP on loopback (uvicorn in a thread) with a tiny captioner, and small app variants
through FastAPI's TestClient: JSON and multipart agree with the captioner, per-image errors, decoding settings as
validated fields (422), disabled / unloadable captioners (404), the client, OpenAPI, metrics, tokens and CLI flags."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

import geovl.models.captioner as captioner_module  # noqa: E402
from geovl.api.app import create_app  # noqa: E402
from geovl.api.client import GeovlAPIError, GeovlClient  # noqa: E402
from geovl.models.decoding import DecodingConfig  # noqa: E402
from geovl.models.weights import CheckpointNotFoundError  # noqa: E402
from geovl.serving.config import ServeConfig  # noqa: E402
from tests.api_fixtures import live_server, micro_backbone, png_bytes  # noqa: E402
from tests.caption_fixtures import (  # noqa: E402
    TinyCaptioner,
    distinct_images,
    expected_captions,
    make_tiny_captioner,
)

FAST: dict[str, Any] = {"max_length": 8}  # short captions keep beam search quick on a loaded CPU


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyCaptioner:
    return make_tiny_captioner(tmp_path_factory.mktemp("api_captioner"))


@pytest.fixture(scope="module")
def server(tiny: TinyCaptioner) -> Iterator[tuple[str, Any]]:
    config = ServeConfig(model="tiny", captioner=str(tiny.folder), max_images_per_request=4,
                         max_image_bytes=200_000, queue_size=64, max_wait_ms=5)
    with live_server(config, tiny.backbone) as s:
        yield s


@pytest.fixture
def url(server: tuple[str, Any]) -> str:
    return server[0]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _error(response: httpx.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    if code is not None:
        assert body["error"] == code, body
    return str(body["detail"])


# ---------------------------------------------------------------- captions


def test_json_multipart_and_client_match_the_captioner(url: str, server: tuple[str, Any],
                                                       tiny: TinyCaptioner) -> None:
    beam = DecodingConfig(**FAST)
    images, expected = distinct_images(tiny, 3, beam)  # different captions: their order is checked too
    r = httpx.post(f"{url}/v1/caption", json={"images": [_b64(i) for i in images], **FAST}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["caption"] for c in body["captions"]] == expected
    assert [(c["index"], c["error"]) for c in body["captions"]] == [(0, None), (1, None), (2, None)]
    assert body["model"] == str(tiny.folder) and body["decoding"] == beam.to_dict()
    assert body["model_record"]["kind"] == "captioner" and body["model_record"]["checkpoint_sha256"]
    assert body["model_record"]["backbone"]["checkpoint_sha256"] == tiny.backbone.info.checkpoint_sha256
    assert body["timing"]["total_ms"] > 0 and len(body["timing"]["batch_sizes"]) == 3
    files = [("images", (f"{i}.png", img, "image/png")) for i, img in enumerate(images)]
    m = httpx.post(f"{url}/v1/caption", files=files, data={"method": "greedy", "max_length": "8"}, timeout=60)
    assert m.status_code == 200, m.text
    greedy = DecodingConfig(method="greedy", **FAST)
    assert [c["caption"] for c in m.json()["captions"]] == expected_captions(tiny, images, greedy)
    assert [c["filename"] for c in m.json()["captions"]] == ["0.png", "1.png", "2.png"]
    assert m.json()["decoding"] == greedy.to_dict()
    with GeovlClient(url) as client:
        reply = client.caption(images, method="greedy", max_length=8, top_p=None)
    assert reply.texts == expected_captions(tiny, images, greedy) and reply.decoding == greedy.to_dict()
    assert reply.model == str(tiny.folder) and reply.captions[0].error is None
    resources = server[1].state.resources
    assert resources.captions.shares_backbone and resources.captioner().backbone is resources.backbone


def test_nucleus_with_a_seed_is_reproducible(url: str, tiny: TinyCaptioner) -> None:
    images = [png_bytes(4), png_bytes(5)]
    with GeovlClient(url) as client:
        first = client.caption(images, method="nucleus", seed=5, top_p=0.8, **FAST)
        again = client.caption(images, method="nucleus", seed=5, top_p=0.8, **FAST)
        other = [client.caption(images[:1], method="nucleus", seed=s, **FAST).texts[0] for s in range(4)]
    nucleus = DecodingConfig(method="nucleus", seed=5, top_p=0.8, **FAST)
    assert first.texts == again.texts == [expected_captions(tiny, [img], nucleus)[0] for img in images]
    assert first.decoding == {**nucleus.to_dict()} and first.decoding["seed"] == 5
    assert len(set(other)) > 1


def test_unreadable_images_get_an_error_each(url: str) -> None:
    images = [_b64(png_bytes(6)), _b64(b"not an image"), _b64(png_bytes(7))]
    r = httpx.post(f"{url}/v1/caption", json={"images": images, "method": "greedy", **FAST}, timeout=60)
    assert r.status_code == 200, r.text
    captions = r.json()["captions"]
    assert [c["caption"] is None for c in captions] == [False, True, False]
    assert captions[1]["error"] and captions[0]["error"] is None and r.json()["timing"]["batch_sizes"] == [2, 2]
    files = [("images", ("broken.jpg", png_bytes(8)[:60], "image/jpeg"))]
    r = httpx.post(f"{url}/v1/caption", files=files, timeout=60)
    assert r.status_code == 200 and r.json()["captions"][0]["filename"] == "broken.jpg"
    assert r.json()["captions"][0]["caption"] is None and r.json()["captions"][0]["error"]
    with GeovlClient(url) as client:
        reply = client.caption([b"garbage"])
    assert reply.texts == [None] and reply.captions[0].error and reply.timing["batch_sizes"] == []


@pytest.mark.parametrize(("fields", "message"), [
    ({"beam_size": 0}, "beam_size must be in 1..32"),
    ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"min_length": 9, "max_length": 5}, "min_length must be in 0..max_length=5"),
    ({"method": "sample"}, "method"),
    ({"beam_size": 2.5}, "beam_size"),
    ({"beam_size": True}, "not a boolean"),
    ({"seed": -1}, "seed"),
    ({"beams": 3}, "beams"),
    ({"images": []}, "no images"),
])
def test_bad_json_fields_are_422(url: str, fields: dict[str, Any], message: str) -> None:
    body = {"images": [_b64(png_bytes(1))], **fields}
    assert message in _error(httpx.post(f"{url}/v1/caption", json=body), 422, "invalid_request")


@pytest.mark.parametrize(("fields", "message"), [
    ({"beam_size": "2.5"}, "beam_size must be an integer"),
    ({"top_p": "high"}, "top_p must be a number"),
    ({"top_p": "nan"}, "top_p must be a number"),
    ({"top_p": "1.5"}, "top_p must be in (0, 1]"),
    ({"method": "sample"}, "decoding method must be one of greedy, beam, nucleus"),
    ({"labels": "a,b"}, "unknown form fields ['labels']"),
])
def test_bad_form_fields_are_422(url: str, fields: dict[str, str], message: str) -> None:
    files = [("images", ("a.png", png_bytes(1), "image/png"))]
    assert message in _error(httpx.post(f"{url}/v1/caption", files=files, data=fields), 422, "invalid_request")


def test_limits(url: str) -> None:
    img = _b64(png_bytes(9))
    assert "limit is 4" in _error(httpx.post(f"{url}/v1/caption", json={"images": [img] * 5}), 413)
    assert "200000 bytes" in _error(httpx.post(f"{url}/v1/caption", json={"images": [_b64(b"x" * 200_001)]}), 413)
    assert "base64" in _error(httpx.post(f"{url}/v1/caption", json={"images": ["%%%"]}), 422, "invalid_image")
    assert "not supported" in _error(httpx.post(f"{url}/v1/caption", content=b"x",
                                                headers={"content-type": "text/plain"}), 415)
    with GeovlClient(url) as client:
        with pytest.raises(ValueError, match="list of images"):
            client.caption(png_bytes(1))  # type: ignore[arg-type]
        with pytest.raises(GeovlAPIError) as err:
            client.caption([png_bytes(1)], beam_size=0)
    assert err.value.status == 422 and err.value.code == "invalid_request" and "beam_size" in err.value.detail


def test_openapi_and_metrics(url: str) -> None:
    spec = httpx.get(f"{url}/openapi.json").json()
    op = spec["paths"]["/v1/caption"]["post"]
    assert {"404", "413", "422", "503"} <= set(op["responses"])
    schemas = spec["components"]["schemas"]
    assert {"CaptionRequest", "CaptionForm", "CaptionResponse"} <= set(schemas)
    form = schemas["CaptionForm"]["properties"]
    assert form["method"]["default"] == DecodingConfig().method and form["beam_size"]["default"] == 3
    assert "(default: beam)" in schemas["CaptionRequest"]["properties"]["method"]["description"]
    before = _captioned(httpx.get(f"{url}/metrics").text)
    with GeovlClient(url) as client:
        client.caption([png_bytes(10), b"bad"], method="greedy", **FAST)
    assert _captioned(httpx.get(f"{url}/metrics").text) == before + 1


def _captioned(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("geovl_images_captioned_total "):
            return float(line.split()[1])
    raise AssertionError("geovl_images_captioned_total is missing")


# ---------------------------------------------------------------- app variants (TestClient)


def _client(config: ServeConfig, backbone: Any) -> TestClient:
    return TestClient(create_app(config, backbone=backbone))


def test_disabled_captioning_is_404(tiny: TinyCaptioner) -> None:
    with _client(ServeConfig(captioner="none"), tiny.backbone) as client:
        r = client.post("/v1/caption", json={"images": [_b64(png_bytes(1))]})
        assert "captioning is disabled" in _error(r, 404, "not_found")
        assert " captioner." not in client.get("/openapi.json").json()["info"]["description"]
    with _client(ServeConfig(captioner=str(tiny.folder)), tiny.backbone) as client:
        assert f"the {tiny.folder} captioner." in client.get("/openapi.json").json()["info"]["description"]


def test_an_unloadable_captioner_is_404_and_named(tiny: TinyCaptioner, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def missing(name: str, **_: Any) -> Any:
        calls.append(name)
        raise CheckpointNotFoundError(f"Checkpoint '{name}' is not on this machine: run once with network access")

    monkeypatch.setattr(captioner_module, "load_captioner", missing)
    with _client(ServeConfig(), tiny.backbone) as client:  # the default: the bundled geovl-caption-small
        bad = client.post("/v1/caption", json={"images": [_b64(png_bytes(1))], "top_p": 2})
        assert "top_p must be in (0, 1]" in _error(bad, 422) and calls == []  # checked before loading
        for _ in range(2):
            detail = _error(client.post("/v1/caption", json={"images": [_b64(png_bytes(1))]}), 404,
                            "model_unavailable")
            assert detail.startswith("the captioner 'geovl-caption-small' cannot be loaded on this server")
            assert "run once with network access" in detail
    assert calls == ["geovl-caption-small"]  # remembered, not retried per request


def test_a_captioner_of_another_backbone_still_serves(tiny: TinyCaptioner) -> None:
    with _client(ServeConfig(model="random:geovl-micro", captioner=str(tiny.folder)), micro_backbone()) as client:
        r = client.post("/v1/caption", json={"images": [_b64(png_bytes(11))], "method": "greedy", **FAST})
        assert r.status_code == 200, r.text
        resources = client.app.state.resources  # type: ignore[attr-defined]
        assert not resources.captions.shares_backbone
    assert r.json()["captions"][0]["caption"] == expected_captions(tiny, [png_bytes(11)],
                                                           DecodingConfig(method="greedy", **FAST))[0]


def test_caption_needs_the_token(tiny: TinyCaptioner) -> None:
    with _client(ServeConfig(captioner=str(tiny.folder), api_tokens=("s3cret",)), tiny.backbone) as client:
        body = {"images": [_b64(png_bytes(1))], "method": "greedy", **FAST}
        _error(client.post("/v1/caption", json=body), 401, "unauthorized")
        ok = client.post("/v1/caption", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["captions"][0]["caption"]


# ---------------------------------------------------------------- command line


def test_cli_serve_captioner_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import geovl.api.app
    from geovl.cli import build_parser, main

    args = build_parser().parse_args(["serve"])
    assert args.captioner == ServeConfig().captioner == "geovl-caption-small"
    seen: list[ServeConfig] = []
    monkeypatch.setattr(geovl.api.app, "serve", lambda config: seen.append(config))
    assert main(["serve", "--captioner", "none"]) == 0
    assert main(["serve", "--captioner", str(tmp_path)]) == 0
    assert [c.captioner for c in seen] == [None, str(tmp_path)]
