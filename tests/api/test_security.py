"""Who may call what, what is refused at the door, and what a client sees when something breaks."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.api.deps import get_store
from app.main import create_app
from slimbert.config import Settings
from slimbert.store.store import VariantStore
from tests.api.test_api import FAMILY, _publish_variant, _settings

ADMIN, PREDICT = "adm-9f2c1e7d4b", "prd-3a8e6c0f51"
KEYS = {ADMIN: "admin", PREDICT: "predict"}
ERROR_KEYS = {"error", "detail", "hint"}

# (method, path, body): every call that changes something. None of them is ever open once keys are set.
ADMIN_CALLS = [
    ("POST", "/jobs/compress", {"preset": "tiny"}),
    ("POST", "/jobs/benchmark", {"family": FAMILY}),
    ("POST", "/jobs/autotune", {"family": FAMILY}),
    ("DELETE", "/jobs/0123abcd", None),
    ("POST", "/datasets", {"name": "tickets", "text_column": "text", "label_column": "label", "path": "/no/such"}),
    ("DELETE", "/datasets/tickets", None),
]
READ_CALLS = [
    ("POST", "/predict", {"text": "fine"}),
    ("GET", "/variants", None),
    ("GET", f"/variants/{FAMILY}/baseline-fp32", None),
    ("GET", "/reports/showdown", None),
    ("GET", "/jobs", None),
    ("GET", "/datasets", None),
]


def _client(tmp_path: Path, tiny_model_dir: Path, **kw: object) -> TestClient:
    settings = _settings(tmp_path, **kw)
    _publish_variant(settings, tiny_model_dir)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _call(c: TestClient, method: str, path: str, body: object, key: str | None = None) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return c.request(method, path, json=body, headers=headers)


@pytest.fixture
def locked(tmp_path: Path, tiny_model_dir: Path) -> Iterator[TestClient]:
    with _client(tmp_path, tiny_model_dir, api_keys=KEYS, open_predict=False) as c:
        yield c


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS + READ_CALLS)
def test_no_key_or_an_unknown_key_is_401(locked: TestClient, method: str, path: str, body: object) -> None:
    for key in (None, "not-a-key", ADMIN[:-1]):
        resp = _call(locked, method, path, body, key)
        assert resp.status_code == 401, (key, resp.text)
        assert set(resp.json()) == ERROR_KEYS and "X-API-Key" in resp.json()["hint"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_a_predict_key_cannot_touch_jobs(locked: TestClient, method: str, path: str, body: object) -> None:
    resp = _call(locked, method, path, body, PREDICT)
    assert resp.status_code == 403, resp.text
    assert set(resp.json()) == ERROR_KEYS and "'admin'" in resp.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_an_admin_key_gets_past_the_door(locked: TestClient, method: str, path: str, body: object) -> None:
    # Past authentication the call fails on its merits (Redis is down, no such job, ...), never 401/403.
    resp = _call(locked, method, path, body, ADMIN)
    assert resp.status_code not in (401, 403), resp.text


@pytest.mark.parametrize(("method", "path", "body"), READ_CALLS)
def test_predict_and_admin_keys_read(locked: TestClient, method: str, path: str, body: object) -> None:
    for key in (PREDICT, ADMIN):
        assert _call(locked, method, path, body, key).status_code == 200


def test_open_predict_opens_reads_but_never_jobs(tmp_path: Path, tiny_model_dir: Path) -> None:
    with _client(tmp_path, tiny_model_dir, api_keys=KEYS, open_predict=True) as c:
        for method, path, body in READ_CALLS:
            assert _call(c, method, path, body).status_code == 200, path
        for method, path, body in ADMIN_CALLS:
            assert _call(c, method, path, body).status_code == 401, path
            assert _call(c, method, path, body, PREDICT).status_code == 403, path


def test_without_keys_everything_is_open(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The local, single-user default: no keys configured, no authentication."""
    with _client(tmp_path, tiny_model_dir) as c:
        for method, path, body in ADMIN_CALLS + READ_CALLS:
            assert _call(c, method, path, body).status_code not in (401, 403), path


def test_keys_never_reach_the_logs(tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Neither our loggers nor uvicorn's access log print the X-API-Key header, even on errors and crashes."""
    settings = _settings(tmp_path, api_keys=KEYS, open_predict=False)
    _publish_variant(settings, tiny_model_dir)
    app = create_app(settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # log_config=None: uvicorn leaves logging alone, so its access and error loggers reach caplog.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=True,
                                           log_level="debug"))
    thread = threading.Thread(target=server.run, daemon=True)
    caplog.set_level(logging.DEBUG)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as http:
            for key in (ADMIN, PREDICT):
                for method, path, body in ADMIN_CALLS + READ_CALLS:
                    http.request(method, path, json=body, headers={"X-API-Key": key})
            app.dependency_overrides[get_store] = _explode
            assert http.get("/variants", headers={"X-API-Key": ADMIN}).status_code == 500
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    text = caplog.text
    assert '"POST /jobs/compress HTTP/1.1" 503' in text, "the access log was not captured"
    assert "unhandled error on GET /variants" in text
    assert ADMIN not in text and PREDICT not in text


def _explode() -> VariantStore:
    raise RuntimeError("disk controller on fire")


def test_a_crash_is_json_without_a_trace(tmp_path: Path, tiny_model_dir: Path) -> None:
    with _client(tmp_path, tiny_model_dir) as c:
        c.app.dependency_overrides[get_store] = _explode  # type: ignore[attr-defined]
        resp = c.get("/variants")
    assert resp.status_code == 500
    assert resp.json() == {"error": "internal error", "detail": "RuntimeError", "hint": "see the API log"}
    assert "Traceback" not in resp.text and "on fire" not in resp.text


@pytest.fixture
def client(tmp_path: Path, tiny_model_dir: Path) -> Iterator[TestClient]:
    with _client(tmp_path, tiny_model_dir, allowed_model_roots=[tiny_model_dir.parent]) as c:
        yield c


@pytest.mark.parametrize(
    ("params", "body", "field"),
    [({}, {"texts": ["ok"] * 65}, "65 items"),
     ({}, {"texts": ["ok", "y" * 2001]}, "texts[1]"),
     ({}, {"text": "   "}, "empty"),
     ({"variant": "../../etc"}, {"text": "x"}, "variant"),
     ({"family": "UPPER"}, {"text": "x"}, "family"),
     ({}, {"texts": [1, 2]}, "texts")],
)
def test_prediction_limits(client: TestClient, params: dict[str, str], body: object, field: str) -> None:
    resp = client.post("/predict", params=params, json=body)
    assert resp.status_code == 422, resp.text
    assert set(resp.json()) == ERROR_KEYS and field in f"{resp.json()['detail']} {resp.json()['hint']}"


@pytest.mark.parametrize(
    ("recipe", "field"),
    [({"finetune": {"batch_size": 0}}, "finetune.batch_size"),
     ({"finetune": {"batch_size": 513}}, "finetune.batch_size"),
     ({"finetune": {"epochs": 21}}, "finetune.epochs"),
     ({"finetune": {"learning_rate": 1.0}}, "finetune.learning_rate"),
     ({"finetune": {"max_length": 4096}}, "finetune.max_length"),
     ({"finetune": {"bogus": 1}}, "finetune.bogus"),
     ({"train_examples": 1}, "train_examples"),
     ({"layer_pruning": {"drop": 0}}, "layer_pruning.drop"),
     ({"head_ffn_pruning": {"head_sparsity": 0.95}}, "head_ffn_pruning.head_sparsity"),
     ({"precision": {"int8_static": {"calibration_samples": 10**6}}}, "calibration_samples"),
     ({"family": "../../etc"}, "family"),
     ({"family": "a" * 65}, "family"),
     ({"eval_max_length": 1}, "eval_max_length")],
)
def test_recipe_limits(client: TestClient, recipe: dict[str, object], field: str) -> None:
    resp = client.post("/jobs/compress", json={"preset": "tiny", "recipe": recipe})
    assert resp.status_code == 422, resp.text
    assert set(resp.json()) == ERROR_KEYS and field in resp.json()["hint"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"preset": "nope"}, "preset"), ({"device": "tpu"}, "device"), ({"recipe": "x"}, "recipe"),
     ({"benchmark": {"runs": 0}}, "benchmark.runs"), ({"benchmark": {"family": "x"}}, "family")],
)
def test_request_limits(client: TestClient, body: dict[str, object], field: str) -> None:
    resp = client.post("/jobs/compress", json=body)
    assert resp.status_code == 422, resp.text
    assert field in f"{resp.json()['detail']} {resp.json()['hint']}"


@pytest.mark.parametrize("base_model", ["/etc", "/tmp/../etc/ssl", "~/.ssh"])
def test_a_model_path_outside_the_allowed_roots_is_refused_up_front(client: TestClient, base_model: str) -> None:
    resp = client.post("/jobs/compress", json={"preset": "tiny", "recipe": {"base_model": base_model}})
    # 422 before Redis is even asked (it is down here: otherwise this would be a 503).
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "ModelUnavailable" and "outside the allowed roots" in body["detail"]
    assert "SLIMBERT_ALLOWED_MODEL_ROOTS" in body["hint"]


def test_a_model_path_without_a_checkpoint_is_refused(client: TestClient, tiny_model_dir: Path) -> None:
    resp = client.post("/jobs/compress", json={"preset": "tiny", "recipe": {"base_model": str(tiny_model_dir.parent)}})
    assert resp.status_code == 422 and "config.json" in resp.json()["detail"]


def test_an_unresolvable_hub_id_is_refused_with_how_to_use_local_files(client: TestClient) -> None:
    resp = client.post("/jobs/compress", json={"preset": "tiny", "recipe": {"base_model": "someone/unknown-bert"}})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert "cannot be resolved offline" in body["detail"]
    assert "local directory written by save_pretrained" in body["hint"] and "SLIMBERT_MODEL_ALIASES" in body["hint"]


def test_valid_models_pass_to_the_queue_check(client: TestClient, tiny_model_dir: Path) -> None:
    for base_model in (str(tiny_model_dir), "sentence-transformers/all-MiniLM-L6-v2"):
        resp = client.post("/jobs/compress", json={"preset": "tiny", "recipe": {"base_model": base_model}})
        assert resp.status_code == 503, resp.text  # valid; Redis is down in API tests
        assert resp.json()["error"] == "QueueUnavailable" and "nothing was queued" in resp.json()["hint"]


def test_a_corrupted_variant_is_a_clear_error_not_a_wrong_prediction(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings: Settings = _settings(tmp_path)
    _publish_variant(settings, tiny_model_dir)
    weights = VariantStore(settings.store_dir).variant_dir(FAMILY, "baseline-fp32") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(64)  # a flipped tail still loads as tensors: only the hash can tell
    weights.write_bytes(bytes(data))
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        for _ in range(2):  # the failed load is not cached as a working predictor
            resp = c.post("/predict", params={"variant": "baseline-fp32"}, json={"text": "great"})
            assert resp.status_code >= 500, resp.text
            body = resp.json()
            assert set(body) == ERROR_KEYS and "predictions" not in body
            assert "model.safetensors is missing or corrupted" in body["detail"]
            assert "rebuild" in body["hint"]


class _RecordingQueue:
    """Redis up, one cpu worker, messages kept: enough for submit_compress."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.sent = settings, []  # type: ignore[var-annotated]

    def require_redis(self) -> None:
        pass

    def choose_queue(self, device: str) -> tuple[str, None]:
        return "cpu", None

    def send(self, *args: str) -> None:
        self.sent.append(args)


def test_an_idempotency_key_submits_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    from app.api.deps import get_queue

    settings = _settings(tmp_path, allowed_model_roots=[tiny_model_dir.parent])
    queue = _RecordingQueue(settings)
    body = {"preset": "tiny", "recipe": {"base_model": str(tiny_model_dir)}}
    with TestClient(create_app(settings)) as c:
        c.app.dependency_overrides[get_queue] = lambda: queue  # type: ignore[attr-defined]
        ids = {c.post("/jobs/compress", json=body, headers={"Idempotency-Key": "retry-42"}).json()["job_id"]
               for _ in range(3)}
        other = c.post("/jobs/compress", json=body, headers={"Idempotency-Key": "retry-43"}).json()["job_id"]
        # The same key with another request is refused, never answered with the first job.
        changed = c.post("/jobs/compress", json={**body, "preset": "quick"}, headers={"Idempotency-Key": "retry-42"})
        assert changed.status_code == 409 and "different request" in changed.json()["detail"], changed.text
        # And a body that is invalid is a 422 whatever the key.
        bad = c.post("/jobs/compress", json={"preset": "tiny", "recipe": {"data_seed": {}}},
                     headers={"Idempotency-Key": "retry-42"})
        assert bad.status_code == 422, bad.text
    assert len(ids) == 1 and other not in ids
    assert [s[1] for s in queue.sent] == [*ids, other]


def test_workers_ack_late_and_carry_time_limits() -> None:
    import workers.celery_app as celery_app

    conf = celery_app.app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    settings = celery_app.settings
    assert conf.task_soft_time_limit == settings.task_soft_time_limit_s
    assert conf.task_time_limit == settings.task_time_limit_s > conf.task_soft_time_limit
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False


def test_the_api_refuses_to_listen_beyond_loopback_without_keys(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        with pytest.raises(ValueError, match="SLIMBERT_API_KEYS"):
            create_app(_settings(tmp_path, api_host=host))
    create_app(_settings(tmp_path, api_host="0.0.0.0", api_keys=KEYS))  # with keys it starts
    for host in ("127.0.0.1", "localhost", "::1"):
        create_app(_settings(tmp_path, api_host=host))  # the embedded default stays keyless


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_a_keyless_api_refuses_jobs_from_beyond_loopback(tmp_path: Path, tiny_model_dir: Path, method: str,
                                                         path: str, body: object) -> None:
    """Started with --host 0.0.0.0 but SLIMBERT_API_HOST left at its default: a request that arrives on a
    non-loopback interface (the socket's own address, in the ASGI scope) still cannot change anything."""
    settings = _settings(tmp_path)
    _publish_variant(settings, tiny_model_dir)
    # In-process: the test client puts the base URL's host in scope["server"]; nothing goes on a network.
    with TestClient(create_app(settings), base_url="http://192.0.2.10:8000", raise_server_exceptions=False) as c:
        resp = _call(c, method, path, body)
        assert resp.status_code == 401 and "non-loopback" in resp.json()["detail"], resp.text
        assert _call(c, "GET", "/variants", None).status_code == 200  # reads stay open
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as c:
        assert _call(c, method, path, body).status_code not in (401, 403)
