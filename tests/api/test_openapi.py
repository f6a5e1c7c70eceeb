"""The OpenAPI document tells the truth: one error model, access as the settings make it, limits the server
enforces. (tests/api/test_fuzz.py holds the whole API to the document; these pin what a fuzz may miss.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.main import create_app
from app.schemas import BENCHMARK_BATCH_SIZE, BENCHMARK_SEQ_LEN
from slimbert.benchmark.runner import BenchmarkSpec
from tests.api.test_api import _settings

ADMIN_ONLY = {("post", "/jobs/compress"), ("post", "/jobs/benchmark"), ("post", "/jobs/autotune"),
              ("delete", "/jobs/{job_id}"), ("post", "/datasets"), ("delete", "/datasets/{name}")}
OPEN = {("get", "/healthz"), ("get", "/readyz")}


def _doc(tmp_path: Path, **kw: object) -> dict[str, Any]:
    return create_app(_settings(tmp_path, **kw)).openapi()


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, item in doc["paths"].items() for method, op in item.items()}


def test_every_error_is_error_body(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    assert "HTTPValidationError" not in str(doc) and "ValidationError" not in doc["components"]["schemas"]
    assert "BenchmarkSpec" not in doc["components"]["schemas"]  # a stale copy, without the body's bounds
    for (method, path), op in _operations(doc).items():
        assert "422" in op["responses"] or not (op.get("parameters") or op.get("requestBody")), (method, path)
        for code, response in op["responses"].items():
            if int(code) < 400 or (path, code) == ("/readyz", "503"):
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)


def test_keyless_declares_no_key(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    assert "Not in use" in doc["components"]["securitySchemes"]["APIKeyHeader"]["description"]
    for key, op in _operations(doc).items():
        assert "security" not in op, key
        # Admin calls over a non-loopback interface are refused even without keys.
        assert ("401" in op["responses"]) == (key in ADMIN_ONLY), key
        assert "403" not in op["responses"], key


@pytest.mark.parametrize("open_predict", [True, False])
def test_keys_declare_the_key_where_it_is_checked(tmp_path: Path, open_predict: bool) -> None:
    doc = _doc(tmp_path, api_keys={"k-admin": "admin", "k-predict": "predict"}, open_predict=open_predict)
    required = [{"APIKeyHeader": []}]
    for key, op in _operations(doc).items():
        codes = set(op["responses"])
        if key in ADMIN_ONLY:
            assert op["security"] == required and {"401", "403"} <= codes, key
        elif key in OPEN or open_predict:
            assert "security" not in op and not {"401", "403"} & codes, key
        else:  # a predict-role call: any known key passes, so a wrong role (403) cannot happen
            assert op["security"] == required and "401" in codes and "403" not in codes, key


def test_keys_are_enforced_as_declared(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, api_keys={"k-admin": "admin", "k-predict": "predict"}, open_predict=False))
    with TestClient(app) as client:
        assert client.get("/jobs").status_code == 401
        assert client.get("/jobs", headers={"X-API-Key": "k-predict"}).status_code == 200
        assert client.delete("/jobs/abc", headers={"X-API-Key": "k-predict"}).status_code == 403
        assert client.delete("/jobs/abc", headers={"X-API-Key": "k-admin"}).status_code == 404
        assert client.get("/healthz").status_code == 200


def test_text_limits_come_from_settings_and_match_the_server(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, max_texts_per_request=3, max_chars_per_text=10))
    props = app.openapi()["components"]["schemas"]["PredictRequest"]["properties"]
    texts = props["texts"]["anyOf"][0]
    assert texts["maxItems"] == 3 and texts["minItems"] == 1
    assert texts["items"]["maxLength"] == 10 and texts["items"]["pattern"] == r"\S"
    assert props["text"]["anyOf"][0]["maxLength"] == 10
    pairs = props["pairs"]["anyOf"][0]
    assert pairs["maxItems"] == 3 and all(part["maxLength"] == 10 for part in pairs["items"]["prefixItems"])
    with TestClient(app) as client:
        # At the limits the request passes validation (and finds no variant: 404); one past them is a 422.
        assert client.post("/predict", json={"texts": ["a" * 10] * 3}).status_code == 404
        assert client.post("/predict", json={"texts": ["a"] * 4}).status_code == 422
        assert client.post("/predict", json={"text": "a" * 11}).status_code == 422
        assert client.post("/predict", json={"pairs": [["a", "b" * 11]]}).status_code == 422
        assert client.post("/predict", json={"text": " \t"}).status_code == 422
        # Exactly one of texts, text, pairs; null counts as absent, as the schema's oneOf says.
        assert client.post("/predict", json={"text": "a", "texts": None}).status_code == 404
        assert client.post("/predict", json={"text": "a", "texts": ["b"]}).status_code == 422


def test_benchmark_bounds_in_the_schema_are_benchmark_specs() -> None:
    low, high = BENCHMARK_BATCH_SIZE
    for size, ok in ((low, True), (high, True), (low - 1, False), (high + 1, False)):
        _assert_valid({"family": "f", "batch_sizes": [size]}, ok)
    low, high = BENCHMARK_SEQ_LEN
    for seq_len, ok in ((low, True), (high, True), (low - 1, False), (high + 1, False)):
        _assert_valid({"family": "f", "seq_len": seq_len}, ok)


def _assert_valid(data: dict[str, Any], ok: bool) -> None:
    try:
        BenchmarkSpec.model_validate(data)
    except (ValidationError, ValueError):
        assert not ok, data
    else:
        assert ok, data


def test_benchmark_schema_shows_the_bounds(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    spec = doc["paths"]["/jobs/benchmark"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    spec = spec["properties"]
    assert spec["batch_sizes"]["items"]["minimum"] == BENCHMARK_BATCH_SIZE[0]
    assert spec["batch_sizes"]["items"]["maximum"] == BENCHMARK_BATCH_SIZE[1]
    assert {"type": "integer", "minimum": 8, "maximum": 512} in spec["seq_len"]["anyOf"]


def test_showdown_is_typed(tmp_path: Path) -> None:
    showdown = _doc(tmp_path)["components"]["schemas"]["Showdown"]
    assert {"family", "rows", "recommendations"} <= set(showdown["properties"])


def test_recipe_override_is_documented_as_recipe(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    recipe = doc["components"]["schemas"]["CompressRequest"]["properties"]["recipe"]
    assert recipe["$ref"] == "#/components/schemas/Recipe"
    assert doc["components"]["schemas"]["Recipe"]["additionalProperties"] is False
    follow_up = doc["components"]["schemas"]["CompressRequest"]["properties"]["benchmark"]["anyOf"][0]
    assert "family" not in follow_up["properties"] and "variants" not in follow_up["properties"]


def test_names_refuse_double_dots(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path))) as client:
        resp = client.get("/variants/a..b/c")
        assert resp.status_code == 422 and "'..'" in resp.json()["hint"]
        assert client.get("/variants", params={"family": "a..b"}).status_code == 422


def test_405_lists_every_method_of_the_path(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path))) as client:
        assert client.options("/datasets").headers["allow"] == "GET, POST"
        assert client.put("/jobs/abc").headers["allow"] == "DELETE, GET"
        # A concrete path wins over /jobs/{job_id}, as in the document.
        resp = client.get("/jobs/compress")
        assert resp.status_code == 405 and resp.headers["allow"] == "POST"
