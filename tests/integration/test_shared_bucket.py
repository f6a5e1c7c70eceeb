"""Many hosts, one store: three "hosts" on separate local disks share one bucket (moto's real S3 server)
and one Redis. Host A runs the gpu-queue worker (training), host B the cpu-queue worker (INT8 export and
the benchmark), host C the API with an empty cache. A dataset uploaded to C trains on A; the variants A
publishes are fetched, checked and exported on B; B benchmarks them; C serves what neither of its disks
ever held. No job record, dataset or variant travels except through the bucket."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.queue import QueueClient
from slimbert.config import Settings
from slimbert.jobs import open_job_store
from slimbert.store.bucket import open_variant_store
from tests.integration.conftest import Worker, wait_for
from tests.s3_server import new_bucket, raw_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAMILY = "shared-it"
WORDS = {"negative": ["dull", "boring", "awful", "flat"], "positive": ["witty", "gorgeous", "moving", "fresh"]}


def _csv(path: Path, n_per_class: int, offset: int) -> Path:
    lines = ["text,label"]
    for i in range(n_per_class):
        for label, words in WORDS.items():
            first, second = words[(i + offset) % 4], words[(i + offset + 1) % 4]
            lines.append(f"a {first} and {second} film number {i + offset},{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _host(stack_settings: Settings, tmp_path: Path, endpoint: str, bucket: str, name: str) -> Settings:
    return stack_settings.model_copy(update={
        "store_url": f"s3://{bucket}/slimbert", "s3_endpoint_url": endpoint, "store_refresh_s": 0.0,
        "store_dir": tmp_path / name / "store", "jobs_dir": tmp_path / name / "store" / ".jobs",
        "datasets_dir": tmp_path / name / "store" / ".datasets"})


def _wait(client: TestClient, job_id: str, timeout: float, *workers: Worker) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            assert job["state"] == "succeeded", f"{job}\n" + "\n".join(w.output() for w in workers)
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} still running after {timeout}s\n" + "\n".join(w.output() for w in workers))


def _cached(settings: Settings) -> set[str]:
    base = settings.store_dir / FAMILY
    return {p.name for p in base.iterdir() if (p / "manifest.json").is_file()} if base.is_dir() else set()


def test_two_workers_on_separate_disks_share_one_bucket_and_an_empty_api_serves_it(
        stack_settings: Settings, tiny_encoder_dir: Path, tmp_path: Path, moto_endpoint: str,
        s3_env: dict[str, str]) -> None:
    bucket = new_bucket(moto_endpoint)
    host_a, host_b, host_c = (_host(stack_settings, tmp_path, moto_endpoint, bucket, n) for n in "abc")
    train, test = _csv(tmp_path / "train.csv", 40, 0), _csv(tmp_path / "test.csv", 20, 100)
    trainer = Worker(host_a, "gpu", tmp_path / "worker-a-gpu.log")
    exporter = Worker(host_b, "cpu", tmp_path / "worker-b-cpu.log")
    try:
        queues = QueueClient(host_c)
        wait_for(lambda: {"cpu", "gpu"} <= queues.live_queues() or trainer.proc.poll() is not None
                 or exporter.proc.poll() is not None, 120, "both workers", lambda: trainer.output() + exporter.output())
        assert trainer.proc.poll() is None and exporter.proc.poll() is None, trainer.output() + exporter.output()
        with TestClient(create_app(host_c)) as client:
            with train.open("rb") as tr, test.open("rb") as te:
                resp = client.post("/datasets",
                                   data={"name": "reviews", "text_column": "text", "label_column": "label"},
                                   files={"train": ("train.csv", tr, "text/csv"), "test": ("test.csv", te, "text/csv")})
            assert resp.status_code == 201, resp.text
            recipe = {"base_model": str(tiny_encoder_dir), "family": FAMILY, "dataset": "reviews",
                      "precision": {"targets": ["final"], "int8_dynamic": {}}}
            resp = client.post("/jobs/compress", json={"preset": "tiny", "recipe": recipe, "device": "gpu",
                                                       "benchmark": None})
            assert resp.status_code == 202 and resp.json()["queue"] == "gpu", resp.text
            job = _wait(client, resp.json()["job_id"], 240, trainer, exporter)
            where = {s["name"]: s["queue"] for s in job["stages"]}
            assert where["finetune"] == "gpu" and where["int8-dynamic:pruned-int8"] == "cpu", where
            assert {"baseline-fp32", "pruned-fp32", "pruned-int8"} <= set(job["variants"])

            # A published the fp32 variants; B fetched the one it exported, and published the INT8 one.
            assert _cached(host_a) == {"baseline-fp32", "pruned-fp32"}
            assert _cached(host_b) == {"pruned-fp32", "pruned-int8"}
            assert (host_a.dataset_dir / "reviews" / "train.jsonl").is_file()  # A trained from its cache
            assert _cached(host_c) == set()

            # B benchmarks all three: baseline-fp32 comes to its disk from the bucket, verified.
            resp = client.post("/jobs/benchmark", json={"family": FAMILY, "devices": ["cpu"], "batch_sizes": [1],
                                                        "runs": 2, "warmup": 1, "peak_memory": True})
            assert resp.status_code == 202, resp.text
            _wait(client, resp.json()["job_id"], 180, trainer, exporter)
            assert _cached(host_b) == {"baseline-fp32", "pruned-fp32", "pruned-int8"}
            showdown = client.get("/reports/showdown", params={"family": FAMILY})
            assert showdown.status_code == 200, showdown.text
            assert "pruned-int8" in showdown.text

            # C serves from its own, empty, cache: fetched from the bucket on first use.
            for variant in ("pruned-int8", "baseline-fp32"):
                pred = client.post("/predict", params={"family": FAMILY, "variant": variant},
                                   json={"texts": ["a witty and gorgeous film", "a dull and flat film"]})
                assert pred.status_code == 200, pred.text
                assert {p["label"] for p in pred.json()["predictions"]} <= set(WORDS)
            assert _cached(host_c) == {"pruned-int8", "baseline-fp32"}
            assert client.get("/readyz").json()["store_writable"] is True

        # Every record lives in the bucket, none on a host's disk.
        for host in (host_a, host_b, host_c):
            assert not host.job_dir.exists() or not any(host.job_dir.iterdir()), host.job_dir
        assert open_job_store(host_a).get(job["id"]).state == "succeeded"
        assert {m.variant for m in open_variant_store(host_a).manifests(FAMILY)} >= {"pruned-int8"}
        keys = {o["Key"] for o in raw_client(moto_endpoint).list_objects_v2(Bucket=bucket)["Contents"]}
        assert f"slimbert/jobs/{job['id']}.json" in keys and "slimbert/datasets/reviews.json" in keys
        assert any(k.startswith(f"slimbert/variants/{FAMILY}/.reports/") for k in keys)
    finally:
        trainer.stop()
        exporter.stop()
