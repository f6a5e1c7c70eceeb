"""The showdown harness: every variant of a family on one device, interleaved, in one process.

Per variant and device it measures accuracy and macro-F1 on the dev split (on that runtime),
latency per batch size (model time only; tokenization timed apart), throughput, load time, size,
parameters, GFLOPs per sequence and peak memory. Variants are timed interleaved (A B C A B C ...)
so machine drift hits all of them alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from slimbert.benchmark.flops import COMPUTED_LABEL, MEASURED_LABEL, computed_gflops, measured_gflops
from slimbert.benchmark.latency import interleaved, throughput
from slimbert.benchmark.memory import cuda_peak_memory_mb, measure_fresh_process, module_mb
from slimbert.benchmark.stats import mcnemar, paired_difference
from slimbert.config import Settings
from slimbert.data import Text, TextDataset
from slimbert.hardware import describe_environment
from slimbert.inference.bucketing import predict_label_ids
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Encoded, Predictor, model_call
from slimbert.metrics import all_metrics, interval
from slimbert.records import (
    BASELINE,
    Device,
    DeviceRun,
    GflopsRecord,
    LatencyRecord,
    McNemarRecord,
    MeasurementSettings,
    PairedRecord,
    PeakMemoryRecord,
    SeqLen,
    VariantMeasurement,
)
from slimbert.splits import test_split_of
from slimbert.store.bucket import open_variant_store
from slimbert.store.manifest import NAME_PATTERN, VariantManifest
from slimbert.store.store import VariantStore

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
COMPUTED_METHOD = f"{COMPUTED_LABEL} from the config"


class BenchmarkSpec(BaseModel):
    """What to measure; validated before anything is queued."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(pattern=NAME_PATTERN)
    variants: list[str] | None = Field(default=None, description="default: every variant of the family")
    devices: list[Device] | None = Field(default=None, description="default: every live device")
    batch_sizes: list[int] = Field(default=[1, 8, 32, 64], min_length=1, max_length=8)
    seq_len: SeqLen = Field(default=128, description="tokens, or 'dynamic': real test-split sentences")
    runs: int = Field(default=20, ge=1, le=1000)
    warmup: int = Field(default=3, ge=0, le=100)
    accuracy: bool = True
    peak_memory: bool = True
    test_examples: int | None = Field(
        default=None, ge=8, validation_alias=AliasChoices("test_examples", "dev_examples"),
        description="test-split subset for accuracy (GLUE SST-2 dev); null = all 872")

    def model_post_init(self, _: Any) -> None:
        for bs in self.batch_sizes:
            if not 1 <= bs <= 256:
                raise ValueError(f"batch_sizes: {bs} is outside 1..256")
        if isinstance(self.seq_len, int) and not 8 <= self.seq_len <= 512:
            raise ValueError("seq_len: use 8..512 tokens or 'dynamic'")


def not_runnable_reason(manifest: VariantManifest, device: str) -> str | None:
    """Why a variant cannot run on ``device``, or None when it can."""
    if device == "gpu" and manifest.runtime == "onnxruntime":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return ("not runnable on this device: ONNX Runtime here has no CUDA execution provider (onnxruntime-gpu "
                    "is not installed)")
        return ("not runnable on this device: ONNX Runtime's CUDA execution provider has no kernels for the INT8 "
                "graph's DynamicQuantizeLinear/MatMulInteger ops, so they would run on the CPU")
    if device == "gpu" and manifest.runtime == "torch-inductor":
        return "not runnable on this device: the Inductor INT8 program is compiled for x86 CPUs (oneDNN)"
    if device == "cpu" and manifest.precision == "fp16":
        return "not runnable on this device: fp16 kernels target the GPU"
    if device == "gpu" and not torch.cuda.is_available():
        return "no CUDA device in this worker"
    return None


def _gflops(name: str, predictor: Predictor, encoded: Encoded, seq_len: int) -> GflopsRecord:
    model = predictor.eager_model
    if model is not None:
        try:
            one = {k: v[:1] for k, v in encoded.items()}
            return GflopsRecord(value=round(measured_gflops(model, one), 4), method=MEASURED_LABEL)
        except Exception as exc:  # the counter lacks formulas for some quantized ops
            log.info("flop counter failed on %s (%s); computing from the config", name, exc)
    return GflopsRecord(value=round(computed_gflops(predictor.config, seq_len), 4), method=COMPUTED_METHOD)


def peak_memory_probe(store_dir: str, family: str, variant: str, batch_size: int, seq_len: SeqLen) -> None:
    """Runs in a fresh process (see memory.measure_fresh_process): load one variant, run one batch."""
    # The local store on purpose: the parent verified the variant into this host's store (with a bucket,
    # its cache), and the probe must measure the variant's memory, not a bucket client's.
    store = VariantStore(Path(store_dir))
    manifest = store.manifest(family, variant)
    predictor = load_variant(manifest, store.variant_dir(family, variant), "cpu")
    texts = (["a gorgeous , witty , seductive movie ."] * batch_size)[:batch_size]
    predictor.forward(predictor.encode(texts, seq_len))


def _measure_accuracy(rows: dict[str, VariantMeasurement], predictors: dict[str, Predictor], dev: TextDataset,
                      tick: Callable[[], None]) -> None:
    """Accuracy (Wilson interval), macro-F1, F1 and the primary metric with its interval per variant; McNemar
    and the paired difference vs the baseline, on per-example correctness."""
    preds: dict[str, list[int]] = {}
    n_labels = len(dev.label_names) or 2
    for name, predictor in predictors.items():
        start = time.perf_counter()
        preds[name] = predict_label_ids(predictor, dev.inputs)
        seconds = time.perf_counter() - start
        values = all_metrics(preds[name], dev.labels, n_labels, digits=4)
        low, high = interval("accuracy", preds[name], dev.labels, n_labels)
        row = rows[name]
        row.accuracy = values["accuracy"]
        row.accuracy_ci95 = (round(low, 4), round(high, 4))
        row.macro_f1, row.f1 = values["macro_f1"], values.get("f1")
        row.metric, row.metric_value = dev.metric, values[dev.metric]
        low, high = interval(dev.metric, preds[name], dev.labels, n_labels)
        row.metric_ci95 = (round(low, 4), round(high, 4))
        row.test_examples = len(dev)
        row.eval_seconds = round(seconds, 2)
        tick()
    if BASELINE not in preds:
        return
    for name, pred in preds.items():
        if name != BASELINE:
            rows[name].mcnemar_vs_baseline = McNemarRecord(**mcnemar(pred, preds[BASELINE], dev.labels).to_dict())
            diff, margin = paired_difference(pred, preds[BASELINE], dev.labels)
            rows[name].paired_vs_baseline = PairedRecord(difference=round(diff, 4), margin95=round(margin, 4))


def _measure_latency(rows: dict[str, VariantMeasurement], predictors: dict[str, Predictor], texts: list[Text],
                     spec: BenchmarkSpec, device: Device, *, gflops: bool) -> None:
    """Model-time latency of every variant at one batch size (``len(texts)``), timed interleaved."""
    calls: dict[str, Callable[[], object]] = {}
    tokenize_ms: dict[str, float] = {}
    seqs: dict[str, int] = {}
    for name, predictor in predictors.items():
        start = time.perf_counter()
        encoded = predictor.encode(texts, spec.seq_len)
        tokenize_ms[name] = (time.perf_counter() - start) * 1000
        seqs[name] = int(encoded["input_ids"].shape[1])
        calls[name] = model_call(predictor, encoded)
        if gflops:
            rows[name].gflops_per_sequence = _gflops(name, predictor, encoded, seqs[name])
    stats = interleaved(calls, warmup=spec.warmup, runs=spec.runs, device="cuda" if device == "gpu" else "cpu")
    bs = len(texts)
    for name, st in stats.items():
        record = LatencyRecord(**st.to_dict(), throughput_seq_s=round(throughput(bs, st), 2),
                               tokenize_ms=round(tokenize_ms[name], 3), seq_len=seqs[name])
        rows[name].latency = {**rows[name].latency, str(bs): record}  # assigned, so the record counts it as set


def family_test_split(settings: Settings, manifests: dict[str, VariantManifest]) -> TextDataset:
    """The test split a family's variants were reported on when made, label ids in the models' order."""
    if not manifests:
        raise ValueError("no variants to benchmark")
    ref = manifests.get(BASELINE) or next(iter(manifests.values()))
    return test_split_of(settings, ref.recipe, ref.labels, ref.metric)


def benchmark_device(settings: Settings, spec: BenchmarkSpec, device: Device, progress: Progress | None = None
                     ) -> DeviceRun:
    """Benchmark the spec's variants on ``device`` in this process."""
    store = open_variant_store(settings)
    manifests = {m.variant: m for m in store.manifests(spec.family)}
    names = spec.variants or sorted(manifests)
    missing = [n for n in names if n not in manifests]
    if missing:
        store.manifest(spec.family, missing[0])  # raises VariantNotFound listing what exists
    env = describe_environment()
    rows: dict[str, VariantMeasurement] = {}
    predictors: dict[str, Predictor] = {}
    for name in names:
        manifest = manifests[name]
        row = rows[name] = VariantMeasurement(runtime=manifest.runtime, precision=manifest.precision,
                                              size_mb=round(manifest.size_mb, 3), parameters=manifest.num_parameters)
        reason = not_runnable_reason(manifest, device)
        if reason:
            row.na = reason
            continue
        store.verify(manifest)
        start = time.perf_counter()
        predictors[name] = load_variant(manifest, store.variant_dir(spec.family, name), device)
        row.load_ms = round((time.perf_counter() - start) * 1000, 1)
    steps = max(1, (len(spec.batch_sizes) + 2) * max(1, len(predictors)))
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress:
            progress(min(100.0, 100.0 * done / steps))

    # The family's test split, rebuilt from its recipe (for SST-2, GLUE's dev): nothing in a job selected on it.
    dev = family_test_split(settings, manifests).subset(spec.test_examples)
    if spec.accuracy:
        _measure_accuracy(rows, predictors, dev, tick)
    else:
        tick(len(predictors))
    for bs in spec.batch_sizes if predictors else []:
        texts = [dev.inputs[i % len(dev)] for i in range(bs)]
        _measure_latency(rows, predictors, texts, spec, device, gflops=bs == spec.batch_sizes[0])
        tick(len(predictors))
    if spec.peak_memory:
        bs = max(spec.batch_sizes)
        for name, predictor in predictors.items():
            if device == "gpu":
                texts = [dev.inputs[i % len(dev)] for i in range(bs)]
                # Weights included, as on the CPU: the variant's own tensors, then its batch's peak above them.
                peak = cuda_peak_memory_mb(model_call(predictor, predictor.encode(texts, spec.seq_len)),
                                           resident_mb=module_mb(getattr(predictor, "model", None)))
            else:
                peak = measure_fresh_process("slimbert.benchmark.runner:peak_memory_probe", {
                    "store_dir": str(settings.store_dir), "family": spec.family, "variant": name,
                    "batch_size": bs, "seq_len": spec.seq_len})
            rows[name].peak_memory = PeakMemoryRecord(**peak.to_dict(), batch_size=bs)
            tick()
    measured = MeasurementSettings(
        torch_threads=env.get("torch_threads"), batch_sizes=spec.batch_sizes, seq_len=spec.seq_len, runs=spec.runs,
        warmup=spec.warmup, order="interleaved", timer="time.perf_counter; CUDA synchronized")
    return DeviceRun(device=device, environment=env, variants=rows, measured=measured)


def _device(device: str) -> Device:
    if device == "cpu":
        return "cpu"
    if device == "gpu":
        return "gpu"
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


def run_device_benchmark(settings: Settings, spec: BenchmarkSpec, device: str, progress: Progress | None = None
                         ) -> dict[str, Any]:
    """:func:`benchmark_device` as the JSON a Celery task returns (what benchmark.jobs stores per device)."""
    return benchmark_device(settings, spec, _device(device), progress).model_dump(mode="json")
