"""``POST /v1/change-caption`` over real HTTP on loopback (uvicorn in a thread) with a tiny change captioner, and
small app variants through FastAPI's TestClient: multipart and JSON agree with the change captioner, the threshold
decides verdict and caption, the heat map has the grid's shape, bad inputs are 4xx naming the problem, disabled /
unloadable change captioners are 404, the client, OpenAPI, metrics, health, tokens and the CLI flag."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

import geovl.models.change_captioner as change_module  # noqa: E402
from geovl.api.app import create_app  # noqa: E402
from geovl.api.client import GeovlAPIError, GeovlClient  # noqa: E402
from geovl.models.change_captioner import NO_CHANGE_CAPTION, ChangeResult  # noqa: E402
from geovl.models.decoding import DecodingConfig  # noqa: E402
from geovl.models.weights import CheckpointNotFoundError  # noqa: E402
from geovl.serving.config import ServeConfig  # noqa: E402
from tests.api_fixtures import live_server, png_bytes  # noqa: E402
from tests.change_fixtures import TinyChangeCaptioner, make_tiny_change_captioner  # noqa: E402
from tests.change_serving_fixtures import FAST, expected_changes  # noqa: E402

FAST_FIELDS: dict[str, Any] = {"method": "greedy", "max_length": 8}
BEFORE, AFTER = png_bytes(30), png_bytes(31)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyChangeCaptioner:
    return make_tiny_change_captioner(tmp_path_factory.mktemp("api_change"))


@pytest.fixture(scope="module")
def server(tiny: TinyChangeCaptioner) -> Iterator[tuple[str, Any]]:
    config = ServeConfig(model="tiny", captioner=None, change_captioner=str(tiny.folder), max_image_bytes=200_000,
                         max_images_per_request=4, queue_size=64, max_wait_ms=5)
    with live_server(config, tiny.backbone) as s:
        yield s


@pytest.fixture
def url(server: tuple[str, Any]) -> str:
    return server[0]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _files(before: bytes = BEFORE, after: bytes = AFTER) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("before", ("2019.png", before, "image/png")), ("after", ("2023.png", after, "image/png"))]


def _error(response: Any, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    if code is not None:
        assert body["error"] == code, body
    return str(body["detail"])


def _matches(body: dict[str, Any], want: ChangeResult) -> None:
    assert (body["caption"], body["changed"]) == (want.caption, want.changed)
    assert body["probability"] == pytest.approx(want.probability, abs=1e-5)
    np.testing.assert_allclose(np.asarray(body["heatmap"]), want.heatmap, atol=1e-3)


# ---------------------------------------------------------------- answers


def test_threshold_zero_is_changed_with_a_decoded_caption_and_one_is_unchanged(url: str,
                                                                               tiny: TinyChangeCaptioner) -> None:
    r = httpx.post(f"{url}/v1/change-caption", files=_files(), data={"threshold": "0.0", **FAST_FIELDS}, timeout=60)
    assert r.status_code == 200, r.text
    changed = r.json()
    _matches(changed, expected_changes(tiny, [BEFORE], [AFTER], FAST, 0.0)[0])
    assert changed["changed"] is True and changed["threshold"] == 0.0
    assert changed["caption"] != NO_CHANGE_CAPTION and len(changed["caption"].split()) > 1
    r = httpx.post(f"{url}/v1/change-caption", files=_files(), data={"threshold": "1", **FAST_FIELDS}, timeout=60)
    assert r.status_code == 200, r.text
    unchanged = r.json()
    assert unchanged["changed"] is False and unchanged["caption"] == "There is no difference."
    assert unchanged["probability"] == changed["probability"] and unchanged["threshold"] == 1.0
    for body in (changed, unchanged):
        assert body["grid"] == [4, 4] and np.asarray(body["heatmap"]).shape == tuple(body["grid"])
        assert all(0.0 <= v <= 1.0 for row in body["heatmap"] for v in row)


def test_json_multipart_and_client_agree_with_the_change_captioner(url: str, server: tuple[str, Any],
                                                                   tiny: TinyChangeCaptioner) -> None:
    (want,) = expected_changes(tiny, [BEFORE], [AFTER], FAST)  # the model's own threshold, 0.5
    r = httpx.post(f"{url}/v1/change-caption", json={"before": _b64(BEFORE), "after": _b64(AFTER), **FAST_FIELDS},
                   timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    _matches(body, want)
    assert body["threshold"] == 0.5 and body["changed"] == (body["probability"] >= 0.5)
    assert body["model"] == str(tiny.folder) and body["decoding"] == FAST.to_dict()
    assert body["model_record"]["kind"] == "change-captioner" and body["model_record"]["checkpoint_sha256"]
    assert body["model_record"]["backbone"]["checkpoint_sha256"] == tiny.backbone.info.checkpoint_sha256
    assert body["timing"]["total_ms"] > 0 and body["timing"]["batch_size"] == 1
    m = httpx.post(f"{url}/v1/change-caption", files=_files(), data=FAST_FIELDS, timeout=60)
    assert m.status_code == 200, m.text
    assert {k: m.json()[k] for k in ("caption", "changed", "probability", "heatmap", "grid", "threshold")} == \
        {k: body[k] for k in ("caption", "changed", "probability", "heatmap", "grid", "threshold")}
    data_url = "data:image/png;base64," + _b64(AFTER)
    d = httpx.post(f"{url}/v1/change-caption", json={"before": _b64(BEFORE), "after": data_url, **FAST_FIELDS})
    assert d.status_code == 200 and d.json()["caption"] == body["caption"]
    resources = server[1].state.resources
    assert resources.changes.shares_backbone and resources.change_captioner().backbone is resources.backbone


def test_client_round_trip(url: str, tiny: TinyChangeCaptioner, tmp_path: Path) -> None:
    before = tmp_path / "2019.png"
    before.write_bytes(BEFORE)
    beam = DecodingConfig(method="beam", beam_size=2, max_length=6)
    with GeovlClient(url) as client:
        reply = client.change_caption(before, AFTER, threshold=0.0, method="beam", beam_size=2, max_length=6,
                                      top_p=None)
        default = client.change_caption(str(before), AFTER, method="greedy", max_length=8)
        none = client.change_caption(BEFORE, AFTER, threshold=1.0)
    want = expected_changes(tiny, [BEFORE], [AFTER], beam, 0.0)[0]
    assert reply.caption == want.caption and reply.changed and reply.threshold == 0.0
    assert reply.probability == pytest.approx(want.probability, abs=1e-5)
    assert reply.heatmap.dtype == np.float32 and reply.heatmap.shape == reply.grid == (4, 4)
    np.testing.assert_allclose(reply.heatmap, want.heatmap, atol=1e-3)
    assert reply.decoding == beam.to_dict() and reply.model == str(tiny.folder)
    assert reply.model_record["kind"] == "change-captioner" and reply.timing["batch_size"] == 1
    assert default.threshold == 0.5 and default.changed == (default.probability >= 0.5)
    assert none.caption == NO_CHANGE_CAPTION and not none.changed
    with GeovlClient(url) as client, pytest.raises(GeovlAPIError) as err:
        client.change_caption(BEFORE, b"not an image")
    assert err.value.status == 422 and err.value.code == "invalid_image"
    assert "the after image cannot be read" in err.value.detail


# ---------------------------------------------------------------- bad requests


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"before": _b64(BEFORE)}, 422, "the after image is missing"),
    ({"after": _b64(AFTER)}, 422, "the before image is missing"),
    ({}, 422, "the before and after images are missing"),
    ({"before": _b64(b"not an image"), "after": _b64(AFTER)}, 422, "the before image cannot be read"),
    ({"before": _b64(BEFORE), "after": _b64(AFTER[:60])}, 422, "the after image cannot be read"),
    ({"before": "%%%", "after": _b64(AFTER)}, 422, "before is not valid base64"),
    ({"before": _b64(BEFORE), "after": _b64(b"x" * 200_001)}, 413, "the after image is 200001 bytes"),
    ({"before": _b64(BEFORE), "after": _b64(AFTER), "threshold": 1.5}, 422, "threshold must be a number in [0, 1]"),
    ({"before": _b64(BEFORE), "after": _b64(AFTER), "threshold": -0.2}, 422, "threshold must be a number in [0, 1]"),
    ({"before": _b64(BEFORE), "after": _b64(AFTER), "threshold": True}, 422, "threshold: Value error, must be a "
                                                                              "number, not a boolean"),
    ({"before": _b64(BEFORE), "after": _b64(AFTER), "threshold": "high"}, 422, "threshold"),
    ({"before": _b64(BEFORE), "after": _b64(AFTER), "beam_size": 0}, 422, "beam_size must be in 1..32"),
    ({"before": _b64(BEFORE), "after": _b64(AFTER), "beam_size": 9}, 422, "at most 8 beams"),
    ({"before": _b64(BEFORE), "after": _b64(AFTER), "images": []}, 422, "images"),
    ({"before": [_b64(BEFORE)], "after": _b64(AFTER)}, 422, "before"),
])
def test_bad_json_bodies_name_the_problem(url: str, body: dict[str, Any], status: int, message: str) -> None:
    detail = _error(httpx.post(f"{url}/v1/change-caption", json=body, timeout=60), status)
    assert message in detail


@pytest.mark.parametrize(("files", "fields", "message"), [
    ([("before", ("a.png", BEFORE, "image/png"))], {}, "the after image is missing"),
    ([("threshold", (None, "0.5"))], {}, "the before and after images are missing"),  # a field, no file
    (_files(), {"threshold": "abc"}, "threshold must be a number, got 'abc'"),
    (_files(), {"threshold": "2"}, "threshold must be a number in [0, 1], got 2"),
    (_files(), {"top_p": "1.5"}, "top_p must be in (0, 1]"),
    (_files(), {"labels": "a"}, "unknown form fields ['labels']"),
    (_files(after=b"garbage"), {}, "the after image cannot be read"),
    ([*_files(), ("before", ("c.png", BEFORE, "image/png"))], {}, "send two image files, 'before' and 'after'"),
    ([("before", ("a.png", BEFORE, "image/png"))], {"after": "not a file"}, "after must be one image file part"),
])
def test_bad_forms_name_the_problem(url: str, files: list[Any], fields: dict[str, str], message: str) -> None:
    r = httpx.post(f"{url}/v1/change-caption", files=files, data=fields, timeout=60)
    assert message in _error(r, 422)


def test_other_limits(url: str) -> None:
    big = _files(after=b"x" * 200_001)
    assert "the after image is" in _error(httpx.post(f"{url}/v1/change-caption", files=big, timeout=60), 413)
    assert "not supported" in _error(httpx.post(f"{url}/v1/change-caption", content=b"x",
                                                headers={"content-type": "text/plain"}), 415)


# ---------------------------------------------------------------- service


def test_openapi_metrics_and_health(url: str) -> None:
    spec = httpx.get(f"{url}/openapi.json").json()
    op = spec["paths"]["/v1/change-caption"]["post"]
    assert {"404", "413", "422", "503"} <= set(op["responses"])
    assert set(op["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    schemas = spec["components"]["schemas"]
    assert {"ChangeCaptionRequest", "ChangeCaptionForm", "ChangeCaptionResponse", "CaptionRequest"} <= set(schemas)
    assert schemas["ChangeCaptionForm"]["required"] == ["before", "after"]
    assert {"before", "after", "threshold", "method", "beam_size"} <= set(schemas["ChangeCaptionForm"]["properties"])
    assert {"images", "method", "seed"} <= set(schemas["CaptionRequest"]["properties"])
    assert "threshold" not in schemas["CaptionRequest"]["properties"]
    before = _metric(httpx.get(f"{url}/metrics").text, "geovl_pairs_change_captioned_total")
    with GeovlClient(url) as client:
        client.change_caption(BEFORE, AFTER, **FAST_FIELDS)
        with pytest.raises(GeovlAPIError):
            client.change_caption(BEFORE, b"bad")
        assert client.health().queued_images == 0
    assert _metric(httpx.get(f"{url}/metrics").text, "geovl_pairs_change_captioned_total") == before + 1
    assert 'endpoint="/v1/change-caption"' in httpx.get(f"{url}/metrics").text


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is missing")


def _client(config: ServeConfig, backbone: Any) -> TestClient:
    return TestClient(create_app(config, backbone=backbone))


def test_disabled_change_captioning_is_404(tiny: TinyChangeCaptioner) -> None:
    with _client(ServeConfig(change_captioner="none"), tiny.backbone) as client:
        r = client.post("/v1/change-caption", files=_files())
        assert "change captioning is disabled" in _error(r, 404, "not_found")


def test_missing_weights_are_404_named_and_not_retried(tiny: TinyChangeCaptioner,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def missing(name: str, **_: Any) -> Any:
        calls.append(name)
        raise CheckpointNotFoundError(f"Checkpoint '{name}' is not on this machine: train it or install it")

    monkeypatch.setattr(change_module, "load_change_captioner", missing)
    with _client(ServeConfig(), tiny.backbone) as client:  # the default: the bundled geovl-change-small
        bad = client.post("/v1/change-caption", files=_files(), data={"threshold": "7"})
        assert "threshold must be a number in [0, 1]" in _error(bad, 422) and calls == []  # checked before loading
        for _ in range(2):
            detail = _error(client.post("/v1/change-caption", files=_files()), 404, "model_unavailable")
            assert detail.startswith("the change captioner 'geovl-change-small' cannot be loaded on this server")
            assert "train it or install it" in detail
    assert calls == ["geovl-change-small"]  # remembered, not retried per request


def test_change_caption_needs_the_token(tiny: TinyChangeCaptioner) -> None:
    config = ServeConfig(change_captioner=str(tiny.folder), api_tokens=("s3cret",))
    with _client(config, tiny.backbone) as client:
        _error(client.post("/v1/change-caption", files=_files(), data=FAST_FIELDS), 401, "unauthorized")
        ok = client.post("/v1/change-caption", files=_files(), data=FAST_FIELDS,
                         headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["caption"]


def test_cli_serve_change_captioner_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import geovl.api.app
    from geovl.cli import build_parser, main

    args = build_parser().parse_args(["serve"])
    assert args.change_captioner == ServeConfig().change_captioner == "geovl-change-small"
    seen: list[ServeConfig] = []
    monkeypatch.setattr(geovl.api.app, "serve", lambda config: seen.append(config))
    assert main(["serve", "--change-captioner", "none"]) == 0
    assert main(["serve", "--change-captioner", str(tmp_path)]) == 0
    assert [c.change_captioner for c in seen] == [None, str(tmp_path)]
    assert [c.captioner for c in seen] == [ServeConfig().captioner] * 2
