"""Precision stages beyond dynamic INT8: static INT8, bf16/fp16 and INT8 quantization-aware training (NF4: nf4.py).

Each function reads a Hugging Face fp32 sequence-classification checkpoint directory (or, for QAT, a
model in memory) and writes a variant into an empty output directory, returning a ``PrecisionResult``.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import onnx
import torch
import torch.nn.functional as F
from datasets import Dataset
from onnxruntime.quantization import QuantFormat, QuantizationMode
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoCalibrationConfig
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from slimbert.compression.onnx_int8 import (
    Isa,
    PrecisionResult,
    copy_tokenizer_files,
    export_onnx,
    list_files,
    prepare_out_dir,
    qconfig_params,
    quantization_config,
    quantize_dynamic_int8,
)
from slimbert.data import Text, tokenize
from slimbert.hardware import detect_isa
from slimbert.records import CalibrationMethod
from slimbert.runtime.shapes import from_pretrained_pruned

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

_TORCH_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _dtype(name: str, allowed: Sequence[str]) -> torch.dtype:
    if name not in allowed:
        raise ValueError(f"unknown dtype {name!r}; allowed: {', '.join(repr(a) for a in allowed)}")
    return _TORCH_DTYPES[name]


def quantize_static_int8(
    model_dir: str | Path,
    out_dir: str | Path,
    calibration_texts: Sequence[Text],
    *,
    method: CalibrationMethod = "minmax",
    per_channel: bool | None = None,
    max_length: int = 128,
    percentile: float = 99.999,
    keep_ffn_output_fp32: bool = True,
) -> PrecisionResult:
    """Export to ONNX; quantize weights and activations to INT8 with ranges calibrated on the texts.

    Uses optimum's ``ORTQuantizer`` with ``AutoCalibrationConfig.<method>`` and the CPU's
    ``AutoQuantizationConfig`` preset switched to QOperator format (QLinearMatMul): in
    benchmarks/bench_ort_int8_options.py --static on bert-base it ran 4-6% faster than QDQ on this
    2-core AVX512-VNNI CPU (114 vs 118 ms at batch 1, 2.87 vs 3.04 s at batch 32; both slower than
    dynamic INT8). QDQ would be the choice for non-CPU execution providers. Only MatMul is
    quantized: quantizing the mask ``Where``,
    LayerNorm or Gather (optimum's default QDQ list) crushes BERT accuracy for little speed. Of the
    MatMuls, only those with a constant weight are quantized, as ONNX Runtime's dynamic path does
    (``MatMulConstBOnly``, which its static path leaves off): the attention products Q·Kᵀ and P·V
    multiply two activations, and one per-tensor uint8 range for softmax probabilities loses the most.
    ``keep_ffn_output_fp32`` also leaves each layer's FFN output product in fp32: its input, the GELU
    output, carries the outliers one static range cannot cover (Bondarenko et al., 2021). On the 4-layer
    MiniLM (AVX2 EPYC, per-channel weights, fp32 0.8647) min-max static INT8 scored 0.8452 with every
    MatMul quantized, 0.8544 with the attention products fp32, and 0.8670 with the FFN outputs fp32 too.
    """
    if not calibration_texts:
        raise ValueError("calibration_texts is empty; pass a few hundred representative texts")
    out = prepare_out_dir(out_dir)
    isa = detect_isa()
    qconfig = quantization_config(isa, is_static=True, per_channel=per_channel, operators=["MatMul"])
    qconfig.format, qconfig.mode = QuantFormat.QOperator, QuantizationMode.QLinearOps
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    with tempfile.TemporaryDirectory(prefix="slimbert-static-") as tmp:
        fp32_path = export_onnx(model_dir, Path(tmp) / "fp32")

        graph = onnx.load(str(fp32_path), load_external_data=False).graph
        input_names = [i.name for i in graph.input]
        qconfig.nodes_to_exclude = activation_matmuls(graph) + (ffn_output_matmuls(graph) if keep_ffn_output_fp32
                                                                 else [])
        # The histogram calibrators (entropy, percentile) stack every batch, so all need one shape: pad to
        # the longest text. Harmless because only MatMul inputs are calibrated and masked attention
        # probabilities are exactly zero.
        encoded = tokenize(
            tokenizer, list(calibration_texts), truncation=True, max_length=max_length, padding="longest"
        )
        dataset = Dataset.from_dict({name: encoded[name] for name in input_names})
        if method == "minmax":
            calibration = AutoCalibrationConfig.minmax(dataset)
        elif method == "entropy":
            # optimum's default (128 bins for 128 levels) leaves one candidate threshold, i.e. minmax;
            # a finer histogram lets the KL search clip outliers. 512 not 2048: ORT's search is quadratic
            # in bins and 2048 took 25 s per tensor set even on a tiny model.
            calibration = AutoCalibrationConfig.entropy(dataset, num_bins=512, num_quantized_bins=128)
        elif method == "percentile":
            calibration = AutoCalibrationConfig.percentiles(dataset, percentile=percentile)
        else:
            raise ValueError(f"unknown method {method!r}; allowed: 'minmax', 'entropy', 'percentile'")
        quantizer = ORTQuantizer(fp32_path, config=config)
        ranges = quantizer.fit(
            dataset=dataset,
            calibration_config=calibration,
            onnx_augmented_model_name=Path(tmp) / "augmented.onnx",
            operators_to_quantize=qconfig.operators_to_quantize,
        )
        quantizer.quantize(
            quantization_config=qconfig, save_dir=out, file_suffix=None, calibration_tensors_range=ranges
        )

    copy_tokenizer_files(Path(model_dir), out)
    params: dict[str, Any] = {
        "isa": isa,
        "calibration_method": method,
        "calibration_samples": len(calibration_texts),
        "max_length": max_length,
        "fp32_matmuls": len(qconfig.nodes_to_exclude),
        "keep_ffn_output_fp32": keep_ffn_output_fp32,
        **({"percentile": percentile} if method == "percentile" else {}),
        **qconfig_params(qconfig),
    }
    logger.info("static int8 (%s, %d texts) -> %s", method, len(calibration_texts), out)
    return PrecisionResult(runtime="onnxruntime", precision="int8", files=list_files(out), params=params)


def activation_matmuls(graph: Any) -> list[str]:
    """Names of the MatMul nodes of an ONNX graph whose second input is not a constant weight."""
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] not in constants]


# optimum's exporter names nodes after the torch module path; the FFN output is layer.N.output.dense
# (the attention output projection is layer.N.attention.output.dense).
_FFN_OUTPUT = re.compile(r"/layer\.\d+/output/dense/MatMul$")


def ffn_output_matmuls(graph: Any) -> list[str]:
    """Names of the MatMul nodes of each encoder layer's FFN output projection."""
    return [node.name for node in graph.node if node.op_type == "MatMul" and _FFN_OUTPUT.search(node.name)]


def to_half(model_dir: str | Path, out_dir: str | Path, dtype: Literal["bf16", "fp16"]) -> PrecisionResult:
    """Save the checkpoint with every weight in bf16 or fp16 (torch runtime).

    bf16 is the CPU choice when ``cpu_supports_bf16()``; fp16 is for CUDA (CPU fp16 matmuls are slow).
    Reload with ``from_pretrained(out_dir, dtype="auto")`` (or ``layers.from_pretrained_pruned(..., dtype=...)``
    for FFN-pruned models) to keep the stored dtype.
    """
    torch_dtype = _dtype(dtype, ("bf16", "fp16"))
    out = prepare_out_dir(out_dir)
    # from_pretrained_pruned: head-, layer- and FFN-pruned checkpoints keep their shapes.
    model = from_pretrained_pruned(AutoModelForSequenceClassification, model_dir, dtype=torch_dtype)
    model.save_pretrained(out)
    copy_tokenizer_files(Path(model_dir), out)
    params = {"dtype": str(torch_dtype).removeprefix("torch."), "load_kwargs": {"dtype": "auto"}}
    return PrecisionResult(runtime="torch", precision=dtype, files=list_files(out), params=params)


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    # Straight-through estimator: forward gives q, backward passes the gradient of x unchanged.
    return x + (q - x).detach()


# ORT's symmetric int8 weight range: full (-127..127), or 7-bit (-64..64) with reduce_range, which x86
# CPUs without VNNI need: their u8*s8 kernel (vpmaddubsw) sums pairs in int16 and saturates otherwise.
FULL_RANGE_QMAX, REDUCED_RANGE_QMAX = 127, 64


def fake_quant_weight(w: torch.Tensor, qmax: int = FULL_RANGE_QMAX) -> torch.Tensor:
    """Per-output-channel symmetric int8 (-qmax..qmax, scale max|w|/qmax), as ORT quantizes MatMul weights."""
    scale = w.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / float(qmax)
    return _ste(w, torch.clamp(torch.round(w / scale), -qmax, qmax) * scale)


def fake_quant_activation(x: torch.Tensor) -> torch.Tensor:
    """Per-tensor asymmetric uint8 over the tensor's own range, exactly ONNX ``DynamicQuantizeLinear``."""
    xd = x.detach()
    rmin = torch.clamp(xd.min(), max=0.0)
    rmax = torch.clamp(xd.max(), min=0.0)
    scale = (rmax - rmin) / 255.0
    if float(scale) == 0.0:
        return x
    zero_point = torch.clamp(torch.round(-rmin / scale), 0, 255)
    q = torch.clamp(torch.round(xd / scale) + zero_point, 0, 255)
    return _ste(x, (q - zero_point) * scale)


class FakeQuantLinear(nn.Module):
    """An ``nn.Linear`` whose input and weight pass through int8 fake quantization."""

    def __init__(self, linear: nn.Linear, weight_qmax: int = FULL_RANGE_QMAX) -> None:
        super().__init__()
        self.linear, self.weight_qmax = linear, weight_qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = fake_quant_weight(self.linear.weight, self.weight_qmax)
        return F.linear(fake_quant_activation(x), weight, self.linear.bias)


def _named_linears(model: nn.Module, skip_modules: Sequence[str]) -> list[tuple[nn.Module, str, nn.Linear]]:
    found = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and not any(s in full.split(".") for s in skip_modules):
                found.append((module, child_name, child))
    return found


def prepare_qat(model: nn.Module, skip_modules: Sequence[str] = ("classifier", "pooler"),
                weight_qmax: int = FULL_RANGE_QMAX) -> int:
    """Wrap each ``nn.Linear`` outside ``skip_modules`` in ``FakeQuantLinear`` in place; return the count."""
    linears = _named_linears(model, skip_modules)
    for parent, name, linear in linears:
        setattr(parent, name, FakeQuantLinear(linear, weight_qmax))
    return len(linears)


def fold_fake_quant(model: nn.Module) -> int:
    """Swap each ``FakeQuantLinear`` for its Linear, weights snapped to the int8 grid; return the count."""
    wrappers = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, FakeQuantLinear)
    ]
    with torch.no_grad():
        for parent, name, wrapper in wrappers:
            wrapper.linear.weight.copy_(fake_quant_weight(wrapper.linear.weight, wrapper.weight_qmax))
            setattr(parent, name, wrapper.linear)
    return len(wrappers)


def qat_int8(
    model: PreTrainedModel,
    train_batches: Iterable[Mapping[str, torch.Tensor]],
    steps: int,
    lr: float,
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path | None = None,
    skip_modules: Sequence[str] = ("classifier", "pooler"),
    weight_decay: float = 0.0,
    isa: Isa = "auto",
) -> PrecisionResult:
    """INT8 quantization-aware fine-tuning, exported as an ONNX Runtime dynamic-INT8 model.

    Route: every encoder ``nn.Linear`` (not ``skip_modules``, which ORT keeps fp32 anyway as Gemm) is
    wrapped with straight-through fake quantization that mirrors ORT's dynamic IntegerOps kernels:
    weights per-output-channel symmetric int8 (scale = max|w| / 127), activations per-tensor asymmetric
    uint8 with the range of the current tensor (what ``DynamicQuantizeLinear`` computes at run time).
    The model is fine-tuned for ``steps`` AdamW steps on ``train_batches`` (cycled; dicts with
    ``labels``). Then the fake quantization is folded into fp32 weights that lie exactly on the int8
    grid, the model is saved, exported to ONNX and quantized with ``quantize_dynamic_int8(per_channel=True,
    isa=isa, signed_weights=True)`` restricted to MatMul: ORT recovers the same scales, so the s8 weights
    equal the learned ones and the artifact computes what the fake-quant model computed. ``isa`` ('auto': this
    CPU's) sets the weight grid: 7-bit (-64..64) for 'avx2', whose kernel saturates on full-range
    weights (measured here: 15% of the logit spread off on a tiny BERT, against 1% with 7 bits), and
    full range otherwise. An 'avx2' artifact runs correctly everywhere; a full-range one only on CPUs
    with VNNI (or ARM).

    ``tokenizer_dir`` supplies tokenizer files to copy beside the model.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = prepare_out_dir(out_dir)
    chosen: Isa = cast(Isa, detect_isa()) if isa == "auto" else isa
    weight_qmax = REDUCED_RANGE_QMAX if chosen == "avx2" else FULL_RANGE_QMAX
    wrapped = prepare_qat(model, skip_modules=skip_modules, weight_qmax=weight_qmax)
    if wrapped == 0:
        raise ValueError(f"no nn.Linear outside {list(skip_modules)} to quantize")
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay
    )
    model.train()
    losses: list[float] = []
    batches = iter(train_batches)
    cached: list[Mapping[str, torch.Tensor]] = []
    for step in range(steps):
        try:
            batch = next(batches)
            cached.append(batch)
        except StopIteration:
            if not cached:
                raise ValueError("train_batches is empty") from None
            batch = cached[step % len(cached)]
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    fold_fake_quant(model)

    with tempfile.TemporaryDirectory(prefix="slimbert-qat-") as tmp:
        folded_dir = Path(tmp)
        model.save_pretrained(folded_dir)
        if tokenizer_dir is not None:
            copy_tokenizer_files(Path(tokenizer_dir), folded_dir)
        result = quantize_dynamic_int8(
            folded_dir, out, per_channel=True, isa=chosen, operators=["MatMul"], signed_weights=True
        )
    result.params.update(
        {
            "qat": True,
            "steps": steps,
            "lr": lr,
            "fake_quant_modules": wrapped,
            "weight_qmax": weight_qmax,
            "skip_modules": list(skip_modules),
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "route": "fake-quant fine-tune -> fold to int8-grid fp32 -> ONNX -> ORT dynamic int8 (MatMul)",
        }
    )
    return result
