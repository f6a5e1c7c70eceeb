"""The showdown harness on a tiny family: a torch fp32 variant and its ONNX Runtime INT8 child."""

from __future__ import annotations

import numpy as np
import pytest

from slimbert.benchmark.runner import BenchmarkSpec, not_runnable_reason, run_device_benchmark
from slimbert.config import Settings
from slimbert.inference.bucketing import accuracy_of, predict_label_ids
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import model_call
from slimbert.records import BenchmarkRun, DeviceNA, DeviceRun, RunSpec
from slimbert.report.showdown import build_showdown
from slimbert.store.store import VariantStore
from tests.conftest import BENCH_FAMILY as FAMILY


def test_cpu_run_measures_every_variant(bench_settings: Settings) -> None:
    spec = BenchmarkSpec(family=FAMILY, batch_sizes=[1, 4], runs=3, warmup=1)
    seen: list[float] = []
    out = run_device_benchmark(bench_settings, spec, "cpu", progress=seen.append)
    assert seen and seen[-1] == 100.0
    assert out["device"] == "cpu" and out["environment"]["cpu"]["logical_cores"] >= 1
    base, int8 = out["variants"]["baseline-fp32"], out["variants"]["pruned-int8"]
    for row in (base, int8):
        assert set(row["latency"]) == {"1", "4"}
        for lat in row["latency"].values():
            assert lat["runs"] == 3 and lat["p50"] > 0 and lat["p99"] >= lat["p50"]
            assert lat["seq_len"] == 128 and lat["throughput_seq_s"] > 0
        lo, hi = row["accuracy_ci95"]
        assert lo <= row["accuracy"] <= hi and row["test_examples"] == 24
        assert row["peak_memory"]["peak_mb"] >= 0 and "method" in row["peak_memory"]
        assert row["load_ms"] > 0
    assert base["gflops_per_sequence"]["method"] == "measured"
    assert int8["gflops_per_sequence"]["method"].startswith("computed")
    # Same architecture, so the computed INT8 figure matches the measured fp32 one closely.
    assert int8["gflops_per_sequence"]["value"] == pytest.approx(base["gflops_per_sequence"]["value"], rel=0.05)
    assert "mcnemar_vs_baseline" in int8 and "mcnemar_vs_baseline" not in base


def test_dynamic_seq_len_pads_to_the_longest_sentence(bench_settings: Settings) -> None:
    spec = BenchmarkSpec(family=FAMILY, batch_sizes=[2], seq_len="dynamic", runs=2, warmup=0,
                         accuracy=False, peak_memory=False)
    out = run_device_benchmark(bench_settings, spec, "cpu")
    assert out["variants"]["baseline-fp32"]["latency"]["2"]["seq_len"] < 20


def test_gpu_without_cuda_is_na_with_reason(bench_settings: Settings) -> None:
    store = VariantStore(bench_settings.store_dir)
    assert "ONNX Runtime" in str(not_runnable_reason(store.manifest(FAMILY, "pruned-int8"), "gpu"))
    spec = BenchmarkSpec(family=FAMILY, batch_sizes=[1], runs=1, warmup=0, accuracy=False, peak_memory=False)
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = run_device_benchmark(bench_settings, spec, "gpu")
    assert out["variants"]["baseline-fp32"]["na"] == "no CUDA device in this worker"


@pytest.mark.parametrize("bad", [{"batch_sizes": [0]}, {"seq_len": 4}, {"runs": 0}, {"devices": ["tpu"]},
                                 {"family": "../x"}])
def test_spec_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BenchmarkSpec.model_validate({"family": FAMILY, **bad})


def test_benchmark_job_report_in_every_format(benchmarked: tuple[Settings, str]) -> None:
    """The plain job functions (as the Celery tasks call them) store a run; every format agrees."""
    import csv
    import io
    import re
    import xml.etree.ElementTree as ET

    from fastapi.testclient import TestClient

    from app.main import create_app
    bench_settings, run_id = benchmarked
    assert VariantStore(bench_settings.store_dir).latest_report(FAMILY)["run_id"] == run_id  # type: ignore[index]

    with TestClient(create_app(bench_settings)) as client:
        report = client.get("/reports/showdown", params={"family": FAMILY}).json()
        rows = {r["variant"]: r for r in report["rows"]}
        base_lat = rows["baseline-fp32"]["cpu"]["latency_ms"]
        int8_acc = rows["pruned-int8"]["cpu"]["accuracy"]
        assert rows["pruned-int8"]["gpu"]["na"] == "no live GPU worker"
        assert rows["baseline-fp32"]["cpu"]["speedup"] == 1.0
        assert report["run"]["run_id"] == run_id and report["recommendations"]["cpu"]["variant"] in rows
        # The pick was stored with the run (serving reads it there), and it is the showdown's own.
        stored = VariantStore(bench_settings.store_dir).latest_report(FAMILY)
        assert stored is not None and stored["recommended_cpu"] == report["recommendations"]["cpu"]["variant"]

        md = client.get("/reports/showdown", params={"family": FAMILY, "format": "markdown"}).text
        assert f"{base_lat:.2f}" in md and f"{int8_acc:.4f}" in md and "no live GPU worker" in md
        table = list(csv.DictReader(io.StringIO(client.get("/reports/showdown",
                                                           params={"family": FAMILY, "format": "csv"}).text)))
        by_variant = {r["variant"]: r for r in table}
        assert float(by_variant["baseline-fp32"]["cpu_latency_ms"]) == base_lat
        assert float(by_variant["pruned-int8"]["cpu_accuracy"]) == int8_acc
        assert by_variant["pruned-int8"]["gpu_na"] == "no live GPU worker"
        page = client.get("/reports/showdown", params={"family": FAMILY, "format": "html"}).text
        assert '<table id="showdown">' in page and f"{base_lat:.2f}" in page
        assert len(re.findall(r"<svg", page)) >= 3  # latency, radar, accuracy-vs-cost charts

        for name in ("latency", "radar", "accuracy-latency", "accuracy-gflops"):
            svg = client.get(f"/reports/showdown/charts/{name}.svg", params={"family": FAMILY})
            assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
            ET.fromstring(svg.content)  # well-formed XML
            png = client.get(f"/reports/showdown/charts/{name}.png", params={"family": FAMILY})
            assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
        missing = client.get("/reports/showdown/charts/sensitivity.svg", params={"family": FAMILY})
        assert missing.status_code == 404 and "sensitivity" in missing.json()["hint"]


def test_every_runtime_encodes_and_forwards_as_it_predicts(bench_settings: Settings) -> None:
    store = VariantStore(bench_settings.store_dir)
    texts = ["a gorgeous , witty movie .", "dull", "fine"]
    for variant in ("baseline-fp32", "pruned-int8"):
        predictor = load_variant(store.manifest(FAMILY, variant), store.variant_dir(FAMILY, variant))
        assert predictor.encode(texts, 16)["input_ids"].shape == (3, 16)
        out = predictor.predict(texts)
        logits = np.asarray(model_call(predictor, predictor.encode(texts))())
        np.testing.assert_allclose(logits, out.logits, rtol=1e-5, atol=1e-5)
        assert predictor.config.num_hidden_layers == 3
        assert (predictor.eager_model is not None) == (predictor.runtime == "torch")
        labels = predict_label_ids(predictor, texts * 3, batch_size=4)
        assert labels == [p.label_id for p in out.predictions] * 3
        assert accuracy_of(predictor, texts, labels[:3]) == 1.0


def test_stored_run_reads_back_to_the_same_json(benchmarked: tuple[Settings, str]) -> None:
    bench_settings, _ = benchmarked
    store = VariantStore(bench_settings.store_dir)
    raw = store.latest_report(FAMILY)
    run = BenchmarkRun.model_validate(raw)
    assert run.model_dump(mode="json") == raw
    assert isinstance(run.devices["cpu"], DeviceRun) and isinstance(run.devices["gpu"], DeviceNA)
    assert list(RunSpec.model_fields) == list(BenchmarkSpec.model_fields)  # the stored spec keeps up
    # A hand-written run without most fields (as older code or a test may leave) still makes a report.
    bare = BenchmarkRun.model_validate({"run_id": "r", "created_at": "2030-01-01T00:00:00",
                                        "spec": {"batch_sizes": [1]},
                                        "devices": {"cpu": {"variants": {"baseline-fp32": {"accuracy": 0.9}}}}})
    report = build_showdown(FAMILY, store.manifests(FAMILY), bare).model_dump(mode="json")
    rows = {r["variant"]: r for r in report["rows"]}
    assert rows["baseline-fp32"]["cpu"]["accuracy"] == 0.9 and rows["baseline-fp32"]["cpu"]["latency_ms"] is None
    assert rows["pruned-int8"]["cpu"] == {"na": "not in run r", "speedup": None}
