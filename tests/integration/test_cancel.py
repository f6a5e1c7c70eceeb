"""Cancellation through DELETE /jobs/{id} with a real worker: queued jobs at once, running ones at the
next stage boundary."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from slimbert.config import Settings
from slimbert.store.store import VariantStore
from tests.integration.conftest import Worker, wait_for

pytestmark = pytest.mark.integration


def test_cancel_running_and_queued_jobs(stack_settings: Settings, cpu_worker: Worker, tiny_encoder_dir: Path) -> None:
    slow = {"base_model": str(tiny_encoder_dir), "family": "cancel-it", "train_examples": 3000,
            "validation_examples": 32, "test_examples": 32, "finetune": {"epochs": 2, "batch_size": 8, "max_length": 32,
                                             "early_stopping_patience": None}}
    with TestClient(create_app(stack_settings)) as client:
        first = client.post("/jobs/compress", json={"preset": "tiny", "recipe": slow}).json()["job_id"]
        second = client.post("/jobs/compress", json={"preset": "tiny", "recipe": {**slow, "family": "cancel-q"}}
                             ).json()["job_id"]

        def stage_of(job_id: str) -> str | None:
            return client.get(f"/jobs/{job_id}").json()["stage"]  # type: ignore[no-any-return]

        wait_for(lambda: stage_of(first) == "finetune", 90, "the first job to start fine-tuning", cpu_worker.output)
        # Queued behind it (concurrency 1, prefetch 1): cancelled at once.
        queued = client.delete(f"/jobs/{second}").json()
        assert queued["state"] == "cancelled"
        running = client.delete(f"/jobs/{first}").json()
        assert running["state"] == "running"
        wait_for(lambda: client.get(f"/jobs/{first}").json()["state"] == "cancelled", 240,
                 "the running job to stop at the next stage boundary", cpu_worker.output)
        job = client.get(f"/jobs/{first}").json()
        assert job["finished_at"] and "cancel" in job["error"]
        # It stopped before the stages after fine-tuning and published only what it finished.
        assert "prune-layers" not in [s["name"] for s in job["stages"]]
        time.sleep(1)  # give the worker the chance to (wrongly) pick up the cancelled job
        assert client.get(f"/jobs/{second}").json()["state"] == "cancelled"
        assert client.get(f"/jobs/{second}").json()["started_at"] is None
        store = VariantStore(stack_settings.store_dir)
        assert {m.variant for m in store.manifests("cancel-it")} <= {"baseline-fp32"}
        assert "cancel-q" not in store.families()
