"""A compression job through the HTTP API, a real Celery worker process and real Redis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from slimbert.config import Settings
from slimbert.store.store import VariantStore, sha256_file
from tests.integration.conftest import Worker, wait_for

pytestmark = pytest.mark.integration

EXPECTED = {"baseline-fp32", "pruned-fp32", "pruned-int8"}


def run_job(client: TestClient, worker: Worker, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    resp = client.post("/jobs/compress", json=body)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert accepted["status_url"].endswith(f"/jobs/{accepted['job_id']}")
    # No GPU worker is listening: the job falls back to cpu and says so.
    assert accepted["queue"] == "cpu" and "gpu" in accepted["fallback"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{accepted['job_id']}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"job still {job['state']} after {timeout}s\n{worker.output()}")
    assert job["state"] == "succeeded", f"{job}\n{worker.output()}"
    assert job["progress"] == 100.0 and job["worker"] and job["queue"] == "cpu"
    assert job["started_at"] and job["finished_at"]
    return job


def check_store(settings: Settings, family: str) -> None:
    store = VariantStore(settings.store_dir)
    manifests = {m.variant: m for m in store.manifests(family)}
    assert set(manifests) == EXPECTED
    base, pruned, int8 = (manifests[v] for v in ("baseline-fp32", "pruned-fp32", "pruned-int8"))
    assert pruned.num_layers == base.num_layers - (pruned.technique.params["layers_before"]
                                                   - pruned.technique.params["layers_after"])
    assert pruned.num_parameters < base.num_parameters
    assert int8.runtime == "onnxruntime" and (store.variant_dir(family, "pruned-int8") / "model.onnx").is_file()
    assert int8.size_bytes < pruned.size_bytes
    assert (store.variant_dir(family, "baseline-fp32") / "model.safetensors").is_file()
    for m in manifests.values():
        assert m.parent in (None, "baseline-fp32", "pruned-fp32")
        assert m.dev_accuracy is not None and 0.0 <= m.dev_accuracy <= 1.0
        assert m.library_versions["torch"] and m.recipe["base_model"]
        for rel, digest in m.files.items():
            assert sha256_file(store.variant_dir(family, m.variant) / rel) == digest
    staging = settings.store_dir / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


def predict_all(client: TestClient, family: str) -> None:
    texts = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés ."]
    for variant in sorted(EXPECTED):
        resp = client.post("/predict", params={"family": family, "variant": variant}, json={"texts": texts})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["predictions"]) == 2 and body["latency_ms"] > 0
        for p in body["predictions"]:
            assert p["label"] in ("negative", "positive")
            assert abs(sum(p["scores"].values()) - 1) < 1e-5


def test_tiny_model_job_end_to_end(stack_settings: Settings, cpu_worker: Worker, tiny_encoder_dir: Path) -> None:
    recipe = {"base_model": str(tiny_encoder_dir), "family": "tiny-it"}
    with TestClient(create_app(stack_settings)) as client:
        workers = client.get("/workers").json()
        assert any("cpu" in w["queues"] and "cpu" in w for w in workers), workers
        bench = {"batch_sizes": [1, 4], "runs": 3, "warmup": 1, "peak_memory": False}
        job = run_job(client, cpu_worker, {"preset": "tiny", "recipe": recipe, "benchmark": bench}, timeout=150)
        assert set(job["variants"]) == EXPECTED
        assert [s["name"] for s in job["stages"] if s["state"] == "done"][:2] == ["load", "finetune"]
        check_store(stack_settings, "tiny-it")
        predict_all(client, "tiny-it")
        assert job["id"] in [j["id"] for j in client.get("/jobs").json()]
        # The job ends with a benchmark of its variants: a chord on the real worker.
        bench_id = job["results"]["benchmark_job_id"]
        assert client.get(f"/jobs/{bench_id}").json()["request"]["parent_job"] == job["id"]
        wait_for(lambda: client.get(f"/jobs/{bench_id}").json()["state"] in ("succeeded", "failed"), 120,
                 "the follow-up benchmark", cpu_worker.output)
        assert client.get(f"/jobs/{bench_id}").json()["state"] == "succeeded", cpu_worker.output()
        report = client.get("/reports/showdown", params={"family": "tiny-it"}).json()
        assert {r["variant"] for r in report["rows"]} == EXPECTED
        for row in report["rows"]:
            assert row["cpu"]["latency_ms"] > 0 and 0 <= row["cpu"]["accuracy"] <= 1
            assert row["gpu"]["na"] == "no live GPU worker"


def test_minilm_job_end_to_end(stack_settings: Settings, cpu_worker: Worker) -> None:
    recipe = {
        "family": "minilm-it", "train_examples": 320, "dev_examples": 160,
        "finetune": {"epochs": 1, "batch_size": 32, "max_length": 48},
        "layer_pruning": {"drop": 2, "strategy": "sensitivity",
                          "refinetune": {"epochs": 1, "batch_size": 32, "max_length": 48}},
    }
    with TestClient(create_app(stack_settings)) as client:
        job = run_job(client, cpu_worker, {"preset": "quick", "recipe": recipe, "benchmark": None}, timeout=400)
        sensitivity = job["results"]["sensitivity"]
        assert len(sensitivity) == 6
        check_store(stack_settings, "minilm-it")
        predict_all(client, "minilm-it")
