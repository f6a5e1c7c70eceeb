"""A user's own classifier and data: a model fine-tuned by a plain transformers script (not by us), a CSV
of support tickets with string labels uploaded to /datasets, a compression job through a real Celery worker
that skips fine-tuning, and predictions that answer with the user's label names."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from slimbert.config import Settings
from slimbert.models import _packaged_dir
from slimbert.store.store import VariantStore
from tests.conftest import MINILM
from tests.integration.conftest import Worker

pytestmark = pytest.mark.integration

# Three classes with a label that has a space; each class has its own words, so a tiny model learns them.
WORDS = {"billing": ["invoice", "charged", "refund", "payment"], "login issue": ["password", "locked", "sign", "2fa"],
         "shipping": ["parcel", "courier", "tracking", "delivery"]}
# The user's model orders its labels its own way (not sorted): the job must keep the model's ids.
ID2LABEL = {0: "shipping", 1: "billing", 2: "login issue"}

# What a user writes with transformers alone: a fresh tiny BERT with the MiniLM vocabulary, trained on the
# CSV, saved with save_pretrained (safetensors). No SlimBERT code is imported.
PLAIN_SCRIPT = '''
import csv, json, sys, torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
tok_dir, csv_path, out, id2label = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
id2label = {int(k): v for k, v in id2label.items()}
label2id = {v: k for k, v in id2label.items()}
tok = AutoTokenizer.from_pretrained(tok_dir)
rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3,
    num_attention_heads=4, intermediate_size=64, max_position_embeddings=128, num_labels=3,
    id2label=id2label, label2id=label2id))
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
model.train()
for epoch in range(6):
    for i in range(0, len(rows), 16):
        batch = rows[i:i + 16]
        enc = tok([r["ticket"] for r in batch], padding=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([label2id[r["category"]] for r in batch])).loss
        loss.backward(); opt.step(); opt.zero_grad()
model.save_pretrained(out)
tok.save_pretrained(out)
'''


def _write_csv(path: Path, n_per_class: int, offset: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ticket", "category"])
        for i in range(n_per_class):
            for label, words in WORDS.items():
                a, b = words[(i + offset) % 4], words[(i + offset + 1) % 4]
                writer.writerow([f"my {a} , again the {b} , ticket {i + offset}", label])
    return path


def _plain_finetune(tmp_path: Path, train_csv: Path, id2label: dict[int, str]) -> Path:
    out = tmp_path / "user-model"
    subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, str(_packaged_dir(MINILM)), str(train_csv), str(out),
                    json.dumps(id2label)], check=True, timeout=300)
    return out


def _wait_job(client: TestClient, worker: Worker, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    pytest.fail(f"job still running after {timeout}s\n{worker.output()}")


def test_own_classifier_and_csv_keep_their_labels_end_to_end(stack_settings: Settings, cpu_worker: Worker,
                                                             tmp_path: Path) -> None:
    train_csv = _write_csv(tmp_path / "tickets-train.csv", 40, 0)
    test_csv = _write_csv(tmp_path / "tickets-test.csv", 12, 100)
    model_dir = _plain_finetune(tmp_path, train_csv, ID2LABEL)
    with TestClient(create_app(stack_settings)) as client:
        with train_csv.open("rb") as tr, test_csv.open("rb") as te:
            resp = client.post("/datasets", data={"name": "tickets", "text_column": "ticket",
                                                  "label_column": "category"},
                               files={"train": ("tickets-train.csv", tr, "text/csv"),
                                      "test": ("tickets-test.csv", te, "text/csv")})
        assert resp.status_code == 201, resp.text
        manifest = resp.json()
        assert manifest["label_names"] == sorted(WORDS) and manifest["splits"]["train"]["rows"] == 120

        # A classifier for other labels is refused when the job is submitted, not after a long fine-tune.
        other = tmp_path / "other-model"
        shutil.copytree(model_dir, other)
        config = json.loads((other / "config.json").read_text())
        config.update(id2label={"0": "a", "1": "b", "2": "c"}, label2id={"a": 0, "b": 1, "c": 2})
        (other / "config.json").write_text(json.dumps(config))
        refused = client.post("/jobs/compress", json={"preset": "tiny", "recipe": {
            "base_model": str(other), "dataset": "tickets"}})
        assert refused.status_code == 422, refused.text
        assert "labels" in refused.json()["detail"] and "id2label" in refused.json()["hint"]

        resp = client.post("/jobs/compress", json={"preset": "tiny", "recipe": {
            "base_model": str(model_dir), "dataset": "tickets", "family": "tickets-it"}})
        assert resp.status_code == 202, resp.text
        job = _wait_job(client, cpu_worker, resp.json()["job_id"], 240)
        assert job["state"] == "succeeded", f"{job}\n{cpu_worker.output()}"
        stages = {s["name"]: s for s in job["stages"]}
        # Already fine-tuned for these labels: fine-tuning is skipped, and the record says why.
        assert stages["finetune"]["state"] == "skipped" and "already is a classifier" in stages["finetune"]["detail"][
            "reason"]
        assert all(s.get("device") in (None, "cpu") for s in job["stages"])

        store = VariantStore(stack_settings.store_dir)
        manifests = {m.variant: m for m in store.manifests("tickets-it")}
        assert {"baseline-fp32", "pruned-fp32", "pruned-int8"} <= set(manifests)
        for m in manifests.values():
            assert m.labels == ID2LABEL  # the model's own ids and names, never re-headed
            assert m.dataset == "tickets" and m.dataset_sha256 == manifest["sha256"]
            assert m.splits["test"]["from"].startswith("tickets test as given, 32-example subset")
            assert m.splits["validation"]["from"].startswith("32 of tickets train, stratified")
            assert m.test_examples == 32 and m.metric == "accuracy"
        # The user's model was trained well before it came: its test accuracy survives the trip unchanged.
        assert manifests["baseline-fp32"].test_accuracy >= 0.9, manifests["baseline-fp32"]

        texts = ["my refund , again the payment , ticket 7", "my courier , again the tracking , ticket 8",
                 "my locked , again the sign , ticket 9"]
        resp = client.post("/predict", params={"family": "tickets-it", "variant": "baseline-fp32"},
                           json={"texts": texts})
        assert resp.status_code == 200, resp.text
        assert [p["label"] for p in resp.json()["predictions"]] == ["billing", "shipping", "login issue"]
        assert set(resp.json()["predictions"][0]["scores"]) == set(WORDS)

        # The dataset cannot be deleted while variants were made on it.
        resp = client.delete("/datasets/tickets")
        assert resp.status_code == 409 and "tickets-it" in resp.json()["detail"]
