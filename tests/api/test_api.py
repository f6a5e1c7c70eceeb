"""HTTP API against a temporary store holding a real (tiny, random) torch variant."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from transformers import pipeline

from app.main import create_app
from slimbert.config import Settings
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore

FAMILY = "tiny-sst2"


def _settings(tmp_path: Path, **kw: object) -> Settings:
    # Port 1 never answers: API tests must not depend on a live broker.
    return Settings(store_dir=tmp_path / "store", redis_url="redis://127.0.0.1:1/0", worker_ping_timeout_s=0.2,
                    _env_file=None, **kw)  # type: ignore[arg-type, call-arg]


def _publish_variant(settings: Settings, model_dir: Path, variant: str = "baseline-fp32") -> None:
    store = VariantStore(settings.store_dir)
    with store.staging(FAMILY, variant) as staged:
        shutil.copytree(model_dir, staged, dirs_exist_ok=True)
        store.publish(staged, VariantManifest(
            family=FAMILY, variant=variant, runtime="torch", precision="fp32", base_model_id="tiny",
            technique=Technique(name="random-init"), labels={0: "negative", 1: "positive"},
            num_parameters=1, num_layers=3, test_accuracy=0.5, test_examples=10,
            validation_accuracy=0.5))


@pytest.fixture
def client(tmp_path: Path, tiny_model_dir: Path) -> Iterator[TestClient]:
    settings = _settings(tmp_path)
    _publish_variant(settings, tiny_model_dir)
    with TestClient(create_app(settings)) as c:
        yield c


def test_predict_matches_transformers_pipeline(client: TestClient, tiny_model_dir: Path) -> None:
    texts = ["a gorgeous , witty movie .", "dull and lifeless", "it 's fine"]
    resp = client.post("/predict", params={"variant": "baseline-fp32"}, json={"texts": texts})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["variant"] == "baseline-fp32" and body["family"] == FAMILY
    assert "model;dur=" in resp.headers["Server-Timing"]
    assert body["latency_ms"] >= body["model_ms"] > 0
    reference = pipeline("text-classification", model=str(tiny_model_dir), top_k=None, device="cpu")(texts)
    for got, ref in zip(body["predictions"], reference, strict=True):
        ref_scores = {r["label"]: r["score"] for r in ref}
        assert got["label"] == max(ref_scores, key=ref_scores.__getitem__)
        for label, score in ref_scores.items():
            assert got["scores"][label] == pytest.approx(score, abs=1e-5)


def test_single_text_and_default_variant(client: TestClient) -> None:
    body = client.post("/predict", json={"text": "great"}).json()
    assert body["variant"] == "baseline-fp32" and len(body["predictions"]) == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"texts": []}, "texts"), ({}, "body"), ({"texts": ["x" * 3000]}, "texts[0]"), ({"texts": "abc"}, "texts"),
     ({"texts": ["ok"], "text": "both"}, "body")],
)
def test_bad_input_is_a_422_naming_the_field(client: TestClient, payload: dict[str, object], field: str) -> None:
    resp = client.post("/predict", json=payload)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert set(body) == {"error", "detail", "hint"}
    assert field in str(body["detail"]) or field in body["hint"]


def test_unknown_variant_is_404_listing_variants(client: TestClient) -> None:
    resp = client.post("/predict", params={"variant": "pruned-int8"}, json={"text": "x"})
    assert resp.status_code == 404
    assert "baseline-fp32" in resp.json()["hint"]
    assert client.post("/predict", params={"variant": "../../etc"}, json={"text": "x"}).status_code == 422


def test_variants_and_showdown(client: TestClient) -> None:
    listed = client.get("/variants").json()
    assert [v["variant"] for v in listed] == ["baseline-fp32"]
    one = client.get(f"/variants/{FAMILY}/baseline-fp32").json()
    assert len(one["files"]) >= 3 and one["size_bytes"] > 0
    table = client.get("/reports/showdown").json()
    assert table["family"] == FAMILY and table["rows"][0]["test_accuracy_at_creation"] == 0.5
    assert table["rows"][0]["cpu"]["na"].startswith("no benchmark run yet")
    md = client.get("/reports/showdown", params={"format": "markdown"}).text
    assert "| baseline-fp32 | " in md and "no benchmark run yet" in md


def test_invalid_recipe_is_422_naming_field_and_allowed_values(client: TestClient) -> None:
    resp = client.post("/jobs/compress", json={"recipe": {"layer_pruning": {"strategy": "random"}}})
    assert resp.status_code == 422
    body = resp.json()
    assert "recipe.layer_pruning.strategy" in body["hint"] and "sensitivity" in body["hint"]
    resp = client.post("/jobs/compress", json={"preset": "nope"})
    assert resp.status_code == 422 and "quick" in resp.json()["hint"]


def test_submit_without_redis_is_503_and_nothing_queued(client: TestClient) -> None:
    resp = client.post("/jobs/compress", json={"preset": "tiny"}, headers={"Idempotency-Key": "retry-me"})
    assert resp.status_code == 503
    assert "Redis" in resp.json()["detail"] and "nothing was queued" in resp.json()["hint"]
    # The other job kinds refuse the same way, before anything is planned.
    assert client.post("/jobs/benchmark", json={"family": FAMILY}).status_code == 503
    assert client.post("/jobs/autotune", json={"family": FAMILY}).status_code == 503
    # Nothing a worker could pick up or a client could poll: no job record, no idempotency marker (a retry
    # with the same key once Redis is back must submit afresh, not return a job that never ran).
    assert client.get("/jobs").json() == []
    job_dir = client.app.state.settings.job_dir  # type: ignore[attr-defined]
    assert not job_dir.exists() or sorted(p.relative_to(job_dir) for p in job_dir.rglob("*")) == []


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["redis"] is False and ready.json()["store_writable"] is True


def test_api_keys_roles(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = _settings(tmp_path, api_keys={"adm": "admin", "prd": "predict"}, open_predict=False)
    _publish_variant(settings, tiny_model_dir)
    with TestClient(create_app(settings)) as c:
        assert c.post("/predict", json={"text": "x"}).status_code == 401
        assert c.post("/predict", json={"text": "x"}, headers={"X-API-Key": "prd"}).status_code == 200
        assert c.post("/jobs/compress", json={}, headers={"X-API-Key": "prd"}).status_code == 403
        assert c.get("/jobs", headers={"X-API-Key": "adm"}).status_code == 200
