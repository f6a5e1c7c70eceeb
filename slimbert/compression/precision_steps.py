"""Precision transforms: each fp32 target gets the recipe's precision variants, named ``{structure}-{precision}``.

baseline-fp32 -> baseline-int8, pruned-fp32 -> pruned-int8 / pruned-int8-static / pruned-int8-qat /
pruned-int8-mixed / pruned-int4 / pruned-bf16, heads-fp32 -> heads-int8, ... Every variant is built from
the published fp32 variant's directory (so from exactly what is served) into a staging directory; the
orchestrator measures and publishes it. A step that cannot run here says why, never drops silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from slimbert.compression.inductor_int8 import quantize_inductor_int8
from slimbert.compression.mixed_int8 import quantize_mixed_int8
from slimbert.compression.nf4 import quantize_nf4
from slimbert.compression.onnx_int8 import PrecisionResult, quantize_dynamic_int8
from slimbert.compression.precision import qat_int8, quantize_static_int8, to_half
from slimbert.compression.recipe import Recipe
from slimbert.data import TextDataset, iter_batches
from slimbert.hardware import cpu_supports_bf16, inductor_int8_unavailable
from slimbert.records import FP32_SUFFIX, Method
from slimbert.runtime.shapes import from_pretrained_pruned


@dataclass(frozen=True)
class PrecisionStep:
    method: Method
    source: str
    variant: str

    @property
    def stage(self) -> str:
        return f"{self.method}:{self.variant}"


def half_dtype(recipe: Recipe, device: str) -> str:
    """The 16-bit type a half-precision step makes: ``auto`` is fp16 on a GPU worker, bf16 elsewhere."""
    assert recipe.precision is not None and recipe.precision.fp16_bf16 is not None
    dtype = recipe.precision.fp16_bf16.dtype
    return ("fp16" if device == "gpu" else "bf16") if dtype == "auto" else dtype


# (method, the recipe's precision field, the variant's suffix; "" for half precision: the dtype it makes).
_STEPS: tuple[tuple[Method, str, str], ...] = (
    ("int8-dynamic", "int8_dynamic", "int8"), ("int8-static", "int8_static", "int8-static"),
    ("int8-inductor", "int8_inductor", "int8-inductor"), ("int8-qat", "int8_qat", "int8-qat"),
    ("int8-mixed", "int8_mixed", "int8-mixed"), ("int4-nf4", "int4_nf4", "int4"), ("fp16-bf16", "fp16_bf16", ""),
)


def planned_precision(recipe: Recipe, device: str = "cpu") -> list[PrecisionStep]:
    """Every precision step of the recipe, in run order (targets in the order they are made)."""
    p = recipe.precision
    if p is None:
        return []
    steps: list[PrecisionStep] = []
    for source in recipe.precision_targets():
        structure = source.removesuffix(FP32_SUFFIX)
        for method, field, suffix in _STEPS:
            if getattr(p, field) is not None:
                suffix = suffix or half_dtype(recipe, device)
                steps.append(PrecisionStep(method, source, f"{structure}-{suffix}"))
    return steps


def _config(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((path / "config.json").read_text())
    return loaded


def num_layers(config: dict[str, Any]) -> int:
    """Encoder depth from config.json: ``num_hidden_layers``, or DistilBERT's ``n_layers``."""
    return int(config.get("num_hidden_layers", config.get("n_layers", 0)))


# Model types whose ONNX export holds control-flow subgraphs (If), which static quantization cannot take.
SUBGRAPH_EXPORTS = frozenset({"deberta-v2"})


def has_pruned_heads(path: Path) -> bool:
    return any(heads for heads in (_config(path).get("pruned_heads") or {}).values())


def cannot_run(recipe: Recipe, step: PrecisionStep, src: Path, device: str) -> str | None:
    """Why ``step`` (reading the fp32 variant at ``src``) cannot run on ``device``, or None when it can."""
    if step.method == "fp16-bf16":
        dtype = step.variant.rsplit("-", 1)[-1]
        if dtype == "fp16" and device != "gpu":
            return (f"fp16 needs a CUDA GPU worker and this job runs on {device} (CPU fp16 matmuls are slower "
                    "than fp32); use dtype 'auto' or 'bf16', or submit with device 'gpu'")
        if dtype == "bf16" and device != "gpu" and not cpu_supports_bf16():
            return ("no CUDA GPU and this CPU has no native bf16 (avx512_bf16 / amx_bf16): bf16 would be slower "
                    "than fp32 here")
    if step.method == "int8-inductor":
        return inductor_int8_unavailable()
    if step.method == "int8-static" and _config(src).get("model_type") in SUBGRAPH_EXPORTS:
        return ("DeBERTa-v2 exports to ONNX with If subgraphs (transformers scripts its relative-position "
                "helpers with torch.jit.script), and ONNX Runtime's static quantizer refuses graphs with "
                "subgraphs; dynamic INT8 (int8_dynamic), QAT and mixed INT8 work on it")
    if step.method == "int8-mixed":
        assert recipe.precision is not None and recipe.precision.int8_mixed is not None
        keep, layers = recipe.precision.int8_mixed.keep_fp32_layers, num_layers(_config(src))
        if keep >= layers:
            return (f"keep_fp32_layers is {keep} but {step.source} has {layers} encoder layers: nothing would be "
                    f"quantized; use at most {layers - 1}")
    return None


def build_precision(recipe: Recipe, step: PrecisionStep, src: Path, staged: Path, tokenizer: PreTrainedTokenizerBase,
                    train: TextDataset) -> tuple[PrecisionResult, dict[str, Any]]:
    """Write ``step``'s variant of the fp32 checkpoint at ``src`` into ``staged``; returns what was made and
    notes for the job record. Calibration and QAT read ``train`` only."""
    p = recipe.precision
    assert p is not None
    notes: dict[str, Any] = {}
    if step.method == "int8-dynamic":
        assert p.int8_dynamic is not None
        optimize = p.int8_dynamic.optimize
        if optimize and has_pruned_heads(src):
            # ORT's attention fusion takes one head count for the whole graph; ragged layers would be fused wrong.
            optimize = False
            notes["optimize_skipped"] = "the model has pruned heads (different head counts per layer)"
        made = quantize_dynamic_int8(src, staged, per_channel=p.int8_dynamic.per_channel,
                                     isa=p.int8_dynamic.isa, optimize=optimize)
    elif step.method == "int8-static":
        assert p.int8_static is not None
        texts = train.subset(p.int8_static.calibration_samples, recipe.data_seed + 1).inputs
        made = quantize_static_int8(src, staged, texts, method=p.int8_static.method,
                                    per_channel=p.int8_static.per_channel, max_length=recipe.eval_max_length,
                                    keep_ffn_output_fp32=p.int8_static.keep_ffn_output_fp32)
    elif step.method == "int8-inductor":
        assert p.int8_inductor is not None
        texts = train.subset(p.int8_inductor.calibration_samples, recipe.data_seed + 1).inputs
        made = quantize_inductor_int8(src, staged, texts, activations=p.int8_inductor.activations,
                                      max_autotune=p.int8_inductor.max_autotune, max_length=recipe.eval_max_length)
    elif step.method == "int8-qat":
        assert p.int8_qat is not None
        q = p.int8_qat
        model = from_pretrained_pruned(AutoModelForSequenceClassification, src)
        batches = iter_batches(tokenizer, train, batch_size=q.batch_size, max_length=q.max_length,
                               shuffle=True, seed=recipe.data_seed + 2, group_by_length=True)
        torch.manual_seed(recipe.data_seed)
        made = qat_int8(model, batches, q.steps, q.lr, staged, tokenizer_dir=src)
    elif step.method == "int8-mixed":
        assert p.int8_mixed is not None
        m = p.int8_mixed
        texts = train.subset(m.probe_examples, recipe.data_seed + 3).inputs
        made = quantize_mixed_int8(src, staged, texts, keep_fp32_layers=m.keep_fp32_layers,
                                   per_channel=m.per_channel, max_length=recipe.eval_max_length)
        # The job record shows the measured per-layer sensitivity and which layers stayed fp32.
        notes["fp32_layers"] = made.params["fp32_layers"]
        notes["layer_int8_sensitivity"] = made.params["layer_int8_sensitivity"]
    elif step.method == "int4-nf4":
        assert p.int4_nf4 is not None
        made = quantize_nf4(src, staged, p.int4_nf4.compute_dtype)
    else:
        made = to_half(src, staged, "fp16" if step.variant.endswith("-fp16") else "bf16")
    return made, notes
