"""The every-stage-tiny job on a tiny model of each encoder family, through the HTTP API, one real Celery
worker and real Redis: BERT, RoBERTa, DistilBERT, ELECTRA and DeBERTa-v2 (tests/tiny_archs.py).

One worker serves the five jobs (starting one costs seconds), and the models are the tiniest the stages
take: 3 layers, hidden 64 (bitsandbytes' CPU 4-bit kernel packs 64 input features), 4 heads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.queue import QueueClient
from slimbert.config import Settings
from slimbert.hardware import cpu_supports_bf16
from tests.integration.conftest import ROOT, Worker, wait_for
from tests.integration.test_compress_job import run_job
from tests.tiny_archs import ARCHITECTURES, save_tiny

pytestmark = pytest.mark.integration

# What may be skipped, and why; every other stage must be done.
BF16_SKIPS = set() if cpu_supports_bf16() else {"fp16-bf16:pruned-bf16", "fp16-bf16:heads-bf16"}
SKIPS = {arch: set(BF16_SKIPS) for arch in ARCHITECTURES}
SKIPS["deberta-v2"] |= {"int8-static:pruned-int8-static", "int8-static:heads-int8-static"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archs")
    for arch in ARCHITECTURES:
        save_tiny(arch, root / arch, head=False)  # bare encoders: the job fine-tunes a head, as for a hub model
    return root


@pytest.fixture(scope="module")
def arch_stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str, models: Path
               ) -> Iterator[tuple[TestClient, Worker]]:
    tmp = tmp_path_factory.mktemp("arch-stack")
    settings = Settings(redis_url=redis_url, store_dir=tmp / "store", allowed_model_roots=[ROOT, models],
                        worker_ping_ttl_s=0, worker_ping_timeout_s=1.0, _env_file=None)  # type: ignore[call-arg]
    worker = Worker(settings, "cpu", tmp / "worker-cpu.log")
    try:
        wait_for(lambda: "cpu" in QueueClient(settings).live_queues() or worker.proc.poll() is not None, 90,
                 "the cpu worker to answer", worker.output)
        assert worker.proc.poll() is None, worker.output()
        with TestClient(create_app(settings)) as client:
            yield client, worker
    finally:
        worker.stop()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_stage_runs_or_says_why(arch: str, arch_stack: tuple[TestClient, Worker], models: Path) -> None:
    client, worker = arch_stack
    family = f"arch-{arch}"
    # No follow-up benchmark: it would hold the one worker for minutes before the next family's job.
    body = {"preset": "every-stage-tiny", "recipe": {"base_model": str(models / arch), "family": family},
            "benchmark": None}
    job = run_job(client, worker, body, timeout=240)
    stages = {s["name"]: s for s in job["stages"]}
    assert [s["name"] for s in job["stages"]][:6] == ["load", "finetune", "evaluate-baseline", "sensitivity",
                                                      "prune-layers", "prune-heads-ffn"]
    assert {s["device"] for s in job["stages"]} == {"cpu"}, job["stages"]
    skipped = {n for n, s in stages.items() if s["state"] == "skipped"}
    assert skipped == SKIPS[arch], {n: stages[n]["detail"] for n in skipped}
    assert all(s["state"] == "done" for n, s in stages.items() if n not in skipped)
    assert all(stages[n]["detail"]["reason"] for n in skipped)
    # The results name each skipped variant with the reason the stage record gives.
    assert job["results"]["skipped"] == {n.split(":")[1]: stages[n]["detail"]["reason"] for n in skipped}
    heads = stages["prune-heads-ffn"]["detail"]
    assert heads["encoder_parameters_after"] < heads["encoder_parameters_before"]
    assert heads["pruned_heads"], heads  # heads went, not only FFN neurons
    assert stages["prune-layers"]["detail"]["layers_after"] == 2

    # The head-pruned INT8 graph and NF4 model answer through the API (no token_type_ids for RoBERTa/DistilBERT).
    for variant in ("heads-int8", "heads-int4"):
        resp = client.post("/predict", params={"family": family, "variant": variant},
                           json={"texts": ["a gorgeous , witty , seductive movie .", "boilerplate clichés ."]})
        assert resp.status_code == 200, (variant, resp.text)
        assert {p["label"] for p in resp.json()["predictions"]} <= {"negative", "positive"}
