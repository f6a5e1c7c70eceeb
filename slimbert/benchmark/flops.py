"""Inference FLOPs per sequence, two ways: counted from a real forward pass, and from the config.

Both count a multiply-add as 2 FLOPs and ignore element-wise work (biases, GELU, softmax,
LayerNorm), matching ``torch.utils.flop_counter``. Report them with their labels, ``measured``
and ``computed``: they answer different questions. The measured count sees exactly the kernels that
ran (including work spent on padding) but misses ops the counter has no formula for, such as
dynamically quantized linears; the computed count is the architecture's cost for ``seq_len`` real
tokens whatever runtime executes it.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

logger = logging.getLogger(__name__)

MEASURED_LABEL = "measured"
COMPUTED_LABEL = "computed"

# Model inputs that change the loss, not the forward cost, and must not be passed to the model.
_NON_INPUT_KEYS = frozenset({"labels", "label", "idx"})


def _cpu_sdpa_flops(
    query_shape: tuple[int, ...], key_shape: tuple[int, ...], value_shape: tuple[int, ...],
    *args: Any, out_shape: Any = None, **kwargs: Any,
) -> int:
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def _custom_mapping() -> dict[Any, Any]:
    # torch's counter registers the CUDA SDPA kernels but not the CPU flash kernel that BERT's
    # 'sdpa' attention dispatches to on CPU; without this the attention matmuls count as zero.
    mapping: dict[Any, Any] = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        mapping[cpu_flash] = _cpu_sdpa_flops
    return mapping


def _batch_size(batch: Mapping[str, Any] | torch.Tensor) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            return int(value.shape[0])
    raise ValueError("batch holds no tensor to take the batch size from")


def measured_gflops(model: torch.nn.Module, batch: Mapping[str, Any] | torch.Tensor) -> float:
    """GFLOPs per sequence counted by ``FlopCounterMode`` over one no-grad forward pass (label 'measured').

    ``batch`` is a tokenizer-style mapping (``labels`` is dropped) or a tensor of input ids. Padded
    positions are computed by the model and therefore counted.
    """
    size = _batch_size(batch)
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with torch.no_grad(), counter:
        if isinstance(batch, torch.Tensor):
            model(batch)
        else:
            model(**{k: v for k, v in batch.items() if k not in _NON_INPUT_KEYS})
    total = counter.get_total_flops()
    logger.debug("measured %d FLOPs for a batch of %d", total, size)
    return total / size / 1e9


def _get(config: Any, *names: str, default: Any = None) -> Any:
    """Read the first present attribute/key among ``names`` (BERT and DistilBERT spellings)."""
    for name in names:
        if isinstance(config, Mapping):
            if name in config and config[name] is not None:
                return config[name]
        elif getattr(config, name, None) is not None:
            return getattr(config, name)
    return default


def _num_labels(config: Any) -> int:
    explicit = _get(config, "num_labels")
    if explicit is not None:
        return int(explicit)
    id2label = _get(config, "id2label")
    return len(id2label) if id2label else 2


def _pruned_heads_per_layer(config: Any) -> dict[int, set[int]]:
    raw = _get(config, "pruned_heads", default={}) or {}
    # JSON round-trips turn the layer keys into strings.
    return {int(layer): {int(h) for h in heads} for layer, heads in dict(raw).items()}


def computed_gflops(config: Any, seq_len: int, *, include_head: bool = True) -> float:
    """GFLOPs per sequence of ``seq_len`` tokens from a BERT-family config (label 'computed').

    ``config`` is a ``PretrainedConfig`` or a mapping with BERT (``hidden_size``...) or DistilBERT
    (``dim``...) names. Per layer, with ``a`` the width left by head pruning:
    Q, K, V and output projections ``4 * 2*s*h*a``; attention scores and context ``2 * 2*s*s*a``;
    feed-forward ``2 * 2*s*h*i``. ``config.pruned_heads`` shrinks ``a`` per layer and a per-layer
    ``config.intermediate_sizes`` list overrides ``i``. Embedding lookups are free; with
    ``include_head`` the pooler (``2*h*h``, first token only) and classifier (``2*h*labels``) count.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    hidden = int(_get(config, "hidden_size", "dim"))
    layers = int(_get(config, "num_hidden_layers", "n_layers"))
    heads = int(_get(config, "num_attention_heads", "n_heads"))
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
    head_dim = hidden // heads
    default_inter = int(_get(config, "intermediate_size", "hidden_dim"))
    inter_sizes = _get(config, "intermediate_sizes")
    if inter_sizes is None:
        inter_sizes = [default_inter] * layers
    elif len(inter_sizes) != layers:
        raise ValueError(f"intermediate_sizes has {len(inter_sizes)} entries for {layers} layers")
    pruned = _pruned_heads_per_layer(config)

    s, h = seq_len, hidden
    total = 0
    for layer in range(layers):
        kept_heads = heads - len(pruned.get(layer, set()))
        a = kept_heads * head_dim
        inter = int(inter_sizes[layer])
        total += 4 * 2 * s * h * a  # query, key, value, attention output
        total += 2 * 2 * s * s * a  # Q K^T and softmax(.) V
        total += 2 * 2 * s * h * inter  # FFN up and down
    if include_head:
        total += 2 * h * h  # pooler (BERT) or pre-classifier (DistilBERT) on the first token
        total += 2 * h * _num_labels(config)
    return total / 1e9
