"""NF4 (bitsandbytes 4-bit) variants of any fp32 checkpoint, head- and FFN-pruned ones included.

transformers quantizes to 4 bits inside ``from_pretrained``, which rebuilds the architecture from the
config alone and so cannot give FFN-pruned layers their own widths. Here the model is rebuilt with
``pruned_skeleton`` (heads and per-layer FFN widths from the config) and its Linear layers are swapped for
``bitsandbytes.nn.Linear4bit`` directly. What is stored is what transformers itself writes for a 4-bit
model: packed weights plus bitsandbytes' quant-state tensors, and ``quantization_config`` in config.json,
so a variant whose layers all share one FFN width also loads with plain ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

import bitsandbytes as bnb
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

from slimbert.compression.onnx_int8 import PrecisionResult, copy_tokenizer_files, list_files, prepare_out_dir
from slimbert.runtime.nf4 import (
    BLOCKSIZE,
    COMPUTE_DTYPES,
    SKIP_MODULES,
    empty_linear4bit,
    fit_cpu_packing,
    load_nf4,
    nf4_linear_names,
    set_bias,
)
from slimbert.runtime.shapes import from_pretrained_pruned


def bnb_config(compute_dtype: Literal["bf16", "fp32"]) -> BitsAndBytesConfig:
    """The ``quantization_config`` stored in config.json: what transformers would load the variant with."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"unknown compute dtype {compute_dtype!r}; allowed: 'bf16', 'fp32'")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=COMPUTE_DTYPES[compute_dtype],
                              llm_int8_skip_modules=list(SKIP_MODULES))


def quantize_linear(lin: nn.Linear, compute_dtype: torch.dtype, device: str = "cpu") -> bnb.nn.Linear4bit:
    """``lin`` as an NF4 ``Linear4bit`` (blocks of 64 weights, one absmax each) on ``device``."""
    q = empty_linear4bit(lin, compute_dtype)
    q.weight = bnb.nn.Params4bit(lin.weight.detach().float().contiguous(), requires_grad=False,
                                 quant_type="nf4", blocksize=BLOCKSIZE, module=q,
                                 compress_statistics=False)  # as bnb_config: bnb_4bit_use_double_quant=False
    set_bias(q, lin.bias)
    return q.to(device)  # bitsandbytes quantizes when the weight moves to its device


def quantize_nf4(model_dir: str | Path, out_dir: str | Path,
                 compute_dtype: Literal["bf16", "fp32"] = "bf16") -> PrecisionResult:
    """Quantize every Linear layer but the classifier of the checkpoint at ``model_dir`` to NF4.

    Works for pruned checkpoints (pruned heads, per-layer FFN widths). The stored form is reloaded with
    ``load_nf4`` before the result is returned, so a variant that would not load is never declared.
    """
    out = prepare_out_dir(out_dir)
    config = bnb_config(compute_dtype)
    model = from_pretrained_pruned(AutoModelForSequenceClassification, model_dir, dtype=torch.float32)
    names = nf4_linear_names(model)
    for name in names:
        lin = cast(nn.Linear, model.get_submodule(name))
        model.set_submodule(name, quantize_linear(lin, COMPUTE_DTYPES[compute_dtype]), strict=True)
    model.config.quantization_config = config.to_dict()
    model.save_pretrained(out)
    copy_tokenizer_files(Path(model_dir), out)
    reloaded = load_nf4(out)
    params: dict[str, Any] = {"quant_type": "nf4", "compute_dtype": compute_dtype, "blocksize": BLOCKSIZE,
                              "skip_modules": list(SKIP_MODULES), "storage": "nf4", "nf4_layers": len(names),
                              "generic_cpu_path_layers": fit_cpu_packing(reloaded)}
    return PrecisionResult(runtime="bitsandbytes", precision="int4", files=list_files(out), params=params)


