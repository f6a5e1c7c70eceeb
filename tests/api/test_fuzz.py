"""Schemathesis against the OpenAPI schema, in process: whatever a client sends, no 5xx and no stack trace.

The queue is a stand-in that accepts every message (so a valid job is a 202, not a 503 from the absent
Redis); everything else is the real app over a store holding a real tiny variant.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.api.deps import get_queue
from app.main import create_app
from app.services.queue import QueueClient
from tests.api.test_api import _publish_variant, _settings

pytestmark = pytest.mark.timeout(240)

EXAMPLES_PER_OPERATION = 25


class AcceptingQueue(QueueClient):
    """Redis is up, one cpu worker listens, every message is accepted and kept here."""

    sent: list[tuple[str, ...]] = []

    def redis_ok(self) -> bool:
        return True

    def workers(self, *, fresh: bool = False) -> list[dict[str, Any]]:
        return [{"name": "cpu@fuzz", "queues": ["cpu"], "cpu": {}}]

    def live_worker_starts(self) -> dict[str, datetime | None] | None:
        return {"cpu@fuzz": None}

    def send(self, task_name: str, job_id: str, queue: str) -> None:
        self.sent.append((task_name, job_id, queue))

    def send_benchmark(self, job_id: str, devices: list[str]) -> None:
        self.sent.append(("benchmark", job_id, *devices))

    def revoke(self, job_id: str) -> None:
        pass


# The schema is read when this module is imported, so the app is made then; its store is filled with a
# real tiny variant by the fixture below before any call, and removed afterwards.
STORE = Path(tempfile.mkdtemp(prefix="slimbert-fuzz-"))
CFG = _settings(STORE)
APP = create_app(CFG)
APP.dependency_overrides[get_queue] = lambda: AcceptingQueue(CFG)
# The live-latency stream never ends by design; every other operation is fuzzed.
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path="/stream/latency")
seen: dict[int, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _variant(tiny_model_dir: Path) -> Iterator[None]:
    _publish_variant(CFG, tiny_model_dir)
    yield
    shutil.rmtree(STORE, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=list(HealthCheck), database=None)
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call()
    seen[response.status_code] = seen.get(response.status_code, 0) + 1
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        body = response.json()
        assert {"error", "detail", "hint"} <= set(body), body


def test_report_what_was_tried() -> None:
    print(f"fuzz: {sum(seen.values())} calls, status codes {dict(sorted(seen.items()))}")
    assert sum(seen.values()) > 0 or not seen
