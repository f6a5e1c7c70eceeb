"""Layer surgery: drop whole encoder layers from a model in memory (finding and reshaping them: runtime.shapes)."""
from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn
from transformers import PreTrainedModel

from slimbert.runtime.shapes import (
    INTERMEDIATE_SIZES_ATTR,
    PER_LAYER_CONFIG_ATTRS,
    encoder_layers,
    layer_container,
    record_ffn_widths,
)

logger = logging.getLogger(__name__)


def _renumber_layer_idx(layer: nn.Module, new_index: int) -> None:
    # Attention modules index KV caches by layer_idx; stale values would point past the cache.
    for module in layer.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            setattr(module, "layer_idx", new_index)  # noqa: B010 - nn.Module's typing rejects plain assignment


def drop_layers(model: PreTrainedModel, indices: Sequence[int]) -> PreTrainedModel:
    """Physically remove encoder layers ``indices`` from ``model`` in place and return it.

    Rebuilds the ``nn.ModuleList``, sets ``config.num_hidden_layers``, renumbers every ``layer_idx``
    attribute to 0..n-1, and remaps ``config.pruned_heads`` (and per-layer config lists such as
    ``intermediate_sizes``) to the new numbering so that the saved model reloads. Raises
    ``ValueError`` for out-of-range or duplicate indices and when asked to remove every layer.
    """
    layers = encoder_layers(model)
    n = len(layers)
    requested = [int(i) for i in indices]
    to_drop = set(requested)
    if len(to_drop) != len(requested):
        raise ValueError(f"duplicate layer indices in {requested}")
    bad = sorted(i for i in to_drop if not 0 <= i < n)
    if bad:
        raise ValueError(f"layer indices {bad} out of range for a model with {n} layers (0..{n - 1})")
    if len(to_drop) >= n:
        raise ValueError(f"cannot remove all {n} encoder layers; keep at least one")
    if not to_drop:
        return model

    kept = [i for i in range(n) if i not in to_drop]
    new_index = {old: new for new, old in enumerate(kept)}
    for new, old in enumerate(kept):
        _renumber_layer_idx(layers[old], new)
    owner, attr = layer_container(model)
    setattr(owner, attr, nn.ModuleList([layers[i] for i in kept]))

    config = model.config
    config.num_hidden_layers = len(kept)
    pruned = getattr(config, "pruned_heads", None) or {}
    config.pruned_heads = {
        new_index[int(layer)]: sorted(int(h) for h in heads)
        for layer, heads in pruned.items()
        if int(layer) in new_index
    }
    for name in PER_LAYER_CONFIG_ATTRS:
        values = getattr(config, name, None)
        if isinstance(values, list) and len(values) == n:
            setattr(config, name, [values[i] for i in kept])
    if getattr(config, INTERMEDIATE_SIZES_ATTR, None) is not None:
        record_ffn_widths(model)  # the layers left may now share one width
    logger.info("dropped encoder layers %s; %d remain", sorted(to_drop), len(kept))
    return model
