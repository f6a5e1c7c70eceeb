"""NF4 (bitsandbytes 4-bit) variants of any fp32 checkpoint, head- and FFN-pruned ones included.

transformers quantizes to 4 bits inside ``from_pretrained``, which rebuilds the architecture from the
config alone and so cannot give FFN-pruned layers their own widths. Here the model is rebuilt with
``pruned_skeleton`` (heads and per-layer FFN widths from the config) and its Linear layers are swapped for
``bitsandbytes.nn.Linear4bit`` directly. What is stored is what transformers itself writes for a 4-bit
model: packed weights plus bitsandbytes' quant-state tensors, and ``quantization_config`` in config.json,
so a variant whose layers all share one FFN width also loads with plain ``from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import nn

from slimbert.compression.layers import from_pretrained_pruned, pruned_skeleton, read_state_dict
from slimbert.compression.onnx_int8 import PrecisionResult, copy_tokenizer_files, list_files, prepare_out_dir

if TYPE_CHECKING:
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig, PreTrainedModel

BLOCKSIZE = 64  # transformers' and bitsandbytes' default NF4 block
# The 2-way head is tiny and decides the argmax: 4 bits there cost accuracy and save nothing.
SKIP_MODULES = ("classifier",)
# bitsandbytes 0.50 repacks a Linear4bit's weight for its fused AVX512-BF16 kernel at the first eval
# forward; the repacking needs out_features in blocks of 32 and in_features in whole quantization blocks
# (it asserts or fails to reshape otherwise). Pruned heads and FFN widths break both.
_CPU_PACK_BLOCK_N = 32
_COMPUTE_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32}


def bnb_config(compute_dtype: Literal["bf16", "fp32"]) -> BitsAndBytesConfig:
    """The ``quantization_config`` stored in config.json: what transformers would load the variant with."""
    from transformers import BitsAndBytesConfig

    if compute_dtype not in _COMPUTE_DTYPES:
        raise ValueError(f"unknown compute dtype {compute_dtype!r}; allowed: 'bf16', 'fp32'")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=_COMPUTE_DTYPES[compute_dtype],
                              llm_int8_skip_modules=list(SKIP_MODULES))


def nf4_linear_names(model: nn.Module, skip: tuple[str, ...] = SKIP_MODULES) -> list[str]:
    """Every Linear layer outside ``skip``: the encoder's, and the pooler's, as transformers converts them."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)
            and not any(name == s or name.startswith(s + ".") for s in skip)]


def _empty_linear4bit(lin: nn.Linear, compute_dtype: torch.dtype) -> bnb.nn.Linear4bit:
    import bitsandbytes as bnb

    # On the meta device: the weight is replaced right away, so nothing is allocated twice.
    return bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                             compute_dtype=compute_dtype, quant_type="nf4", device="meta")


def _set_bias(q: bnb.nn.Linear4bit, values: torch.Tensor | None) -> None:
    if values is not None:  # built with bias=None otherwise
        q.bias = nn.Parameter(values.detach().float().clone(), requires_grad=False)


def quantize_linear(lin: nn.Linear, compute_dtype: torch.dtype, device: str = "cpu") -> bnb.nn.Linear4bit:
    """``lin`` as an NF4 ``Linear4bit`` (blocks of 64 weights, one absmax each) on ``device``."""
    import bitsandbytes as bnb

    q = _empty_linear4bit(lin, compute_dtype)
    q.weight = bnb.nn.Params4bit(lin.weight.detach().float().contiguous(), requires_grad=False,
                                 quant_type="nf4", blocksize=BLOCKSIZE, module=q,
                                 compress_statistics=False)  # as bnb_config: bnb_4bit_use_double_quant=False
    _set_bias(q, lin.bias)
    return q.to(device)  # bitsandbytes quantizes when the weight moves to its device


def fit_cpu_packing(model: nn.Module) -> int:
    """Keep layers whose shape the AVX512-BF16 repacking cannot take on the generic CPU path (the one
    every other CPU runs: dequantize, then matmul). Returns how many layers that is."""
    import bitsandbytes as bnb

    count = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit) and (m.out_features % _CPU_PACK_BLOCK_N or m.in_features % BLOCKSIZE):
            m.support_avx512bf16_for_cpu = False
            count += 1
    return count


def quantize_nf4(model_dir: str | Path, out_dir: str | Path,
                 compute_dtype: Literal["bf16", "fp32"] = "bf16") -> PrecisionResult:
    """Quantize every Linear layer but the classifier of the checkpoint at ``model_dir`` to NF4.

    Works for pruned checkpoints (pruned heads, per-layer FFN widths). The stored form is reloaded with
    ``load_nf4`` before the result is returned, so a variant that would not load is never declared.
    """
    from transformers import AutoModelForSequenceClassification

    out = prepare_out_dir(out_dir)
    config = bnb_config(compute_dtype)
    model = from_pretrained_pruned(AutoModelForSequenceClassification, model_dir, dtype=torch.float32)
    names = nf4_linear_names(model)
    for name in names:
        lin = cast(nn.Linear, model.get_submodule(name))
        model.set_submodule(name, quantize_linear(lin, _COMPUTE_DTYPES[compute_dtype]), strict=True)
    model.config.quantization_config = config.to_dict()
    model.save_pretrained(out)
    copy_tokenizer_files(Path(model_dir), out)
    reloaded = load_nf4(out)
    params: dict[str, Any] = {"quant_type": "nf4", "compute_dtype": compute_dtype, "blocksize": BLOCKSIZE,
                              "skip_modules": list(SKIP_MODULES), "storage": "nf4", "nf4_layers": len(names),
                              "generic_cpu_path_layers": fit_cpu_packing(reloaded)}
    return PrecisionResult(runtime="bitsandbytes", precision="int4", files=list_files(out), params=params)


def load_nf4(out_dir: str | Path, device: str = "cpu") -> PreTrainedModel:
    """Load a ``quantize_nf4`` variant as a runnable eval-mode model on ``device`` ('cpu' or 'cuda')."""
    import bitsandbytes as bnb
    from transformers import AutoModelForSequenceClassification

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
        q = _empty_linear4bit(lin, compute)
        q.weight = bnb.nn.Params4bit.from_prequantized(state.pop(f"{name}.weight"), stats, device="cpu", module=q)
        _set_bias(q, state.pop(f"{name}.bias", None))
        model.set_submodule(name, q, strict=True)
        quantized |= {f"{name}.weight", f"{name}.bias"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - quantized:
        raise RuntimeError(f"NF4 checkpoint at {path} does not match the model rebuilt from its config: "
                           f"missing={sorted(set(missing) - quantized)[:10]} unexpected={list(unexpected)[:10]}")
    fit_cpu_packing(model)
    cast(nn.Module, model).to(device)  # transformers' typed wrapper of .to confuses mypy
    return model.eval()
