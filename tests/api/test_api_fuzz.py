"""Schemathesis fuzzing of the HTTP API: every ``/v1`` operation of the live server's ``/openapi.json`` (with the
bearer token and an index loaded, so ``/v1/search`` is exercised too) must never answer 5xx."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("uvicorn")
pytest.importorskip("faiss")
pytest.importorskip("pyarrow")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from geovl.models.record import model_record  # noqa: E402
from geovl.serving.config import ServeConfig  # noqa: E402
from tests.api_fixtures import live_server, micro_backbone, png_bytes  # noqa: E402
from tests.search_fixtures import write_index_dir  # noqa: E402

TOKEN = "fuzz-token"
MAX_EXAMPLES = 30
#: Responses seen, by (method, path, status): the test reports them; docs/benchmarks.md records a run.
SEEN: dict[tuple[str, str, int], int] = {}
_SEEN_LOCK = threading.Lock()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    backbone = micro_backbone()
    images = [png_bytes(200 + i) for i in range(20)]
    index_dir = write_index_dir(tmp_path_factory.mktemp("fuzz") / "index", backbone.encode_images(images),
                                model=model_record(backbone))
    config = ServeConfig(model="random:geovl-micro", api_tokens=(TOKEN,), index=str(index_dir),
                         max_images_per_request=4, max_image_bytes=200_000, max_labels=16, max_texts=16,
                         max_text_chars=200, queue_size=64, max_wait_ms=2)
    with live_server(config, backbone) as (url, _):
        yield url
    counts: dict[str, int] = {}
    for (method, path, status), n in sorted(SEEN.items()):
        counts[f"{method} {path} {status}"] = n
    print(f"\nschemathesis: {sum(SEEN.values())} requests; by operation and status: {counts}")


@pytest.fixture(scope="module")
def api_schema(fuzz_server: str) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json").include(path_regex=r"^/v1/")


def test_api_never_answers_5xx(api_schema: Any, fuzz_server: str) -> None:
    """Positive (schema-valid) and negative (schema-violating) cases for each /v1 operation."""
    # schemathesis' pytest plugin (``schemathesis.pytest.from_fixture``) breaks on pytest 9 ("'Function' object
    # has no attribute '_nodeid'"), so hypothesis drives each operation's case strategy directly.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/health", "/v1/ready", "/v1/models", "/v1/classify", "/v1/embed",
                                              "/v1/search"}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call_and_validate(base_url=fuzz_server, headers=headers, checks=[not_a_server_error],
                                                  timeout=60)
                key = (case.method.upper(), case.path, int(response.status_code))
                with _SEEN_LOCK:
                    SEEN[key] = SEEN.get(key, 0) + 1

            try:
                run()
            except Unsatisfiable:
                # Nothing to violate: a GET without parameters has no negative cases.
                assert mode is GenerationMode.NEGATIVE, operation.path
    assert sum(SEEN.values()) >= len(operations)
    assert not any(status >= 500 for _, _, status in SEEN)
