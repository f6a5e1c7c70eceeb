"""``load_variant``: the single point that turns a stored variant into a runnable predictor."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from slimbert.errors import SlimBertError
from slimbert.inference.predictor import BnbPredictor, InductorPredictor, OrtPredictor, Predictor, TorchPredictor
from slimbert.models import load_tokenizer
from slimbert.records import RUNTIMES
from slimbert.runtime.ort import ort_session, saturation_risk
from slimbert.runtime.shapes import from_pretrained_pruned
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
    manifest: VariantManifest, path: Path, device: str = "cpu", *, threads: int | None = None,
    ort_spinning: bool = False,
) -> Predictor:
    """Build the predictor the manifest's runtime calls for, on ``device`` ('cpu' or 'gpu').

    - ``onnxruntime``: ``model.onnx`` in a CPU session (INT8 variants);
    - ``torch``: rebuilt with ``from_pretrained_pruned`` in the manifest's precision (fp32, bf16, fp16),
      so head-, layer- and FFN-pruned checkpoints load with their own shapes;
    - ``bitsandbytes``: NF4 weights through ``runtime.nf4.load_nf4``;
    - ``torch-inductor``: ``model.pt2`` compiled by Inductor (``runtime.inductor.load_compiled``); the
      compilation happens here, before the predictor is returned, so no request pays for it.
    """
    tokenizer = load_tokenizer(str(path))
    labels = {int(k): v for k, v in manifest.labels.items()}
    if manifest.runtime == "onnxruntime":
        session = ort_session(path / "model.onnx", threads, spinning=ort_spinning)
        params = manifest.technique.params
        if why := saturation_risk(params.get("quantization", params)):  # autotune nests its candidate's params
            log.warning("%s/%s: %s", manifest.family, manifest.variant, why)
        return OrtPredictor(session, tokenizer, labels)
    if manifest.runtime == "torch":
        if manifest.precision not in _DTYPES:
            raise SlimBertError(
                f"precision {manifest.precision!r} of {manifest.family}/{manifest.variant} is not a torch dtype",
                hint=f"torch variants are one of: {', '.join(_DTYPES)}",
            )
        model = from_pretrained_pruned(AutoModelForSequenceClassification, path, dtype=_DTYPES[manifest.precision])
        return TorchPredictor(model, tokenizer, labels, device=_torch_device(device))
    if manifest.runtime == "bitsandbytes":
        from slimbert.runtime.nf4 import load_nf4  # bitsandbytes: seconds to import, only for NF4 variants

        torch_device = _torch_device(device)
        model = load_nf4(path, torch_device)
        return BnbPredictor(model, tokenizer, labels, device=torch_device)
    if manifest.runtime == "torch-inductor":
        from slimbert.runtime.inductor import load_compiled  # torchao and Inductor: only for these variants

        if _torch_device(device) != "cpu":
            raise SlimBertError(f"{manifest.family}/{manifest.variant} is an Inductor INT8 program for x86 CPUs",
                                hint="serve it on a CPU worker or the API")
        predictor = InductorPredictor(load_compiled(path), tokenizer, labels)
        predictor.predict(["warm up", "the compiler"])  # batch > 1: the general shape family
        predictor.predict(["warm up"])  # batch 1, which torch.compile specializes
        return predictor
    raise SlimBertError(
        f"runtime {manifest.runtime!r} of {manifest.family}/{manifest.variant} is not supported here",
        hint=f"supported runtimes: {', '.join(RUNTIMES)}",
    )
