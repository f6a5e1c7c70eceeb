"""One job through the HTTP API, a real Celery worker and real Redis that runs EVERY compression stage.

The base model is a random hidden-64 BERT encoder with the MiniLM tokenizer (hidden 64 so the
bitsandbytes CPU 4-bit kernel can run), trained on a few dozen real SST-2 sentences.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoTokenizer, BertModel

from app.main import create_app
from slimbert.compression.recipe import Recipe
from slimbert.config import Settings
from slimbert.hardware import cpu_supports_bf16
from slimbert.models import _packaged_dir
from slimbert.store.store import VariantStore
from tests.conftest import MINILM
from tests.integration.conftest import Worker
from tests.integration.test_compress_job import run_job
from tests.unit.test_pipeline import tiny_config

pytestmark = pytest.mark.integration

# bf16 is made where the CPU has native bf16 math (AVX512-BF16/AMX) and skipped, with the reason, elsewhere.
MADE = {
    "baseline-fp32", "pruned-fp32", "heads-fp32",
    "pruned-int8", "pruned-int8-static", "pruned-int8-qat", "pruned-int8-mixed", "pruned-int4",
    "heads-int8", "heads-int8-static", "heads-int8-qat", "heads-int8-mixed", "heads-int4",
} | ({"pruned-bf16", "heads-bf16"} if cpu_supports_bf16() else set())


@pytest.fixture(scope="module")
def encoder64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("encoder64")
    minilm = _packaged_dir(MINILM)
    assert minilm is not None
    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    torch.manual_seed(0)
    BertModel(tiny_config(tokenizer.vocab_size, hidden=64, layers=3)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_every_stage_through_a_real_worker(stack_settings: Settings, cpu_worker: Worker, encoder64: Path) -> None:
    recipe = {"base_model": str(encoder64), "family": "every-it"}
    with TestClient(create_app(stack_settings)) as client:
        job = run_job(client, cpu_worker, {"preset": "every-stage-tiny", "recipe": recipe}, timeout=170)
        stages = {s["name"]: s for s in job["stages"]}
        order = [s["name"] for s in job["stages"]]
        assert order[:6] == ["load", "finetune", "evaluate-baseline", "sensitivity", "prune-layers",
                             "prune-heads-ffn"]
        assert all(stages[n]["state"] == "done" for n in order[:6])
        assert set(job["variants"]) == MADE
        # NF4 of the head/FFN-pruned model (per-layer FFN widths) is made, not skipped.
        assert stages["int4-nf4:heads-int4"]["state"] == "done"
        # A step that cannot run here (bf16 without native bf16) is in the record with its reason.
        skipped = {name.split(":")[1]: s["detail"]["reason"] for name, s in stages.items()
                   if s["state"] == "skipped" and ":" in name}  # precision stages are "<method>:<variant>"
        assert job["results"]["skipped"] == skipped
        assert set(job["results"]["skipped"]) == (set() if cpu_supports_bf16() else {"pruned-bf16", "heads-bf16"})
        assert len(job["results"]["sensitivity"]) == 3
        heads = stages["prune-heads-ffn"]["detail"]
        assert heads["encoder_parameters_after"] < heads["encoder_parameters_before"]
        assert heads["pruning_run"]["pruning_events"] and heads["distilled"] is True

        store = VariantStore(stack_settings.store_dir)
        manifests = {m.variant: m for m in store.manifests("every-it")}
        assert set(manifests) == MADE
        resolved = Recipe.model_validate(job["request"]["recipe"])
        for m in manifests.values():
            assert Recipe.model_validate(m.recipe) == resolved
            assert m.test_accuracy == job["results"]["variants"][m.variant]["test_accuracy"]
            store.verify(m)
        assert {m.runtime for m in manifests.values()} == {"torch", "onnxruntime", "bitsandbytes"}

        texts = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés ."]
        for variant in sorted(MADE):
            resp = client.post("/predict", params={"family": "every-it", "variant": variant}, json={"texts": texts})
            assert resp.status_code == 200, (variant, resp.text)
            assert [p["label"] in ("negative", "positive") for p in resp.json()["predictions"]] == [True, True]
