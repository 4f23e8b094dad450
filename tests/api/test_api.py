"""The HTTP API (``geovl serve``): real HTTP on loopback against uvicorn in a background thread."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

from geovl.api.client import GeovlAPIError, GeovlClient  # noqa: E402
from geovl.models import Backbone  # noqa: E402
from geovl.serving.batching import BatcherClosedError, MicroBatcher, QueueFullError  # noqa: E402
from geovl.serving.config import ServeConfig  # noqa: E402
from geovl.tasks.zeroshot.classifier import ZeroShotClassifier  # noqa: E402
from tests.api_fixtures import live_server, micro_backbone, png_bytes  # noqa: E402

LABELS = ["forest", "river", "dense residential area", "harbour"]


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return micro_backbone()


@pytest.fixture(scope="module")
def server(backbone: Backbone) -> Iterator[tuple[str, Any]]:
    config = ServeConfig(model="random:geovl-micro", max_images_per_request=4, max_labels=8,
                         max_image_bytes=200_000, queue_size=64, max_wait_ms=5)
    with live_server(config, backbone) as s:
        yield s


@pytest.fixture
def url(server: tuple[str, Any]) -> str:
    return server[0]


# ---------------------------------------------------------------- endpoints


def test_health_and_models(url: str, backbone: Backbone) -> None:
    with GeovlClient(url) as client:
        health = client.health()
        assert health.status == "ok" and health.model == "random:geovl-micro"
        info = client.models()
    assert info.models[0].dim == backbone.embed_dim and info.models[0].image_size == backbone.image_size
    assert "eurosat" in info.label_sets and "Forest" in info.label_sets["eurosat"]
    assert info.templates and all("{}" in t for t in info.templates)


def test_classify_with_labels_matches_the_classifier(url: str, backbone: Backbone) -> None:
    images = [png_bytes(1), png_bytes(2), png_bytes(3)]
    with GeovlClient(url) as client:
        result = client.classify(images, labels=LABELS, top_k=3)
    expected = ZeroShotClassifier(backbone, LABELS)(images, top_k=3).predictions
    assert result.classes == LABELS and len(result.predictions) == 3
    for got, want in zip(result.predictions, expected, strict=True):
        assert got.labels == want.labels
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-4, atol=1e-6)
    assert result.timing["total_ms"] > 0 and len(result.timing["batch_sizes"]) == 3


def test_classify_with_label_set_json_and_multipart_agree(url: str, backbone: Backbone) -> None:
    images = [png_bytes(4), png_bytes(5)]
    with GeovlClient(url) as client:
        result = client.classify(images, label_set="eurosat", top_k=2)
    expected = ZeroShotClassifier(backbone, label_set="eurosat")(images, top_k=2).predictions
    assert [p.labels for p in result.predictions] == [p.labels for p in expected]
    assert len(result.classes) == 10
    files = [("images", ("a.png", images[0], "image/png")), ("images", ("b.png", images[1], "image/png"))]
    r = httpx.post(f"{url}/v1/classify", files=files, data={"label_set": "eurosat", "top_k": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["labels"] for p in body["predictions"]] == [p.labels for p in expected]
    assert [p["filename"] for p in body["predictions"]] == ["a.png", "b.png"]
    # A subset of the set, comma-separated in one multipart field.
    r = httpx.post(f"{url}/v1/classify", files=files[:1], data={"label_set": "eurosat", "labels": "Forest,River"})
    assert r.status_code == 200 and r.json()["classes"] == ["Forest", "River"]


def _mid_threshold(scores: np.ndarray) -> float:
    """A threshold halfway between the two middle per-class scores: some classes pass, some do not."""
    flat = np.sort(scores.ravel())
    i = len(flat) // 2
    assert flat[i] - flat[i - 1] > 1e-4 * flat[i]  # far enough from every score for float32 round-off
    return float((flat[i - 1] + flat[i]) / 2)


def test_multi_label_json_and_multipart_match_the_classifier(url: str, backbone: Backbone) -> None:
    images = [png_bytes(30), png_bytes(31), png_bytes(32)]
    clf = ZeroShotClassifier(backbone, LABELS)
    emb = backbone.encode_images(images)
    scores = clf.scores(emb)
    threshold = _mid_threshold(scores)
    expected = clf.predict(emb, threshold=threshold, top_k=len(clf.classes))
    assert any(p.labels for p in expected) and any(len(p.labels) < len(LABELS) for p in expected)
    body = {"images": [_b64(img) for img in images], "labels": LABELS, "threshold": threshold,
            "top_k": len(LABELS)}
    r = httpx.post(f"{url}/v1/classify", json=body)
    assert r.status_code == 200, r.text
    files = [("images", (f"{i}.png", img, "image/png")) for i, img in enumerate(images)]
    m = httpx.post(f"{url}/v1/classify", files=files,
                   data={"labels": ",".join(LABELS), "threshold": repr(threshold), "top_k": str(len(LABELS))})
    assert m.status_code == 200, m.text
    for answer in (r.json(), m.json()):
        assert answer["multi_label"] is True and answer["threshold"] == pytest.approx(threshold)
        assert answer["classes"] == LABELS
        for got, want, row in zip(answer["predictions"], expected, scores, strict=True):
            assert got["labels"] == want.labels
            assert all(s >= threshold for s in got["scores"]) and got["scores"] == sorted(got["scores"], reverse=True)
            np.testing.assert_allclose(got["scores"], want.scores, rtol=1e-4, atol=1e-6)
            # every class left out scores below the threshold
            assert all(row[LABELS.index(c)] < threshold for c in LABELS if c not in got["labels"])
    # top_k cuts the list to the best classes; 0.999 leaves nothing
    r = httpx.post(f"{url}/v1/classify", json={**body, "top_k": 1})
    assert [p["labels"] for p in r.json()["predictions"]] == [p.labels[:1] for p in expected]
    r = httpx.post(f"{url}/v1/classify", json={**body, "threshold": 0.999})
    assert r.status_code == 200, r.text
    assert [(p["labels"], p["scores"]) for p in r.json()["predictions"]] == [([], [])] * 3
    m = httpx.post(f"{url}/v1/classify", files=files, data={"labels": ",".join(LABELS), "threshold": "0.999"})
    assert m.status_code == 200 and all(p["labels"] == [] for p in m.json()["predictions"])
    # without a threshold: the softmax top-k, marked as such
    r = httpx.post(f"{url}/v1/classify", json={"images": body["images"][:1], "labels": LABELS})
    assert r.json()["multi_label"] is False and r.json()["threshold"] is None
    assert sum(r.json()["predictions"][0]["scores"]) == pytest.approx(1.0, abs=1e-4)


def test_bad_thresholds_are_422(url: str) -> None:
    img = _b64(png_bytes(33))
    for bad in (0, 1, -0.1, 1.5, "abc", True, False, [0.5]):
        detail = _error(httpx.post(f"{url}/v1/classify", json={"images": [img], "labels": LABELS,
                                                               "threshold": bad}), 422)
        assert "threshold" in detail, (bad, detail)
    nan = httpx.post(f"{url}/v1/classify", content=f'{{"images": ["{img}"], "labels": ["a"], "threshold": NaN}}',
                     headers={"content-type": "application/json"})
    assert "threshold" in _error(nan, 422)
    files = [("images", ("a.png", png_bytes(33), "image/png"))]
    for bad_form in ("0", "1", "-0.1", "abc", "true", "nan", "inf"):
        detail = _error(httpx.post(f"{url}/v1/classify", files=files, data={"labels": "a,b", "threshold": bad_form}),
                        422)
        assert "threshold" in detail, (bad_form, detail)


def test_client_and_service_pass_threshold(server: tuple[str, Any], backbone: Backbone) -> None:
    url, app = server
    images = [png_bytes(34), png_bytes(35)]
    clf = ZeroShotClassifier(backbone, LABELS)
    emb = backbone.encode_images(images)
    threshold = _mid_threshold(clf.scores(emb))
    expected = clf.predict(emb, threshold=threshold, top_k=len(clf.classes))
    with GeovlClient(url) as client:
        result = client.classify(images, labels=LABELS, top_k=len(LABELS), threshold=threshold)
        plain = client.classify(images, labels=LABELS, top_k=2)
        with pytest.raises(GeovlAPIError) as err:
            client.classify(images, labels=LABELS, threshold=1.0)
    assert result.multi_label is True and result.threshold == pytest.approx(threshold)
    assert [p.labels for p in result.predictions] == [p.labels for p in expected]
    assert plain.multi_label is False and plain.threshold is None
    assert err.value.status == 422 and "threshold" in err.value.detail
    from geovl.serving.resources import ImageInput, InvalidRequestError

    service = app.state.resources
    direct = service.classify([ImageInput(img) for img in images], labels=LABELS, top_k=len(LABELS),
                              threshold=threshold)
    assert direct.multi_label and [p.labels for p in direct.predictions] == [p.labels for p in expected]
    with pytest.raises(InvalidRequestError, match="threshold"):
        service.classify([ImageInput(images[0])], labels=LABELS, threshold=float("nan"))


def test_class_embeddings_are_cached(server: tuple[str, Any]) -> None:
    url, app = server
    service = app.state.resources
    labels = ["cached-a", "cached-b"]
    with GeovlClient(url) as client:
        client.classify([png_bytes(6)], labels=labels)
        n = service.cached_classifiers
        client.classify([png_bytes(7)], labels=labels)
    assert service.cached_classifiers == n


# ---------------------------------------------------------------- errors


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    return str(body["detail"])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_limits(url: str) -> None:
    img = _b64(png_bytes(8))
    post = lambda body: httpx.post(f"{url}/v1/classify", json=body)  # noqa: E731
    assert "limit is 4" in _error(post({"images": [img] * 5, "labels": LABELS}), 413)
    big = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG")
    assert "200000 bytes" in _error(post({"images": [_b64(buf.getvalue())], "labels": LABELS}), 413)
    files = [("images", ("big.png", buf.getvalue(), "image/png"))]
    assert "'big.png'" in _error(httpx.post(f"{url}/v1/classify", files=files, data={"labels": "a,b"}), 413)
    assert "limit is 8" in _error(post({"images": [img], "labels": [f"c{i}" for i in range(9)]}), 422)
    assert "top_k" in _error(post({"images": [img], "labels": LABELS, "top_k": 0}), 422)
    assert "unknown label set" in _error(post({"images": [img], "label_set": "nope"}), 422)
    assert "no classes" in _error(post({"images": [img]}), 422)
    assert "duplicate" in _error(post({"images": [img], "labels": ["a", "a"]}), 422)
    assert "no images" in _error(post({"images": [], "labels": LABELS}), 422)
    assert "images" in _error(post({"labels": LABELS}), 422)
    assert "not supported" in _error(httpx.post(f"{url}/v1/classify", content=b"x",
                                                headers={"content-type": "text/plain"}), 415)
    huge = httpx.post(f"{url}/v1/classify", content=b"{" + b" " * 4_000_000,
                      headers={"content-type": "application/json"})
    assert "limit" in _error(huge, 413)
    chunked = httpx.post(f"{url}/v1/classify", content=iter([b"{", b" " * 4_000_000]),
                         headers={"content-type": "application/json"})  # no Content-Length: counted as it arrives
    assert "limit" in _error(chunked, 413)
    assert _error(httpx.get(f"{url}/v1/nope"), 404)


def test_bad_images_are_listed_and_the_good_ones_served(url: str) -> None:
    """A batch with an undecodable image classifies / embeds the others and lists it; all bad is a 422."""
    images = [_b64(png_bytes(9)), _b64(b"not an image"), _b64(png_bytes(8))]
    r = httpx.post(f"{url}/v1/classify", json={"images": images, "labels": LABELS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["index"] for p in body["predictions"]] == [0, 2]
    assert [f["index"] for f in body["failures"]] == [1] and "image" in body["failures"][0]["error"]
    files = [("images", ("good.png", png_bytes(10), "image/png")),
             ("images", ("broken.jpg", png_bytes(10)[:60], "image/jpeg"))]
    r = httpx.post(f"{url}/v1/classify", files=files, data={"labels": "a,b"})
    assert r.status_code == 200 and r.json()["failures"][0]["filename"] == "broken.jpg"
    r = httpx.post(f"{url}/v1/embed", json={"images": [_b64(b""), _b64(png_bytes(3))]})
    assert r.status_code == 200
    assert r.json()["image_embeddings"][0] is None and len(r.json()["image_embeddings"][1]) > 0
    assert r.json()["failures"][0]["index"] == 0
    # nothing decodable: 422 naming each image
    detail = _error(httpx.post(f"{url}/v1/classify", json={"images": [_b64(b"not an image")], "labels": LABELS}), 422)
    assert detail.startswith("images[0]") and "image" in detail
    assert "base64" in _error(httpx.post(f"{url}/v1/classify", json={"images": ["%%%"], "labels": LABELS}), 422)
    files = [("images", ("broken.jpg", png_bytes(10)[:60], "image/jpeg"))]
    assert "'broken.jpg'" in _error(httpx.post(f"{url}/v1/classify", files=files, data={"labels": "a,b"}), 422)
    with GeovlClient(url) as client:
        assert len(client.classify([png_bytes(11)], labels=LABELS).predictions) == 1
        with pytest.raises(GeovlAPIError) as err:
            client.classify([b"garbage"], labels=LABELS)
    assert err.value.status == 422 and err.value.code == "invalid_image"


def test_bearer_tokens(backbone: Backbone) -> None:
    config = ServeConfig(model="random:geovl-micro", api_tokens=("s3cret", "other"))
    with live_server(config, backbone) as (url, _):
        assert httpx.get(f"{url}/v1/health").status_code == 200  # liveness needs no token
        r = httpx.get(f"{url}/v1/models")
        _error(r, 401)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = httpx.post(f"{url}/v1/classify", json={"images": [_b64(png_bytes(1))], "labels": LABELS},
                       headers={"Authorization": "Bearer wrong"})
        assert "invalid" in _error(r, 401) and "invalid_token" in r.headers["WWW-Authenticate"]
        with GeovlClient(url, token="other") as client:
            assert client.classify([png_bytes(1)], labels=LABELS).predictions
        with GeovlClient(url) as client, pytest.raises(GeovlAPIError) as err:
            client.models()
        assert err.value.status == 401
        spec = httpx.get(f"{url}/openapi.json").json()
        assert "401" in spec["paths"]["/v1/classify"]["post"]["responses"]


# ---------------------------------------------------------------- batching and overload


def _instrument(backbone: Backbone, before: Callable[[torch.Tensor], None]) -> None:
    real = backbone.embed_pixels

    def embed_pixels(pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        before(pixels)
        return real(pixels, normalize)

    backbone.embed_pixels = embed_pixels  # type: ignore[method-assign]


def test_overload_gives_503_with_retry_after() -> None:
    backbone = micro_backbone()
    entered, release = threading.Event(), threading.Event()

    def block(pixels: torch.Tensor) -> None:
        entered.set()
        release.wait(30)

    _instrument(backbone, block)
    config = ServeConfig(model="random:geovl-micro", queue_size=1, max_images_per_request=1, max_batch=1,
                         max_wait_ms=0, retry_after_s=2)
    with live_server(config, backbone) as (url, app):
        body = {"images": [_b64(png_bytes(1))], "labels": LABELS}
        results: list[int] = []
        call = lambda: results.append(httpx.post(f"{url}/v1/classify", json=body, timeout=60).status_code)  # noqa: E731
        first = threading.Thread(target=call)
        first.start()
        assert entered.wait(30)  # first request is in the forward pass
        second = threading.Thread(target=call)
        second.start()
        deadline = time.monotonic() + 30
        while app.state.resources.batcher.pending < 1:  # second request is queued
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r = httpx.post(f"{url}/v1/classify", json=body)
        assert "busy" in _error(r, 503)
        assert r.headers["Retry-After"] == "2"
        with GeovlClient(url) as client, pytest.raises(GeovlAPIError) as err:
            client.classify([png_bytes(3)], labels=LABELS)
        assert err.value.status == 503 and err.value.retry_after == 2
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, "geovl_overload_rejections_total") == 2
        assert _metric(metrics, "geovl_http_requests_total", endpoint="/v1/classify", status="503") == 2
        assert _metric(metrics, "geovl_queue_depth") == 1
        release.set()
        first.join(30)
        second.join(30)
    assert results == [200, 200]


def test_concurrent_requests_share_forward_passes() -> None:
    backbone = micro_backbone()
    batches: list[int] = []
    _instrument(backbone, lambda pixels: batches.append(len(pixels)))
    config = ServeConfig(model="random:geovl-micro", max_batch=8, max_wait_ms=3000)
    with live_server(config, backbone) as (url, _):
        with GeovlClient(url) as client:
            client.classify([png_bytes(0)], labels=LABELS)  # builds the class embeddings; waits out max_wait once
        batches.clear()
        statuses: list[list[int]] = []

        def one(i: int) -> None:
            with GeovlClient(url) as c:
                statuses.append(c.classify([png_bytes(i)], labels=LABELS).timing["batch_sizes"])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - start
    assert sum(batches) == 8 and len(batches) <= 2, batches
    assert len(statuses) == 8 and max(s[0] for s in statuses) == max(batches)
    assert elapsed < 3.0 or len(batches) == 2  # a full batch runs at once, without waiting out max_wait_ms


def test_openapi_schema_lists_v1_paths(url: str) -> None:
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/v1/health", "/v1/models", "/v1/classify"} <= set(spec["paths"])
    post = spec["paths"]["/v1/classify"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"200", "413", "415", "422", "503"} <= set(post["responses"])
    assert "Retry-After" in post["responses"]["503"]["headers"]
    schemas = spec["components"]["schemas"]
    assert {"ClassifyRequest", "ClassifyForm", "ClassifyResponse", "ErrorResponse", "Timing"} <= set(schemas)
    form_threshold = schemas["ClassifyForm"]["properties"]["threshold"]
    assert (form_threshold["exclusiveMinimum"], form_threshold["exclusiveMaximum"]) == (0, 1)
    json_threshold = schemas["ClassifyRequest"]["properties"]["threshold"]["anyOf"][0]
    assert (json_threshold["exclusiveMinimum"], json_threshold["exclusiveMaximum"]) == (0, 1)
    assert "multi_label" in schemas["ClassifyResponse"]["required"]
    refs = [c["schema"]["$ref"].rsplit("/", 1)[1] for c in post["requestBody"]["content"].values()]
    assert all(r in schemas for r in refs)
    assert spec["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


# ---------------------------------------------------------------- the batcher and config on their own


def test_micro_batcher_batches_isolates_errors_and_closes() -> None:
    calls: list[list[int]] = []

    def process(items: list[int]) -> list[int]:
        calls.append(items)
        if -1 in items:
            raise ValueError("negative")
        return [x * 10 for x in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch=4, max_wait_ms=200, queue_size=6)
    futures = batcher.submit([1, 2, -1, 3])
    assert [f.exception(5) is None for f in futures] == [True, True, False, True]
    assert [futures[i].result() for i in (0, 1, 3)] == [10, 20, 30]
    assert calls[0] == [1, 2, -1, 3]  # one batch, then each item alone to find the one that fails
    with pytest.raises(ValueError, match="negative"):
        futures[2].result()
    with pytest.raises(ValueError, match="never fit"):
        batcher.submit(list(range(7)))
    batcher.close()
    with pytest.raises(BatcherClosedError):
        batcher.submit([1])


def test_micro_batcher_rejects_when_full_and_drains_on_close() -> None:
    gate = threading.Event()
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda xs: (gate.wait(10), xs)[1], max_batch=1, max_wait_ms=0,
                                                   queue_size=2)
    first = batcher.submit([1])
    deadline = time.monotonic() + 10
    while batcher.pending:  # the worker has taken the first item
        assert time.monotonic() < deadline
        time.sleep(0.005)
    queued = batcher.submit([2, 3])
    with pytest.raises(QueueFullError, match="full"):
        batcher.submit([4])
    gate.set()
    batcher.close()
    assert [f.result(5) for f in [*first, *queued]] == [1, 2, 3]


def test_serve_config_checks() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        ServeConfig(max_batch=0)
    with pytest.raises(ValueError, match="queue_size"):
        ServeConfig(queue_size=2, max_images_per_request=4)
    with pytest.raises(ValueError, match="token"):
        ServeConfig(api_tokens=("has space",))
    assert ServeConfig().host == "127.0.0.1"


def test_cli_serve_parses() -> None:
    from geovl.cli import build_parser

    args = build_parser().parse_args(["serve", "--port", "9000", "--token", "a", "--token", "b", "--max-batch", "4"])
    assert args.port == 9000 and args.tokens == ["a", "b"] and args.max_batch == 4 and args.host == "127.0.0.1"
    assert args.cors_origins == [] and args.index is None
    args = build_parser().parse_args(["serve", "--cors-origin", "https://a.org", "--cors-origin", "*",
                                      "--index", "idx"])
    assert args.cors_origins == ["https://a.org", "*"] and args.index == "idx" and args.tokens == []


# ---------------------------------------------------------------- readiness, env tokens, CORS


def test_ready_and_health(url: str, server: tuple[str, Any]) -> None:
    r = httpx.get(f"{url}/v1/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["model"] == "random:geovl-micro"
    service = server[1].state.resources
    real = type(service.batcher).running
    try:
        type(service.batcher).running = property(lambda self: False)  # type: ignore[method-assign]
        r = httpx.get(f"{url}/v1/ready")
        assert _error(r, 503) and r.headers["Retry-After"]
        assert httpx.get(f"{url}/v1/health").status_code == 200  # liveness is not readiness
    finally:
        type(service.batcher).running = real  # type: ignore[method-assign]
    assert httpx.get(f"{url}/v1/ready").status_code == 200


def test_tokens_from_env_and_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from geovl.serving.config import tokens_from_env

    assert tokens_from_env({"GEOVL_API_TOKENS": " a, b ,,c "}) == ("a", "b", "c")
    assert tokens_from_env({}) == ()
    monkeypatch.setenv("GEOVL_API_TOKENS", "x,y")
    assert tokens_from_env() == ("x", "y")


def test_cors_off_by_default_and_on_when_configured(url: str, backbone: Backbone) -> None:
    preflight = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"}
    r = httpx.get(f"{url}/v1/health", headers={"Origin": "https://app.example.org"})
    assert "access-control-allow-origin" not in r.headers
    config = ServeConfig(model="random:geovl-micro", cors_origins=["https://app.example.org/"])
    with live_server(config, backbone) as (cors_url, _):
        r = httpx.options(f"{cors_url}/v1/classify", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.org"
        r = httpx.get(f"{cors_url}/v1/health", headers={"Origin": "https://evil.example.org"})
        assert "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------- metrics


def _metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_counters_move(url: str) -> None:
    pytest.importorskip("prometheus_client")
    before = httpx.get(f"{url}/metrics")
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    text = before.text
    classified = _metric(text, "geovl_images_classified_total")
    ok = _metric(text, "geovl_http_requests_total", endpoint="/v1/classify", status="200")
    bad = _metric(text, "geovl_http_requests_total", endpoint="/v1/classify", status="422")
    batches = _metric(text, "geovl_forward_batch_size_count")
    with GeovlClient(url) as client:
        client.classify([png_bytes(1), png_bytes(2)], labels=LABELS)
    httpx.post(f"{url}/v1/classify", json={"images": [], "labels": LABELS})
    httpx.get(f"{url}/v1/no-such-path")
    after = httpx.get(f"{url}/metrics").text
    assert _metric(after, "geovl_images_classified_total") == classified + 2
    assert _metric(after, "geovl_http_requests_total", endpoint="/v1/classify", status="200") == ok + 1
    assert _metric(after, "geovl_http_requests_total", endpoint="/v1/classify", status="422") == bad + 1
    assert _metric(after, "geovl_http_requests_total", endpoint="unmatched", status="404") >= 1
    assert _metric(after, "geovl_forward_batch_size_count") >= batches + 1
    assert _metric(after, "geovl_http_request_duration_seconds_count", endpoint="/v1/classify") >= ok + bad + 2
    assert "geovl_queue_depth 0.0" in after and "geovl_overload_rejections_total" in after


# ---------------------------------------------------------------- embed


def test_embed_images_and_texts_match_the_backbone(url: str, backbone: Backbone) -> None:
    images, texts = [png_bytes(20), png_bytes(21)], ["a harbour", "dense forest, with a river"]
    with GeovlClient(url) as client:
        result = client.embed(images=images, texts=texts)
        only_texts = client.embed(texts=texts[:1])
    assert result.model == "random:geovl-micro" and result.dim == backbone.embed_dim
    np.testing.assert_allclose(result.image_embeddings, backbone.encode_images(images), atol=1e-5)
    np.testing.assert_allclose(result.text_embeddings, backbone.encode_texts(texts), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(result.image_embeddings, axis=1), 1.0, atol=1e-5)
    assert only_texts.image_embeddings.shape == (0, backbone.embed_dim) and only_texts.text_embeddings.shape[0] == 1
    files = [("images", ("a.png", images[0], "image/png"))]
    r = httpx.post(f"{url}/v1/embed", files=files, data={"texts": ["x, y", "z"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["image_embeddings"]) == 1 and len(body["text_embeddings"]) == 2  # commas do not split texts
    np.testing.assert_allclose(body["image_embeddings"][0], result.image_embeddings[0], atol=1e-5)


def test_embed_limits(url: str) -> None:
    post = lambda body: httpx.post(f"{url}/v1/embed", json=body)  # noqa: E731
    assert "nothing to embed" in _error(post({}), 422)
    assert "limit is 4" in _error(post({"images": [_b64(png_bytes(1))] * 5}), 413)
    assert "limit is 256" in _error(post({"texts": ["a"] * 257}), 413)
    assert "limit is 2000" in _error(post({"texts": ["a" * 2001]}), 422)
    assert "base64" in _error(post({"images": ["%%%"]}), 422)
    assert _error(post({"images": [_b64(b"nope")]}), 422).startswith("images[0]")
    assert "unknown" in _error(httpx.post(f"{url}/v1/embed", data={"labels": "a"}, files={"x": b"1"}), 422)
    with GeovlClient(url) as client, pytest.raises(ValueError, match="nothing"):
        client.embed()


# ---------------------------------------------------------------- search


def test_search_without_index_is_404(url: str) -> None:
    assert "--index" in _error(httpx.post(f"{url}/v1/search", json={"text": "forest"}), 404)


def test_search_over_an_index(backbone: Backbone, tmp_path: Any) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("pyarrow")
    from geovl.models.record import model_record
    from tests.search_fixtures import write_index_dir

    images = [png_bytes(100 + i) for i in range(30)]
    vectors = backbone.encode_images(images)
    index_dir = write_index_dir(tmp_path / "index", vectors, model=model_record(backbone))
    config = ServeConfig(model="random:geovl-micro", index=str(index_dir))
    with live_server(config, backbone) as (url, _):
        assert httpx.get(f"{url}/v1/ready").json()["index"] is True
        with GeovlClient(url) as client:
            hits = client.search(image=images[7], k=3)
            assert hits[0]["id"] == 7 and hits[0]["rank"] == 0 and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
            assert client.search(vector=vectors[12], k=2)[0]["id"] == 12
            by_text = client.search(text="a harbour", k=5)
            expected = backbone.encode_texts(["a harbour"])[0] @ vectors.T
            assert [h["id"] for h in by_text] == list(np.argsort(-expected)[:5])
            meta = hits[0]["metadata"]
            assert isinstance(meta["acquired"], str) and "T" in meta["acquired"]  # datetimes as ISO strings
            assert meta["geometry"] is None or isinstance(meta["geometry"], str)
            filtered = client.search(text="a harbour", k=30, where=["sensor=S2"], start="2018-01-01")
            assert filtered and all(h["metadata"]["sensor"] == "S2" for h in filtered)
            assert all(h["metadata"]["acquired"] >= "2018" for h in filtered)
        post = lambda body: httpx.post(f"{url}/v1/search", json=body)  # noqa: E731
        assert "exactly one" in _error(post({"k": 3}), 422)
        assert "exactly one" in _error(post({"text": "a", "vector": [1.0]}), 422)
        assert "dimensions" in _error(post({"vector": [1.0, 2.0]}), 422)
        assert "zero" in _error(post({"vector": [0.0] * backbone.embed_dim}), 422)
        assert "k must" in _error(post({"text": "a", "k": 0}), 422)
        assert _error(post({"text": "a", "bbox": [1, 2]}), 422)
        assert _error(post({"text": "a", "where": ["???"]}), 422)
        assert _error(post({"text": "a", "start": "not a date"}), 422)
        assert "base64" in _error(post({"image": "%%%"}), 422)
