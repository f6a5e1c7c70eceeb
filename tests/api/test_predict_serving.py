"""POST /predict on the hot path: a republished variant is reloaded without a restart, the catalog reads
nothing while the store is unchanged, every model call runs on the compute thread, and sentence pairs."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

import app.serving.engine as engine_module
from app.main import create_app
from slimbert.config import Settings
from slimbert.data import Text
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import BatchOutput, Predictor
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore
from tests.conftest import save_tiny_classifier

FAMILY = "tiny-serve"
SENTENCES = ["a gorgeous , witty , seductive movie .", "dull and lifeless", "an uneven film with bright ideas"]


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(store_dir=tmp_path / "store", redis_url="redis://127.0.0.1:1/0", worker_ping_timeout_s=0.2,
                    reaper_interval_s=0, _env_file=None, **kw)  # type: ignore[arg-type, call-arg]


def _publish(settings: Settings, model_dir: Path, variant: str = "baseline-fp32",
             labels: dict[int, str] | None = None, **kw: Any) -> VariantManifest:
    store = VariantStore(settings.store_dir)
    with store.staging(FAMILY, variant) as staged:
        shutil.copytree(model_dir, staged, dirs_exist_ok=True)
        return store.publish(staged, VariantManifest(
            family=FAMILY, variant=variant, runtime="torch", precision="fp32", base_model_id="tiny",
            technique=Technique(name="random-init"), labels=labels or {0: "negative", 1: "positive"},
            num_parameters=1, num_layers=3, validation_accuracy=0.5, **kw))


def _reference(settings: Settings, texts: Sequence[Text]) -> list[float]:
    """The stored variant's scores, straight from load_variant in this thread."""
    store = VariantStore(settings.store_dir)
    manifest = store.manifest(FAMILY, "baseline-fp32")
    out = load_variant(manifest, store.variant_dir(FAMILY, "baseline-fp32")).predict(texts)
    return [p.scores[p.label] for p in out.predictions]


def _scores(body: dict[str, Any]) -> list[float]:
    return [p["score"] for p in body["predictions"]]


def test_a_republished_variant_is_reloaded_on_its_next_request(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first_dir = save_tiny_classifier(tmp_path / "seed0", seed=0)
    second_dir = save_tiny_classifier(tmp_path / "seed1", seed=1)
    _publish(settings, first_dir)
    old = _reference(settings, SENTENCES)
    with TestClient(create_app(settings)) as c:
        engine = c.app.state.engine  # type: ignore[attr-defined]
        body = c.post("/predict", params={"variant": "baseline-fp32"}, json={"texts": SENTENCES}).json()
        assert _scores(body) == pytest.approx(old, abs=1e-5)
        _publish(settings, second_dir)  # the same name, other weights, while the API runs
        new = _reference(settings, SENTENCES)
        assert new != pytest.approx(old, abs=1e-3), "the two random models must differ"
        body = c.post("/predict", params={"variant": "baseline-fp32"}, json={"texts": SENTENCES}).json()
        assert _scores(body) == pytest.approx(new, abs=1e-5)
        # the old weights were released: one version of the variant is loaded
        assert [k[:2] for k in engine.cache.keys()] == [(FAMILY, "baseline-fp32")]
        assert engine.cache.loads == 2


def test_nothing_is_read_from_the_store_while_it_is_unchanged(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = _settings(tmp_path)
    _publish(settings, tiny_model_dir)
    _publish(settings, tiny_model_dir, "pruned-fp32")
    with TestClient(create_app(settings)) as c:
        catalog = c.app.state.engine.catalog  # type: ignore[attr-defined]
        assert c.post("/predict", json={"text": "x"}).json()["variant"] == "pruned-fp32"  # default, no run
        assert c.post("/predict", params={"variant": "baseline-fp32"}, json={"text": "x"}).status_code == 200
        reads = catalog.reads
        for _ in range(5):
            assert c.post("/predict", json={"text": "x"}).json()["variant"] == "pruned-fp32"
            assert c.post("/predict", params={"variant": "baseline-fp32"}, json={"text": "y"}).status_code == 200
        assert catalog.reads == reads
        _publish(settings, tiny_model_dir, "pruned-int8-gone", target_device="gpu")  # the family changed
        assert c.post("/predict", json={"text": "x"}).json()["variant"] == "pruned-fp32"
        assert catalog.reads > reads


def test_load_warm_up_and_forward_all_run_on_the_compute_thread(tmp_path: Path, tiny_model_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, inference_threads=1)
    _publish(settings, tiny_model_dir)
    seen: list[tuple[str, str, int]] = []

    class Recording:
        def __init__(self, inner: Predictor) -> None:
            self.inner = inner
            self.runtime, self.device, self.labels = inner.runtime, inner.device, inner.labels

        def predict(self, texts: Sequence[Text]) -> BatchOutput:
            seen.append(("predict", threading.current_thread().name, torch.get_num_threads()))
            return self.inner.predict(texts)

    def recording_load(*args: Any, **kw: Any) -> Any:
        seen.append(("load", threading.current_thread().name, torch.get_num_threads()))
        return Recording(load_variant(*args, **kw))

    monkeypatch.setattr(engine_module, "load_variant", recording_load)
    with TestClient(create_app(settings)) as c:
        for text in SENTENCES:
            assert c.post("/predict", json={"text": text}).status_code == 200
    kinds = [k for k, _, _ in seen]
    assert kinds[:2] == ["load", "predict"] and kinds.count("load") == 1 and len(kinds) == 2 + len(SENTENCES)
    names = {name for _, name, _ in seen}
    assert len(names) == 1 and names.pop().startswith("compute-0")
    assert {n for _, _, n in seen} == {1}


def test_sentence_pairs_are_passed_through_as_pairs(tmp_path: Path, tiny_model_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path)
    labels = {0: "not_equivalent", 1: "equivalent"}  # a user's dataset's label names, from the manifest
    _publish(settings, tiny_model_dir, labels=labels, task="pair")
    batches: list[list[Text]] = []

    def spying_load(*args: Any, **kw: Any) -> Any:
        predictor = load_variant(*args, **kw)
        inner = predictor.predict

        def spy(texts: Sequence[Text]) -> BatchOutput:
            batches.append(list(texts))
            return inner(texts)

        predictor.predict = spy  # type: ignore[method-assign]
        return predictor

    monkeypatch.setattr(engine_module, "load_variant", spying_load)
    pairs = [("the cat sat on the mat .", "a cat was sitting on the mat ."), ("it rains", "the sun is out")]
    with TestClient(create_app(settings)) as c:
        resp = c.post("/predict", json={"pairs": [list(p) for p in pairs]})
        assert resp.status_code == 200, resp.text
        body = resp.json()
    assert batches[-1] == pairs  # tuples: the tokenizer gets them as its two text arguments
    assert [p["label"] for p in body["predictions"]] == [labels[p["label_id"]] for p in body["predictions"]]
    assert set(body["predictions"][0]["scores"]) == set(labels.values())
    assert _scores(body) == pytest.approx(_reference(settings, pairs), abs=1e-5)


@pytest.mark.parametrize(("payload", "where"), [
    ({"pairs": [["fine", " "]]}, "pairs[0][1]"),
    ({"pairs": [["fine", "x" * 3000]]}, "pairs[0][1]"),
    ({"pairs": [["a", "b"]] * 65}, "pairs"),
    ({"pairs": []}, "pairs"),
    ({"pairs": [["only one"]]}, "pairs"),
    ({"pairs": [["a", "b"]], "texts": ["c"]}, "exactly one"),
])
def test_pairs_are_held_to_the_per_text_limits(tmp_path: Path, tiny_model_dir: Path, payload: dict[str, Any],
                                               where: str) -> None:
    settings = _settings(tmp_path)
    _publish(settings, tiny_model_dir)
    with TestClient(create_app(settings)) as c:
        resp = c.post("/predict", json=payload)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert where in str(body["detail"]) or where in str(body["hint"])
