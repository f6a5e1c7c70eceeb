"""The plain-ASGI POST /predict (app/api/fast_predict.py): valid requests skip FastAPI and are answered
exactly as the route answers them; every other request reaches the route with its body intact."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import app.api.fast_predict as fast_module
import app.api.routes.predict as route_module
from app.main import create_app
from tests.api.test_predict_serving import FAMILY, _publish, _settings

TIMING = ("latency_ms", "total_ms", "model_ms", "tokenize_ms", "queue_ms")


class Calls:
    """Counts the predictions each path ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fast = self.route = 0
        for module, name in ((fast_module, "fast"), (route_module, "route")):
            real = module.run_predict

            async def counted(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                setattr(self, _name, getattr(self, _name) + 1)
                return await _real(*args, **kw)

            monkeypatch.setattr(module, "run_predict", counted)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    return Calls(monkeypatch)


@pytest.fixture
def client(tmp_path: Path, tiny_model_dir: Path) -> Iterator[TestClient]:
    settings = _settings(tmp_path)
    _publish(settings, tiny_model_dir)
    with TestClient(create_app(settings)) as c:
        yield c


def _without_timing(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in TIMING and not k.startswith("batch_")}


@pytest.mark.parametrize("payload", [{"text": "a witty film"}, {"texts": ["dull", "a gorgeous , witty movie ."]}])
def test_a_valid_request_skips_the_route_and_gets_the_routes_answer(client: TestClient, calls: Calls,
                                                                    payload: dict[str, Any]) -> None:
    raw = json.dumps(payload)
    fast = client.post(f"/predict?family={FAMILY}&variant=baseline-fp32", content=raw,
                       headers={"Content-Type": "application/json; charset=utf-8"})
    assert (calls.fast, calls.route) == (1, 0)
    # A +json media type is JSON to FastAPI but not taken by the fast path: the route answers it.
    slow = client.post(f"/predict?family={FAMILY}&variant=baseline-fp32", content=raw,
                       headers={"Content-Type": "application/x.test+json"})
    assert (calls.fast, calls.route) == (1, 1)
    assert fast.status_code == slow.status_code == 200
    assert _without_timing(fast.json()) == _without_timing(slow.json())
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert int(fast.headers["content-length"]) == len(fast.content)
    for part in ("queue;dur=", "tokenize;dur=", "model;dur=", "total;dur="):
        assert part in fast.headers["server-timing"]
    assert fast.json()["total_ms"] > 0


def test_domain_errors_from_the_fast_path_have_the_one_error_body(client: TestClient, calls: Calls) -> None:
    resp = client.post(f"/predict?family={FAMILY}&variant=pruned-int8", json={"text": "fine"})
    assert calls.fast == 1 and calls.route == 0
    assert resp.status_code == 404
    body = resp.json()
    assert set(body) == {"error", "detail", "hint"} and body["error"] == "VariantNotFound"
    assert "baseline-fp32" in body["hint"]  # it lists what exists
    blank = client.post("/predict", json={"texts": ["fine", "  "]})
    assert blank.status_code == 422 and "texts[1]" in blank.json()["detail"]


@pytest.mark.parametrize(("url", "content", "ctype", "field"), [
    ("/predict", "{not json", "application/json", ""),
    ("/predict", '{"text": 3}', "application/json", "text"),
    ("/predict", '{"text": "a", "texts": ["b"]}', "application/json", ""),
    ("/predict?variant=Bad..Name", '{"text": "a"}', "application/json", "query.variant"),
    ("/predict?variant=", '{"text": "a"}', "application/json", "query.variant"),
])
def test_invalid_requests_reach_the_route_with_their_body(client: TestClient, calls: Calls, url: str,
                                                          content: str, ctype: str, field: str) -> None:
    resp = client.post(url, content=content, headers={"Content-Type": ctype})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid request"
    assert field in [f["field"] for f in body["detail"]] or field == ""
    assert calls.fast == 0


def test_a_repeated_query_parameter_is_left_to_the_framework(client: TestClient, calls: Calls) -> None:
    resp = client.post(f"/predict?variant=nope&variant=baseline-fp32&family={FAMILY}", json={"text": "a"})
    assert resp.status_code == 200 and resp.json()["variant"] == "baseline-fp32"  # Starlette: the last wins
    assert (calls.fast, calls.route) == (0, 1)


def test_the_key_rule_holds_on_the_fast_path(tmp_path: Path, tiny_model_dir: Path, calls: Calls) -> None:
    settings = _settings(tmp_path, api_keys={"pk": "predict", "ak": "admin"}, open_predict=False)
    _publish(settings, tiny_model_dir)
    with TestClient(create_app(settings)) as c:
        assert c.post("/predict", json={"text": "a"}).status_code == 401
        assert c.post("/predict", json={"text": "a"}, headers={"X-API-Key": "wrong"}).status_code == 401
        assert calls.fast == 0
        for key in ("pk", "ak"):
            assert c.post("/predict", json={"text": "a"}, headers={"X-API-Key": key}).status_code == 200
        assert calls.fast == 2


def test_a_body_in_several_chunks_is_read_whole(tmp_path: Path, tiny_model_dir: Path, calls: Calls) -> None:
    settings = _settings(tmp_path)
    _publish(settings, tiny_model_dir)
    app = create_app(settings)
    raw = json.dumps({"texts": ["a gorgeous , witty movie .", "dull"]}).encode()
    chunks = [raw[:5], raw[5:17], raw[17:]]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def go() -> None:
        async with app.router.lifespan_context(app):
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": "/predict", "raw_path": b"/predict", "root_path": "",
                     "query_string": b"", "headers": [(b"content-type", b"application/json")],
                     "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
            await app(scope, receive, send)

    asyncio.run(go())
    assert sent[0]["status"] == 200 and calls.fast == 1
    assert len(json.loads(sent[1]["body"])["predictions"]) == 2


def test_the_fast_path_can_be_turned_off(tmp_path: Path, tiny_model_dir: Path, calls: Calls) -> None:
    settings = _settings(tmp_path, serve_fast_path=False)
    _publish(settings, tiny_model_dir)
    with TestClient(create_app(settings)) as c:
        assert c.post("/predict", json={"text": "a witty film"}).status_code == 200
    assert (calls.fast, calls.route) == (0, 1)
