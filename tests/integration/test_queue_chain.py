"""A job that moves between queues: training on the gpu queue, INT8 export on the cpu queue.

No GPU here, so a worker consuming the ``gpu`` queue runs on the CPU; what is checked is the routing:
where each stage ran, and that the job finishes once, with every variant, after crossing queues.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.queue import QueueClient
from slimbert.config import Settings
from slimbert.hardware import cpu_supports_bf16
from tests.integration.conftest import Worker, wait_for

pytestmark = pytest.mark.integration


def test_training_on_gpu_queue_then_int8_on_cpu_queue(
    stack_settings: Settings, cpu_worker: Worker, tiny_encoder_dir: Path, tmp_path: Path
) -> None:
    gpu = Worker(stack_settings, "gpu", tmp_path / "worker-gpu.log")
    try:
        wait_for(lambda: "gpu" in QueueClient(stack_settings).live_queues(), 90, "the gpu worker", gpu.output)
        recipe = {"base_model": str(tiny_encoder_dir), "family": "chain-it",
                  "precision": {"targets": ["final"], "int8_dynamic": {}, "fp16_bf16": {"dtype": "bf16"}}}
        with TestClient(create_app(stack_settings)) as client:
            resp = client.post("/jobs/compress", json={"preset": "tiny", "recipe": recipe, "device": "gpu",
                                                       "benchmark": None})
            assert resp.status_code == 202, resp.text
            accepted = resp.json()
            assert accepted["queue"] == "gpu" and accepted["fallback"] is None
            job_id = accepted["job_id"]
            deadline = time.monotonic() + 180
            phases = set()
            while time.monotonic() < deadline:
                job = client.get(f"/jobs/{job_id}").json()
                phases.add(job["phase"])
                if job["state"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.2)
            assert job["state"] == "succeeded", f"{job}\n{gpu.output()}\n{cpu_worker.output()}"
            where = {s["name"]: s["queue"] for s in job["stages"]}
            assert where["finetune"] == "gpu" and where["prune-layers"] == "gpu"
            assert where["fp16-bf16:pruned-bf16"] == "gpu"  # half precision stays with training
            assert where["int8-dynamic:pruned-int8"] == "cpu"  # INT8 export runs where its runtime serves
            # Without CUDA the "gpu" worker here is a CPU process: bf16 is made only where the CPU has native
            # bf16 math, and otherwise skipped with the reason (still on the gpu queue, as checked above).
            bf16 = cpu_supports_bf16()
            half = {s["name"]: s for s in job["stages"]}["fp16-bf16:pruned-bf16"]
            assert half["state"] == ("done" if bf16 else "skipped"), half
            made = {"baseline-fp32", "pruned-fp32", "pruned-int8"} | ({"pruned-bf16"} if bf16 else set())
            assert made <= set(job["variants"])
            assert job["phase"] == "precision" and job["attempts"] == 1 and job["progress"] == 100.0
            assert "train" in phases or "awaiting-cpu" in phases or "precision" in phases
            for variant in sorted(made - {"baseline-fp32", "pruned-fp32"}):
                pred = client.post("/predict", params={"family": "chain-it", "variant": variant}, json={"text": "fine"})
                assert pred.status_code == 200, pred.text
    finally:
        gpu.stop()
