"""Encoder structure and the loading of structurally pruned checkpoints, for every runtime.

A pruned BERT no longer matches what its ``BertConfig`` describes: heads are gone (``config.pruned_heads``
covers that and ``from_pretrained`` replays it), layers are gone (``num_hidden_layers`` covers that), and
FFN blocks have per-layer widths, which ``BertConfig`` cannot express. We record those widths in a
custom ``config.intermediate_sizes`` list (saved in ``config.json`` like any extra attribute) and
:func:`from_pretrained_pruned` rebuilds the shapes before loading the weights strictly. Compression
(which makes such checkpoints) and inference (which serves them) both read them through here.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, PreTrainedModel
from transformers.modeling_utils import no_init_weights
from transformers.pytorch_utils import find_pruneable_heads_and_indices, prune_linear_layer

logger = logging.getLogger(__name__)

INTERMEDIATE_SIZES_ATTR = "intermediate_sizes"
"""Config attribute holding each encoder layer's FFN width once FFN pruning made them differ."""

# Config attributes holding one entry per encoder layer; they must shrink with the layer list.
PER_LAYER_CONFIG_ATTRS = (INTERMEDIATE_SIZES_ATTR, "layer_types")

# Model types whose transformers classes cannot prune heads: DeBERTa-v2's ``_prune_heads`` raises
# NotImplementedError, and ``from_pretrained`` calls it to replay ``config.pruned_heads``. For these we slice
# the heads ourselves (:func:`prune_disentangled_heads`) and :func:`pruned_skeleton` replays them.
OWN_HEAD_PRUNING = frozenset({"deberta-v2"})


def ffn_width_attr(config: Any) -> str:
    """The config attribute holding the FFN width: ``hidden_dim`` for DistilBERT, ``intermediate_size`` elsewhere."""
    return "hidden_dim" if getattr(config, "model_type", None) == "distilbert" else "intermediate_size"


def from_pretrained_rebuilds(config: Any) -> bool:
    """True when plain ``from_pretrained`` rebuilds a checkpoint with this config (a ``PretrainedConfig``
    or config.json's dict): no per-layer FFN widths, and no pruned heads that only we can replay."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    if get(INTERMEDIATE_SIZES_ATTR):
        return False
    heads = get("pruned_heads") or {}
    return not (get("model_type") in OWN_HEAD_PRUNING and any(heads.values()))


def prune_disentangled_heads(attention: nn.Module, heads: Iterable[int]) -> set[int]:
    """Remove ``heads`` (original numbering) from a DeBERTa-v2 attention block, as ``BertAttention.prune_heads``
    does for BERT: slice the query/key/value (and relative-position) projections' rows and the output
    projection's columns, and shrink the head count the forward reshapes with. Returns the heads pruned now.

    With ``share_att_key`` the relative-position terms reuse the sliced query/key projections; without it
    ``pos_key_proj`` / ``pos_query_proj`` carry one block per head too and are sliced alike.
    """
    # Any: the head counts and projections are plain attributes nn.Module's typing cannot see.
    inner: Any = attention.get_submodule("self")
    output: Any = attention.get_submodule("output")
    done: set[int] = set(getattr(attention, "pruned_heads", set()))
    new, index = find_pruneable_heads_and_indices(list(heads), int(inner.num_attention_heads),
                                                  int(inner.attention_head_size), done)
    if not new:
        return set()
    for name in ("query_proj", "key_proj", "value_proj", "pos_key_proj", "pos_query_proj"):
        linear = getattr(inner, name, None)
        if isinstance(linear, nn.Linear):
            setattr(inner, name, prune_linear_layer(linear, index))
    output.dense = prune_linear_layer(output.dense, index, dim=1)
    inner.num_attention_heads = int(inner.num_attention_heads) - len(new)
    inner.all_head_size = int(inner.attention_head_size) * inner.num_attention_heads
    setattr(attention, "pruned_heads", done | set(new))  # noqa: B010 - read by alive_heads() and a later call
    return set(new)


def _base(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) else model


def layer_container(model: nn.Module) -> tuple[nn.Module, str]:
    """The module owning the encoder's ModuleList and the attribute name it lives under."""
    base = _base(model)
    # BERT, RoBERTa, ELECTRA, MiniLM keep layers at encoder.layer; DistilBERT at transformer.layer.
    for owner_name in ("encoder", "transformer"):
        owner = getattr(base, owner_name, None)
        if isinstance(owner, nn.Module) and isinstance(getattr(owner, "layer", None), nn.ModuleList):
            return owner, "layer"
    raise ValueError(
        f"{type(model).__name__} has no encoder layer list at base_model.encoder.layer or "
        "base_model.transformer.layer; only BERT-style encoders are supported"
    )


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's ``nn.ModuleList`` of transformer layers (``base_model.encoder.layer`` for BERT)."""
    owner, attr = layer_container(model)
    layers = getattr(owner, attr)
    assert isinstance(layers, nn.ModuleList)
    return layers


def ffn_linears(layer: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """The (up, down) projections of a layer's feed-forward block: BERT-style or DistilBERT-style."""
    intermediate, output = getattr(layer, "intermediate", None), getattr(layer, "output", None)
    if intermediate is not None and output is not None:
        up, down = getattr(intermediate, "dense", None), getattr(output, "dense", None)
    else:
        ffn = getattr(layer, "ffn", None)
        up, down = getattr(ffn, "lin1", None), getattr(ffn, "lin2", None)
    if not isinstance(up, nn.Linear) or not isinstance(down, nn.Linear):
        raise ValueError(f"cannot find the feed-forward Linear layers of {type(layer).__name__}")
    return up, down


def set_ffn_linears(layer: nn.Module, up: nn.Linear, down: nn.Linear) -> None:
    """Replace a layer's FFN projections (the counterpart of :func:`ffn_linears`)."""
    intermediate, output = getattr(layer, "intermediate", None), getattr(layer, "output", None)
    if isinstance(intermediate, nn.Module) and isinstance(output, nn.Module):
        intermediate.dense, output.dense = up, down
    else:
        ffn = layer.get_submodule("ffn")
        ffn.lin1, ffn.lin2 = up, down


def ffn_widths(model: nn.Module) -> list[int]:
    """The FFN (intermediate) width of each encoder layer of ``model``."""
    return [ffn_linears(layer)[0].out_features for layer in encoder_layers(model)]


def record_ffn_widths(model: PreTrainedModel) -> list[int]:
    """Write the FFN widths of ``model``'s layers into its config, and return them.

    One shared width goes into ``config.intermediate_size`` (DistilBERT: ``hidden_dim``), so plain
    ``from_pretrained`` rebuilds the model; only widths that differ per layer need
    ``config.intermediate_sizes`` (and ``from_pretrained_pruned``).
    """
    sizes = ffn_widths(model)
    config = model.config
    if len(set(sizes)) == 1:
        setattr(config, ffn_width_attr(config), sizes[0])
        if hasattr(config, INTERMEDIATE_SIZES_ATTR):
            delattr(config, INTERMEDIATE_SIZES_ATTR)
    else:
        setattr(config, INTERMEDIATE_SIZES_ATTR, sizes)
    return sizes


def resize_ffn_to_config(model: nn.Module) -> nn.Module:
    """Give each layer's FFN the width recorded in ``config.intermediate_sizes`` (no-op when absent).

    The new Linear layers hold uninitialised values: this exists to shape a model before a state dict
    with per-layer FFN widths is loaded into it.
    """
    sizes = getattr(getattr(model, "config", None), INTERMEDIATE_SIZES_ATTR, None)
    if sizes is None:
        return model
    layers = encoder_layers(model)
    if len(sizes) != len(layers):
        raise ValueError(
            f"config.{INTERMEDIATE_SIZES_ATTR} has {len(sizes)} entries, the model {len(layers)} layers"
        )
    for layer, size in zip(layers, sizes, strict=True):
        up, down = ffn_linears(layer)
        if up.out_features == size:
            continue
        kw: dict[str, Any] = {"device": up.weight.device, "dtype": up.weight.dtype}
        new_up = nn.Linear(up.in_features, int(size), bias=up.bias is not None, **kw)
        new_down = nn.Linear(int(size), down.out_features, bias=down.bias is not None, **kw)
        set_ffn_linears(layer, new_up, new_down)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``save_pretrained`` directory (safetensors, sharded or not, or legacy .bin)."""
    path = Path(path)
    single = path / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(path / shard)))
        return state
    legacy = path / "pytorch_model.bin"
    if legacy.is_file():
        loaded = torch.load(legacy, map_location="cpu", weights_only=True)
        assert isinstance(loaded, dict)
        return loaded
    raise FileNotFoundError(f"no model.safetensors, safetensors index or pytorch_model.bin in {path}")


def pruned_skeleton(model_cls: Any, path: str | Path, *, attn_implementation: str | None = None) -> PreTrainedModel:
    """The architecture of the checkpoint at ``path``, pruned heads and per-layer FFN widths included.

    Built from its config (which replays ``config.pruned_heads``) with FFN widths from
    ``config.intermediate_sizes``; the parameters are uninitialised, for a state dict to be loaded into.
    """
    config_class = getattr(model_cls, "config_class", None) or AutoConfig
    config = config_class.from_pretrained(str(path))
    own_heads: dict[int, list[int]] = {}
    if config.model_type in OWN_HEAD_PRUNING:
        # Construction would replay config.pruned_heads through transformers, which cannot: we do it below.
        own_heads = {int(k): [int(h) for h in v] for k, v in (config.pruned_heads or {}).items() if v}
        config.pruned_heads = {}
    kwargs: dict[str, Any] = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    # Skipping random init is safe: callers overwrite every parameter.
    with no_init_weights():
        if isinstance(model_cls, type) and issubclass(model_cls, PreTrainedModel):
            model = model_cls._from_config(config, **kwargs)
        else:
            model = model_cls.from_config(config, **kwargs)
    if own_heads:
        layers = encoder_layers(model)
        for layer, heads in own_heads.items():
            prune_disentangled_heads(layers[layer].get_submodule("attention"), heads)
        model.config.pruned_heads = own_heads
    resize_ffn_to_config(model)
    return cast(PreTrainedModel, model)


def from_pretrained_pruned(
    model_cls: Any,
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load a model saved with ``save_pretrained`` after head, layer and/or FFN pruning.

    ``model_cls`` is a concrete class (``BertForSequenceClassification``) or an Auto class
    (``AutoModelForSequenceClassification``). The model is ``pruned_skeleton`` and the weights are
    loaded strictly, so every parameter comes from the checkpoint and none is silently re-initialised.
    Works for unpruned checkpoints too. Returns the model in eval mode.
    """
    path = Path(path)
    model = pruned_skeleton(model_cls, path, attn_implementation=attn_implementation)

    missing, unexpected = model.load_state_dict(read_state_dict(path), strict=False)
    # save_pretrained omits tied copies (e.g. an MLM decoder sharing the word embeddings).
    tied = [str(k) for k in (getattr(model, "_tied_weights_keys", None) or [])]
    untied_missing = [k for k in missing if not any(k.endswith(t) for t in tied)]
    if unexpected or untied_missing:
        raise RuntimeError(
            f"checkpoint at {path} does not match the model rebuilt from its config: "
            f"missing={untied_missing[:10]} unexpected={list(unexpected)[:10]}"
        )
    if missing:
        model.tie_weights()
    if dtype is not None:
        cast(nn.Module, model).to(dtype)  # transformers' typed wrapper of .to confuses mypy
    return model.eval()
