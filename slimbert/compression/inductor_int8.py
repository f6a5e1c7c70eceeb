"""INT8 through PyTorch 2 export quantization, compiled by TorchInductor onto oneDNN (AMX-INT8 or VNNI).

Why a second INT8 runtime: ONNX Runtime's MLAS runs its INT8 GEMMs on AVX-512 VNNI and never on AMX,
while oneDNN, to which Inductor lowers quantized linears, picks AMX-INT8 where the CPU has it
(``benchmarks/bench_arch_bert_base.py`` measures both against FP32 eager in one run).

The recipe: ``torch.export`` the fp32 model with dynamic batch and sequence dims, annotate it with
torchao's ``X86InductorQuantizer`` (int8 weights per channel; activations per tensor, calibrated on
train sentences or, with ``activations="dynamic"``, measured per batch), convert, drop the fp32
originals the quantized graph no longer reads, and save the program as ``model.pt2``. Loading compiles
it with ``torch.compile`` and Inductor's freezing (weights prepacked once for oneDNN), optionally
under bf16 autocast so the ops left unquantized (attention, softmax, LayerNorm) run in bf16 on AMX.
Compilation happens on the machine that serves, so the kernels match its CPU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.export import Dim
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from slimbert.compression.onnx_int8 import PrecisionResult, copy_tokenizer_files, list_files
from slimbert.data import Text, tokenize
from slimbert.hardware import has_vnni
from slimbert.records import Activations
from slimbert.runtime.inductor import COMPILE_FILE, PROGRAM_FILE
from slimbert.runtime.shapes import from_pretrained_pruned

log = logging.getLogger(__name__)

# Sizes the exported program accepts. Examples are traced at batch 2 so batch 1 stays symbolic
# (torch.export specializes dims seen at size 1).
MAX_BATCH, MAX_SEQ = 4096, 512
_EXAMPLE_BATCH, _EXAMPLE_SEQ = 2, 16


def _dynamic_shapes(names: Sequence[str], max_positions: int) -> dict[str, dict[int, Any]]:
    batch, seq = Dim("batch", min=1, max=MAX_BATCH), Dim("seq", min=2, max=min(MAX_SEQ, max_positions))
    return {name: {0: batch, 1: seq} for name in names}


class _Logits(torch.nn.Module):
    """The classifier with a plain tensor output: a saved program can only rebuild pytree types that
    torch.export knows how to deserialize, and transformers' ``SequenceClassifierOutput`` is not one."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, **{k: v for k, v in kwargs.items() if v is not None}).logits


def _is_float(node: object) -> bool:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return isinstance(val, torch.Tensor) and val.dtype.is_floating_point


class _FloatOnlyQuantizer(xiq.X86InductorQuantizer):
    """torchao's quantizer, with integer ops left alone.

    It annotates every add and mul, also integer ones: RoBERTa's position ids (a cumulative sum of the
    mask) and DeBERTa-v2's relative positions. Their histogram observers cannot calibrate integers
    (``"histogram_cpu" not implemented for 'Int'``), and quantizing an index would be wrong anyway; so an
    op whose output or an annotated input is not a float tensor keeps no annotation and runs as exported.
    """

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        model = super().annotate(model)
        for node in model.graph.nodes:
            ann = node.meta.get("quantization_annotation")
            if ann is None:
                continue
            if (ann.output_qspec is not None and not _is_float(node)) or any(
                    not _is_float(arg) for arg in ann.input_qspec_map):
                del node.meta["quantization_annotation"]
        return model


def _drop_unused_tensors(gm: torch.fx.GraphModule) -> int:
    """Delete parameters and buffers the graph never reads; returns how many.

    ``convert_pt2e`` adds the int8 weights as new constants but leaves the fp32 originals attached, and
    ``torch.export`` would save both: a file larger than the fp32 model.
    """
    used = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    dropped = 0
    for name, _ in [*gm.named_parameters(), *gm.named_buffers()]:
        if name in used:
            continue
        owner_path, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        if hasattr(owner, attr):
            delattr(owner, attr)
            dropped += 1
    return dropped


def quantize_inductor_int8(
    model_dir: str | Path,
    out_dir: str | Path,
    calibration_texts: Sequence[Text],
    *,
    activations: Activations = "static",
    max_autotune: bool = False,
    max_length: int = 128,
    batch_size: int = 16,
) -> PrecisionResult:
    """Quantize the fp32 checkpoint in ``model_dir`` and write ``model.pt2`` plus tokenizer and config.

    ``max_autotune`` asks the loader to let Inductor benchmark its own C++ GEMM template (AMX
    micro-kernels) against oneDNN for each linear and keep the faster. Loading then takes minutes
    instead of tens of seconds (each of the two shape families, batch 1 and larger, is tuned once; no
    later shape recompiles); docs/PERFORMANCE.md has the architecture benchmark's row with and without it.
    """
    src, out = Path(model_dir), Path(out_dir)
    if not calibration_texts:
        raise ValueError("calibration_texts is empty: give at least one sentence to calibrate on")
    model = from_pretrained_pruned(AutoModelForSequenceClassification, src).eval()
    tokenizer = AutoTokenizer.from_pretrained(src)
    encoded = tokenizer(["calibration"] * _EXAMPLE_BATCH, padding="max_length", max_length=_EXAMPLE_SEQ,
                        truncation=True, return_tensors="pt")
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    example = {k: encoded[k] for k in names}
    shapes = _dynamic_shapes(names, int(model.config.max_position_embeddings))
    with torch.no_grad():
        graph = torch.export.export(_Logits(model), (), example, dynamic_shapes=shapes).module()
        quantizer = _FloatOnlyQuantizer()
        # Without VNNI, u8 x s8 products are summed in saturating int16 (vpmaddubsw): 7-bit activations keep
        # the sums in range, as torchao advises for such CPUs (AVX2-only EPYCs and older Xeons).
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(
            is_dynamic=activations == "dynamic", reduce_range=not has_vnni()))
        prepared = prepare_pt2e(graph, quantizer)
        for start in range(0, len(calibration_texts), batch_size):
            enc = tokenize(tokenizer, list(calibration_texts[start : start + batch_size]), padding=True,
                           truncation=True, max_length=max_length, return_tensors="pt")
            prepared(**{k: enc[k] for k in names})
        converted = convert_pt2e(prepared)
        dropped = _drop_unused_tensors(converted)
        program = torch.export.export(converted, (), example, dynamic_shapes=shapes)
    out.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out / PROGRAM_FILE)
    (out / COMPILE_FILE).write_text(json.dumps({"max_autotune": max_autotune}) + "\n")
    model.config.save_pretrained(out)  # for FLOPs, depth and labels; the weights live in model.pt2
    copy_tokenizer_files(src, out)
    log.info("inductor int8: %d calibration sentences, %d fp32 tensors dropped", len(calibration_texts), dropped)
    return PrecisionResult(
        runtime="torch-inductor", precision="int8", files=list_files(out),
        params={"quantizer": "torchao X86InductorQuantizer", "activations": activations, "max_autotune": max_autotune,
                "weights": "int8 per channel, symmetric", "calibration_samples": len(calibration_texts),
                "inputs": names, "torch": torch.__version__},
    )
