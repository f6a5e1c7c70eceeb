"""Schemathesis against the OpenAPI schema, in process, with every check it has: whatever a client sends,
no 5xx and no stack trace, and every answer is one the schema documents (status, content type, body,
headers), schema-valid requests are accepted, schema-invalid ones refused, and 405s list the right methods.

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
from slimbert.jobs import JobStore
from slimbert.tasks import TASK_COMPRESS
from tests.api.test_api import _publish_variant, _settings

pytestmark = pytest.mark.timeout(240)

EXAMPLES_PER_OPERATION = 12

# The one relaxation, per operation: a schema-valid request may also be refused with these codes, because
# what it breaks is a rule JSON Schema cannot state; each such answer is still documented and an ErrorBody.
SEMANTIC_REFUSALS: dict[str, tuple[list[int], str]] = {
    "POST /jobs/compress": ([422], "recipe rules across fields (precision.targets must name a variant the recipe "
                            "makes, ...), a base_model that must resolve on this machine, a dataset that must be "
                            "stored"),
    "POST /jobs/autotune": ([422], "min_drop <= max_drop, a rule across two fields"),
    "POST /datasets": ([422], "the uploaded file's content, a path that must exist under the allowed roots, a hub "
                       "id that must be in the local cache"),
}
DEFAULT_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' own default
CONFIG = schemathesis.Config.from_dict({"operations": [
    {"include-name": label,
     "checks": {"positive_data_acceptance": {"expected-statuses": DEFAULT_ACCEPTED + [str(c) for c in codes]}}}
    for label, (codes, _) in SEMANTIC_REFUSALS.items()]})


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
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG).exclude(path="/stream/latency")
seen: dict[int, int] = {}
# Status codes per operation ("POST /predict"), filled by the fuzz test below.
tried: dict[str, dict[int, int]] = {}
# Every operation the app declares, read from its own OpenAPI document rather than from the fuzzed schema,
# so an operation silently dropped from the fuzz shows up as missing.
OPERATIONS = {f"{method.upper()} {path}" for path, item in APP.openapi()["paths"].items()
              for method in item if path != "/stream/latency"}


@pytest.fixture(scope="module", autouse=True)
def _variant(tiny_model_dir: Path) -> Iterator[None]:
    _publish_variant(CFG, tiny_model_dir)
    yield
    shutil.rmtree(STORE, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=list(HealthCheck), database=None)
def test_every_check(case: schemathesis.Case) -> None:
    response = case.call()
    seen[response.status_code] = seen.get(response.status_code, 0) + 1
    codes = tried.setdefault(case.operation.label, {})
    codes[response.status_code] = codes.get(response.status_code, 0) + 1
    assert "Traceback" not in response.text
    # Every built-in check (not_a_server_error, status_code_conformance, response_schema_conformance, which
    # holds each error to ErrorBody, positive_data_acceptance, negative_data_rejection, ...), none excluded.
    case.validate_response(response)


def test_report_what_was_tried() -> None:
    print(f"fuzz: {sum(seen.values())} calls, status codes {dict(sorted(seen.items()))}")
    for label in sorted(tried):
        print(f"  {label}: {dict(sorted(tried[label].items()))}")
    assert seen, "the fuzz made no calls (this test reports on test_every_check: run the whole module)"
    assert set(tried) == OPERATIONS, f"not fuzzed: {sorted(OPERATIONS - set(tried))}"
    assert sum(seen.values()) == sum(sum(codes.values()) for codes in tried.values())
    assert all(code < 500 for code in seen), seen
    # Both sides were reached: valid requests served by the real handlers, invalid ones refused with a 4xx.
    assert any(200 <= code < 300 for code in seen) and any(400 <= code < 500 for code in seen), seen
    # A valid compression job went all the way to the queue, and each message sent names a recorded job.
    assert any(200 <= code < 300 for code in tried["POST /jobs/compress"]), tried["POST /jobs/compress"]
    assert any(task == TASK_COMPRESS for task, *_ in AcceptingQueue.sent), AcceptingQueue.sent
    jobs = JobStore(CFG.job_dir)
    for _, job_id, *_ in AcceptingQueue.sent:
        assert jobs.get(job_id).id == job_id
