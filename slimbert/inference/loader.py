"""``load_variant``: the single point that turns a stored variant into a runnable predictor."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from slimbert.errors import SlimBertError
from slimbert.inference.predictor import OrtPredictor, Predictor, TorchPredictor
from slimbert.models import load_tokenizer
from slimbert.store.manifest import VariantManifest

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _torch_device(device: str) -> str:
    if device in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise SlimBertError("CUDA is not available in this process", hint="serve this variant on a GPU worker")
        return "cuda"
    return "cpu"


def load_variant(
    manifest: VariantManifest, path: Path, device: str = "cpu", *, threads: int | None = None
) -> Predictor:
    """Build the predictor the manifest's runtime calls for, on ``device`` ('cpu' or 'gpu')."""
    tokenizer = load_tokenizer(str(path))
    labels = {int(k): v for k, v in manifest.labels.items()}
    if manifest.runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path / "model.onnx"), options, providers=["CPUExecutionProvider"])
        return OrtPredictor(session, tokenizer, labels)
    if manifest.runtime == "torch":
        dtype = _DTYPES.get(manifest.precision, torch.float32)
        model = AutoModelForSequenceClassification.from_pretrained(str(path), torch_dtype=dtype)
        return TorchPredictor(model, tokenizer, labels, device=_torch_device(device))
    raise SlimBertError(
        f"runtime {manifest.runtime!r} of {manifest.family}/{manifest.variant} is not supported here",
        hint="supported runtimes: torch, onnxruntime",
    )
