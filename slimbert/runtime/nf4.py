"""Load NF4 (bitsandbytes 4-bit) checkpoints, head- and FFN-pruned ones included.

What is stored is what transformers itself writes for a 4-bit model: packed weights plus bitsandbytes'
quant-state tensors, and ``quantization_config`` in config.json. The model is rebuilt with
``pruned_skeleton`` (heads and per-layer FFN widths from the config), then every Linear layer outside
the skip list becomes a ``Linear4bit`` holding the stored blocks. ``compression.nf4`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import bitsandbytes as bnb
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from slimbert.runtime.shapes import pruned_skeleton, read_state_dict

BLOCKSIZE = 64  # transformers' and bitsandbytes' default NF4 block
# The 2-way head is tiny and decides the argmax: 4 bits there cost accuracy and save nothing.
SKIP_MODULES = ("classifier",)
# bitsandbytes 0.50 repacks a Linear4bit's weight for its fused AVX512-BF16 kernel at the first eval
# forward; the repacking needs out_features in blocks of 32 and in_features in whole quantization blocks
# (it asserts or fails to reshape otherwise). Pruned heads and FFN widths break both.
_CPU_PACK_BLOCK_N = 32
COMPUTE_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32}


def nf4_linear_names(model: nn.Module, skip: tuple[str, ...] = SKIP_MODULES) -> list[str]:
    """Every Linear layer outside ``skip``: the encoder's, and the pooler's, as transformers converts them."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)
            and not any(name == s or name.startswith(s + ".") for s in skip)]


def empty_linear4bit(lin: nn.Linear, compute_dtype: torch.dtype) -> bnb.nn.Linear4bit:
    # On the meta device: the weight is replaced right away, so nothing is allocated twice.
    return bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                             compute_dtype=compute_dtype, quant_type="nf4", device="meta")


def set_bias(q: bnb.nn.Linear4bit, values: torch.Tensor | None) -> None:
    if values is not None:  # built with bias=None otherwise
        q.bias = nn.Parameter(values.detach().float().clone(), requires_grad=False)


def fit_cpu_packing(model: nn.Module) -> int:
    """Keep layers whose shape the AVX512-BF16 repacking cannot take on the generic CPU path (the one
    every other CPU runs: dequantize, then matmul). Returns how many layers that is."""
    count = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit) and (m.out_features % _CPU_PACK_BLOCK_N or m.in_features % BLOCKSIZE):
            m.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_nf4(out_dir: str | Path, device: str = "cpu") -> PreTrainedModel:
    """Load a ``quantize_nf4`` variant as a runnable eval-mode model on ``device`` ('cpu' or 'cuda')."""
    path = Path(out_dir)
    qconfig = json.loads((path / "config.json").read_text()).get("quantization_config") or {}
    if qconfig.get("bnb_4bit_quant_type") != "nf4":
        raise ValueError(f"{path} holds no NF4 checkpoint (config.json has no nf4 quantization_config)")
    compute = getattr(torch, str(qconfig.get("bnb_4bit_compute_dtype", "float32")).removeprefix("torch."))
    model = pruned_skeleton(AutoModelForSequenceClassification, path)
    state = read_state_dict(path)
    quantized: set[str] = set()
    for name in nf4_linear_names(model, tuple(qconfig.get("llm_int8_skip_modules") or ())):
        lin = cast(nn.Linear, model.get_submodule(name))
        prefix = f"{name}.weight."
        stats = {k.removeprefix(prefix): state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        q = empty_linear4bit(lin, compute)
        q.weight = bnb.nn.Params4bit.from_prequantized(state.pop(f"{name}.weight"), stats, device="cpu", module=q)
        set_bias(q, state.pop(f"{name}.bias", None))
        model.set_submodule(name, q, strict=True)
        quantized |= {f"{name}.weight", f"{name}.bias"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - quantized:
        raise RuntimeError(f"NF4 checkpoint at {path} does not match the model rebuilt from its config: "
                           f"missing={sorted(set(missing) - quantized)[:10]} unexpected={list(unexpected)[:10]}")
    fit_cpu_packing(model)
    cast(nn.Module, model).to(device)  # transformers' typed wrapper of .to confuses mypy
    return model.eval()
