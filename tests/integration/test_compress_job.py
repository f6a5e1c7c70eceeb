"""A compression job through the HTTP API, a real Celery worker process and real Redis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from slimbert.config import Settings
from slimbert.data import sst2_splits
from slimbert.inference.bucketing import accuracy_of
from slimbert.inference.loader import load_variant
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


def check_store(settings: Settings, family: str, job: dict[str, Any]) -> None:
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
    # The lineage: each variant names the variant it was made from, and how.
    assert (base.parent, pruned.parent, int8.parent) == (None, "baseline-fp32", "pruned-fp32")
    assert [m.technique.name for m in (base, pruned, int8)] == ["finetune", "layer-pruning", "int8-dynamic"]
    assert int8.technique.params["source"] == "pruned-fp32"
    assert [(m.runtime, m.precision) for m in (base, pruned)] == [("torch", "fp32")] * 2 and int8.precision == "int8"
    assert (int8.num_layers, int8.num_parameters) == (pruned.num_layers, pruned.num_parameters)
    # Every reported accuracy is on the test split (GLUE dev), which nothing chose on; the validation split
    # that chose is carved from GLUE train, apart from the sentences trained on.
    recipe = base.recipe
    splits = sst2_splits(settings.sst2_dir, offline=settings.offline, seed=recipe["data_seed"],
                         validation_examples=recipe["validation_examples"], test_examples=recipe["test_examples"],
                         train_examples=recipe["train_examples"])
    dev, validation = splits.test, splits.validation
    assert base.splits["selects"] == "validation" and base.splits["reports"] == "test"
    assert base.splits["validation"]["examples"] == len(validation) and base.splits["test"]["examples"] == len(dev)
    for m in manifests.values():
        vdir = store.variant_dir(family, m.variant)
        assert m.job_id == job["id"] and m.recipe == recipe and m.test_examples == len(dev)
        assert m.library_versions["torch"] and m.recipe["base_model"]
        for rel, digest in m.files.items():
            assert sha256_file(vdir / rel) == digest
        assert m.size_bytes == sum((vdir / rel).stat().st_size for rel in m.files)
        # The stored accuracy is what the stored files score on that split, loaded as they are served, on
        # their own runtime (ONNX Runtime for the int8 variant), never a figure carried over from the parent.
        predictor = load_variant(m, vdir, "cpu")
        assert predictor.runtime == m.runtime
        assert m.test_accuracy == accuracy_of(predictor, dev.texts, dev.labels), m.variant
        assert m.validation_accuracy == accuracy_of(predictor, validation.texts, validation.labels), m.variant
        # The job record reports the same figures.
        reported = job["results"]["variants"][m.variant]
        assert (reported["test_accuracy"], reported["validation_accuracy"], reported["parent"],
                reported["runtime"]) == (m.test_accuracy, m.validation_accuracy, m.parent, m.runtime)
    int8_stage = next(s for s in job["stages"] if s["name"] == "int8-dynamic:pruned-int8")
    assert int8_stage["state"] == "done"
    assert (int8_stage["detail"]["runtime"], int8_stage["detail"]["test_accuracy"],
            int8_stage["detail"]["parent_test_accuracy"]) == ("onnxruntime", int8.test_accuracy, pruned.test_accuracy)
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
        check_store(stack_settings, "tiny-it", job)
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
        "family": "minilm-it", "train_examples": 320, "validation_examples": 160, "test_examples": 160,
        "finetune": {"epochs": 1, "batch_size": 32, "max_length": 48},
        "layer_pruning": {"drop": 2, "strategy": "sensitivity",
                          "refinetune": {"epochs": 1, "batch_size": 32, "max_length": 48}},
    }
    with TestClient(create_app(stack_settings)) as client:
        job = run_job(client, cpu_worker, {"preset": "quick", "recipe": recipe, "benchmark": None}, timeout=400)
        sensitivity = job["results"]["sensitivity"]
        assert len(sensitivity) == 6
        check_store(stack_settings, "minilm-it", job)
        predict_all(client, "minilm-it")
