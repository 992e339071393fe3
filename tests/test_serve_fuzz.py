"""Fuzzing the service from its own OpenAPI schema (schemathesis strategies, hypothesis): no 5xx,
every error a JSON body ``{"error": ...}``. Bounded: at most :data:`EXAMPLES` requests per operation
and generation mode (positive: valid by the schema; negative: breaking it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from xmr.cli import main
from xmr.serve.app import create_app
from xmr.serve.config import ServeConfig
from xmr.serve.service import SearchService

#: generated requests per operation of the schema
EXAMPLES = 40


@pytest.fixture(scope="module")
def api_schema(toy_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    run, cache = toy_run
    idx = tmp_path_factory.mktemp("fuzz") / "idx"
    assert main(["-q", "index", str(run), "--split", "test", "--out", str(idx), "--cache-dir", str(cache)]) == 0
    app = create_app(SearchService.load(run, idx), ServeConfig(max_upload_mb=0.5))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_generated_request_makes_a_server_error(api_schema: schemathesis.BaseSchema) -> None:
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/search", "/search/image", "/items/{item_id}", "/images/{item_id}"}
    for op, mode in [(op, mode) for op in operations for mode in schemathesis.GenerationMode]:
        @given(case=op.as_strategy(mode))  # valid requests, then requests that break the schema
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def call(case: schemathesis.Case) -> None:
            response = case.call()
            statuses[response.status_code] += 1
            where = f"{case.method} {case.formatted_path} {case.body!r:.200}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                body = response.json()
                assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], where

        try:
            call()
        except Unsatisfiable:  # an operation with nothing to break (no parameters, no body)
            assert mode is schemathesis.GenerationMode.NEGATIVE, f"{op.path}: no valid request generated"
    assert sum(statuses.values()) >= 100 and statuses[200] > 0 and statuses[422] > 0 and statuses[404] > 0
    n = sum(statuses.values())
    print(f"fuzzed {n} requests over {len(operations)} operations: {dict(sorted(statuses.items()))}")
