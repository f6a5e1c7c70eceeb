"""A variant that needs a GPU, asked of an API without CUDA, runs on a real worker of the gpu queue.

There is no GPU here: the worker consumes the ``gpu`` queue and runs on its CPU, which is enough to
test the routing, the task contract (JSON in and out) and the answer's "where it ran".
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.queue import QueueClient
from slimbert.config import Settings
from slimbert.inference.remote import predict_texts
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore
from tests.integration.conftest import Worker, wait_for

pytestmark = pytest.mark.integration
FAMILY = "tiny-sst2"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the API serves GPU variants in-process")
def test_gpu_variant_is_forwarded_to_the_gpu_queue(stack_settings: Settings, tiny_model_dir: Path,
                                                  tmp_path: Path) -> None:
    store = VariantStore(stack_settings.store_dir)
    with store.staging(FAMILY, "gpu-only") as staged:
        shutil.copytree(tiny_model_dir, staged, dirs_exist_ok=True)
        store.publish(staged, VariantManifest(
            family=FAMILY, variant="gpu-only", runtime="torch", precision="fp32", target_device="gpu",
            base_model_id="tiny", technique=Technique(name="random-init"), labels={0: "negative", 1: "positive"},
            num_parameters=1))
    worker = Worker(stack_settings, "gpu", tmp_path / "worker-gpu.log")
    try:
        client = QueueClient(stack_settings)
        wait_for(lambda: "gpu" in client.live_queues() or worker.proc.poll() is not None, 90,
                 "the gpu worker to answer", worker.output)
        texts = ["a gorgeous , witty movie .", "dull and lifeless"]
        with TestClient(create_app(stack_settings)) as c:
            resp = c.post("/predict", params={"family": FAMILY, "variant": "gpu-only"}, json={"texts": texts})
        assert resp.status_code == 200, resp.text + worker.output()
        body = resp.json()
        assert body["ran_on"].startswith("gpu-worker:") and body["model_ms"] > 0
        assert "model;dur=" in resp.headers["Server-Timing"]
        local = predict_texts(stack_settings, FAMILY, "gpu-only", texts)
        for got, ref in zip(body["predictions"], local["predictions"], strict=True):
            assert got["label"] == ref["label"] and got["score"] == pytest.approx(ref["score"], abs=1e-5)
    finally:
        worker.stop()
