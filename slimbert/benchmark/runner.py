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
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from slimbert.benchmark.environment import describe_environment
from slimbert.benchmark.flops import computed_gflops, measured_gflops
from slimbert.benchmark.latency import LatencyStats, interleaved, throughput
from slimbert.benchmark.memory import cuda_peak_memory_mb, measure_fresh_process
from slimbert.benchmark.stats import macro_f1, mcnemar, paired_difference, wilson_interval
from slimbert.config import Settings
from slimbert.data import TextDataset, load_sst2
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Predictor
from slimbert.store.manifest import NAME_PATTERN, VariantManifest
from slimbert.store.store import VariantStore

log = logging.getLogger(__name__)

BASELINE = "baseline-fp32"
Progress = Callable[[float], None]


class BenchmarkSpec(BaseModel):
    """What to measure; validated before anything is queued."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(pattern=NAME_PATTERN)
    variants: list[str] | None = Field(default=None, description="default: every variant of the family")
    devices: list[Literal["cpu", "gpu"]] | None = Field(default=None, description="default: every live device")
    batch_sizes: list[int] = Field(default=[1, 8, 32, 64], min_length=1, max_length=8)
    seq_len: int | Literal["dynamic"] = Field(default=128, description="tokens, or 'dynamic': real dev sentences")
    runs: int = Field(default=20, ge=1, le=1000)
    warmup: int = Field(default=3, ge=0, le=100)
    accuracy: bool = True
    peak_memory: bool = True
    dev_examples: int | None = Field(default=None, ge=8, description="dev subset for accuracy; null = all 872")

    def model_post_init(self, _: Any) -> None:
        for bs in self.batch_sizes:
            if not 1 <= bs <= 256:
                raise ValueError(f"batch_sizes: {bs} is outside 1..256")
        if isinstance(self.seq_len, int) and not 8 <= self.seq_len <= 512:
            raise ValueError("seq_len: use 8..512 tokens or 'dynamic'")


def not_runnable_reason(manifest: VariantManifest, device: str) -> str | None:
    """Why a variant cannot run on ``device``, or None when it can."""
    if device == "gpu" and manifest.runtime == "onnxruntime":
        return "not runnable on this device: ONNX Runtime INT8 variants use the CPU execution provider"
    if device == "gpu" and manifest.runtime == "torch-inductor":
        return "not runnable on this device: the Inductor INT8 program is compiled for x86 CPUs (oneDNN)"
    if device == "cpu" and manifest.precision == "fp16":
        return "not runnable on this device: fp16 kernels target the GPU"
    if device == "gpu" and not torch.cuda.is_available():
        return "no CUDA device in this worker"
    return None


def _inputs(predictor: Predictor, texts: list[str], seq_len: int | str) -> dict[str, Any]:
    kind = "np" if predictor.runtime == "onnxruntime" else "pt"
    padding: Any = True if seq_len == "dynamic" else "max_length"
    max_length = 128 if seq_len == "dynamic" else int(seq_len)
    enc = dict(predictor.tokenizer(texts, padding=padding, truncation=True, max_length=max_length,  # type: ignore[attr-defined]
                                   return_tensors=kind))
    if kind == "np":
        names = predictor.input_names  # type: ignore[attr-defined]
        return {k: v.astype(np.int64) for k, v in enc.items() if k in names}
    return {k: v.to(predictor.device) for k, v in enc.items()}


def model_call(predictor: Predictor, enc: dict[str, Any]) -> Callable[[], object]:
    """A zero-argument callable that runs only the model on pre-tokenized inputs."""
    if predictor.runtime == "onnxruntime":
        session = predictor.session  # type: ignore[attr-defined]
        return lambda: session.run(["logits"], enc)
    model = predictor.model  # type: ignore[attr-defined]

    def run() -> object:
        with torch.inference_mode():
            return model(**enc).logits

    return run


def _gflops(predictor: Predictor, manifest: VariantManifest, enc: dict[str, Any], seq: int) -> dict[str, Any]:
    if predictor.runtime == "torch":
        try:
            one = {k: v[:1] for k, v in enc.items()}
            return {"value": round(measured_gflops(predictor.model, one), 4), "method": "measured"}  # type: ignore[attr-defined]
        except Exception as exc:  # the counter lacks formulas for some quantized ops
            log.info("flop counter failed on %s (%s); computing from the config", manifest.variant, exc)
    config = predictor.model.config if hasattr(predictor, "model") else _config(predictor)
    return {"value": round(computed_gflops(config, seq), 4), "method": "computed from the config"}


def _config(predictor: Predictor) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(predictor.tokenizer.name_or_path)  # type: ignore[attr-defined]


def _accuracy(predictor: Predictor, dev: TextDataset) -> tuple[list[int], float]:
    preds: list[int] = []
    start = time.perf_counter()
    for i in range(0, len(dev), 64):
        preds.extend(p.label_id for p in predictor.predict(dev.texts[i : i + 64]).predictions)
    return preds, time.perf_counter() - start


def peak_memory_probe(store_dir: str, family: str, variant: str, batch_size: int, seq_len: int | str) -> None:
    """Runs in a fresh process (see memory.measure_fresh_process): load one variant, run one batch."""
    store = VariantStore(Path(store_dir))
    manifest = store.manifest(family, variant)
    predictor = load_variant(manifest, store.variant_dir(family, variant), "cpu")
    texts = (["a gorgeous , witty , seductive movie ."] * batch_size)[:batch_size]
    model_call(predictor, _inputs(predictor, texts, seq_len))()


def run_device_benchmark(
    settings: Settings, spec: BenchmarkSpec, device: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Benchmark the spec's variants on ``device`` in this process; returns JSON."""
    store = VariantStore(settings.store_dir)
    manifests = {m.variant: m for m in store.manifests(spec.family)}
    names = spec.variants or sorted(manifests)
    missing = [n for n in names if n not in manifests]
    if missing:
        store.manifest(spec.family, missing[0])  # raises VariantNotFound listing what exists
    env = describe_environment()
    out: dict[str, Any] = {"device": device, "environment": env, "variants": {}}
    predictors: dict[str, Predictor] = {}
    for name in names:
        manifest = manifests[name]
        row: dict[str, Any] = {"runtime": manifest.runtime, "precision": manifest.precision,
                               "size_mb": round(manifest.size_mb, 3), "parameters": manifest.num_parameters}
        out["variants"][name] = row
        reason = not_runnable_reason(manifest, device)
        if reason:
            row["na"] = reason
            continue
        store.verify(manifest)
        start = time.perf_counter()
        predictors[name] = load_variant(manifest, store.variant_dir(spec.family, name), device)
        row["load_ms"] = round((time.perf_counter() - start) * 1000, 1)
    steps = max(1, (len(spec.batch_sizes) + 2) * max(1, len(predictors)))
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress:
            progress(min(100.0, 100.0 * done / steps))

    dev = load_sst2("validation", settings.sst2_dir, offline=settings.offline).subset(spec.dev_examples)
    if spec.accuracy:
        preds = {}
        for name, predictor in predictors.items():
            preds[name], seconds = _accuracy(predictor, dev)
            correct = sum(int(p == y) for p, y in zip(preds[name], dev.labels, strict=True))
            low, high = wilson_interval(correct, len(dev))
            out["variants"][name].update(
                accuracy=round(correct / len(dev), 4), accuracy_ci95=[round(low, 4), round(high, 4)],
                macro_f1=round(macro_f1(preds[name], dev.labels), 4), dev_examples=len(dev),
                eval_seconds=round(seconds, 2))
            tick()
        if BASELINE in preds:
            for name in preds:
                if name != BASELINE:
                    row = out["variants"][name]
                    row["mcnemar_vs_baseline"] = mcnemar(preds[name], preds[BASELINE], dev.labels).to_dict()
                    diff, margin = paired_difference(preds[name], preds[BASELINE], dev.labels)
                    row["paired_vs_baseline"] = {"difference": round(diff, 4), "margin95": round(margin, 4)}
    else:
        tick(len(predictors))

    for bs in spec.batch_sizes if predictors else []:
        texts = [dev.texts[i % len(dev)] for i in range(bs)]
        calls, tokenize_ms, seqs = {}, {}, {}
        for name, predictor in predictors.items():
            start = time.perf_counter()
            enc = _inputs(predictor, texts, spec.seq_len)
            tokenize_ms[name] = (time.perf_counter() - start) * 1000
            seqs[name] = int(enc["input_ids"].shape[1])
            calls[name] = model_call(predictor, enc)
            if bs == spec.batch_sizes[0]:
                out["variants"][name]["gflops_per_sequence"] = _gflops(predictor, manifests[name], enc, seqs[name])
        stats: dict[str, LatencyStats] = interleaved(calls, warmup=spec.warmup, runs=spec.runs,
                                                     device="cuda" if device == "gpu" else "cpu")
        for name, st in stats.items():
            out["variants"][name].setdefault("latency", {})[str(bs)] = {
                **st.to_dict(), "throughput_seq_s": round(throughput(bs, st), 2),
                "tokenize_ms": round(tokenize_ms[name], 3), "seq_len": seqs[name]}
        tick(len(predictors))

    if spec.peak_memory:
        bs = max(spec.batch_sizes)
        for name, predictor in predictors.items():
            if device == "gpu":
                enc = _inputs(predictor, [dev.texts[i % len(dev)] for i in range(bs)], spec.seq_len)
                peak = cuda_peak_memory_mb(model_call(predictor, enc))
            else:
                peak = measure_fresh_process("slimbert.benchmark.runner:peak_memory_probe", {
                    "store_dir": str(settings.store_dir), "family": spec.family, "variant": name,
                    "batch_size": bs, "seq_len": spec.seq_len})
            out["variants"][name]["peak_memory"] = {**peak.to_dict(), "batch_size": bs}
            tick()
    out["measured"] = {"torch_threads": env.get("torch_threads"),
                       "batch_sizes": spec.batch_sizes, "seq_len": spec.seq_len, "runs": spec.runs,
                       "warmup": spec.warmup, "order": "interleaved", "timer": "time.perf_counter; CUDA synchronized"}
    return out
