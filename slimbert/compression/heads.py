"""Attention-head and FFN-neuron importance and structured pruning for BERT-style encoders.

Head importance follows Michel et al. (2019), "Are Sixteen Heads Really Better than One?": the
magnitude of dL/d(head mask) accumulated over batches, L2-normalised within each layer. FFN neurons are
scored by weight norm or by first-order Taylor importance |activation * gradient|.

Pruning is physical: Linear layers are sliced, so the model gets smaller and faster. Head pruning goes
through ``model.prune_heads`` (recorded in ``config.pruned_heads``); FFN pruning records the new width in
``config.intermediate_size`` while the layers share one, so plain ``from_pretrained`` reloads the model,
and per-layer widths in ``config.intermediate_sizes`` otherwise (reload with ``layers.from_pretrained_pruned``).

Importance is computed with ``torch.autograd.grad`` rather than ``backward()`` so that the caller's
parameter ``.grad`` buffers (and therefore its optimizer) are never touched.
"""
from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import prune_linear_layer

from slimbert.runtime.shapes import (
    OWN_HEAD_PRUNING,
    encoder_layers,
    ffn_linears,
    prune_disentangled_heads,
    record_ffn_widths,
    set_ffn_linears,
)

logger = logging.getLogger(__name__)

FfnMethod = Literal["weight_norm", "gradient"]
FFN_METHODS: tuple[str, ...] = get_args(FfnMethod)
FfnScope = Literal["per_layer", "global"]
FFN_SCOPES: tuple[str, ...] = get_args(FfnScope)


def _num_heads(model: PreTrainedModel) -> int:
    config = model.config
    n = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    if not isinstance(n, int):
        raise ValueError(f"{type(model).__name__}'s config has no num_attention_heads")
    return n


def _attention(layer: nn.Module) -> nn.Module:
    attention = getattr(layer, "attention", None)
    # BERT-style and DistilBERT attention track pruned_heads; DeBERTa-v2's (self.query_proj) gets it when pruned.
    disentangled = hasattr(getattr(attention, "self", None), "query_proj")
    if not isinstance(attention, nn.Module) or not (hasattr(attention, "pruned_heads") or disentangled):
        raise ValueError(f"{type(layer).__name__} has no prunable attention module")
    return attention


def _pruned_heads(layer: nn.Module) -> set[int]:
    return {int(h) for h in getattr(_attention(layer), "pruned_heads", ())}


def _head_mask_target(layer: nn.Module) -> nn.Module:
    """The self-attention module: BertSelfAttention (RoBERTa's, ELECTRA's), DeBERTa-v2's
    DisentangledSelfAttention, or DistilBERT's attention itself."""
    attention = _attention(layer)
    inner = getattr(attention, "self", None)
    return inner if isinstance(inner, nn.Module) else attention


def _mask_heads(target: nn.Module, mask: Tensor) -> Any:
    """Hook ``mask`` (shape ``[1, heads, 1, 1]``) into ``target``: through its own ``head_mask`` argument, or,
    for attention without one (DeBERTa-v2), by scaling each head's slice of the context it returns. Both give
    the same gradient: the context of a head is ``(m * P) V = m * (P V)``. Returns the hook's handle."""
    if "head_mask" in inspect.signature(target.forward).parameters:

        def inject(_m: nn.Module, args: Any, kwargs: Any) -> Any:
            return args, {**kwargs, "head_mask": mask}

        return target.register_forward_pre_hook(inject, with_kwargs=True)

    def scale(_m: nn.Module, _args: Any, out: Any) -> Any:
        context, *rest = out
        b, t, _ = context.shape
        masked = (context.view(b, t, mask.shape[1], -1) * mask.view(1, 1, -1, 1)).view(b, t, -1)
        return (masked, *rest)

    return target.register_forward_hook(scale)


def alive_heads(model: PreTrainedModel) -> Tensor:
    """Boolean ``[num_layers, num_heads]``: True where a head has not been pruned (original numbering)."""
    layers = encoder_layers(model)
    alive = torch.ones(len(layers), _num_heads(model), dtype=torch.bool)
    for i, layer in enumerate(layers):
        for h in _pruned_heads(layer):
            alive[i, h] = False
    return alive


def count_encoder_parameters(model: nn.Module) -> int:
    """Number of parameters in the encoder layers (embeddings, pooler and classifier excluded)."""
    return sum(p.numel() for p in encoder_layers(model).parameters())


def _to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _limited(batches: Iterable[dict[str, Tensor]], max_batches: int | None) -> Iterator[dict[str, Tensor]]:
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
    for n, batch in enumerate(batches):
        if max_batches is not None and n >= max_batches:
            return
        if "labels" not in batch:
            raise ValueError("importance batches need 'labels' so the model returns a loss")
        yield batch


@contextmanager
def _scoring_mode(model: PreTrainedModel, eager: bool = False) -> Iterator[None]:
    """Eval mode (no dropout noise in the scores), optionally eager attention; both restored afterwards."""
    was_training = model.training
    config = model.config
    old_attn = getattr(config, "_attn_implementation", None)
    switch = eager and old_attn is not None and old_attn != "eager"
    model.eval()
    try:
        # BERT picks its attention class at construction and its SDPA class falls back to eager when
        # given a head_mask; models that dispatch per call read the config, so point that at eager.
        if switch:
            config._attn_implementation = "eager"
        with torch.enable_grad():
            yield
    finally:
        if switch:
            config._attn_implementation = old_attn
        model.train(was_training)


def head_importance(
    model: PreTrainedModel,
    batches: Iterable[dict[str, Tensor]],
    max_batches: int | None = None,
    normalize: bool = True,
) -> Tensor:
    """Michel et al. (2019) head importance, shape ``[num_layers, num_heads]`` in original head numbering.

    Each batch (with ``labels``) runs with a per-layer ``head_mask`` of ones that requires grad, handed to
    every self-attention module through the model's own ``head_mask`` argument, and |dL/dmask| is summed
    over batches. Per-layer masks (rather than one model-level tensor) keep this working once layers hold
    different numbers of heads. Already pruned heads score 0. With ``normalize`` each layer's scores are
    divided by their L2 norm, as in the paper's code.
    """
    layers = encoder_layers(model)
    alive = alive_heads(model)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    scores = torch.zeros(alive.shape, dtype=torch.float32)
    seen = 0
    with _scoring_mode(model, eager=True):
        for batch in _limited(batches, max_batches):
            masks = [
                torch.ones(1, int(alive[i].sum()), 1, 1, device=device, dtype=dtype, requires_grad=True)
                for i in range(len(layers))
            ]
            handles = [_mask_heads(_head_mask_target(layer), mask) for layer, mask in zip(layers, masks, strict=True)]
            try:
                loss = model(**_to_device(batch, device)).loss
            finally:
                for handle in handles:
                    handle.remove()
            grads = torch.autograd.grad(loss, masks, allow_unused=True)
            if any(g is None for g in grads):
                raise RuntimeError(
                    f"{type(model).__name__} ignored head_mask; head importance needs eager attention"
                )
            for i, grad in enumerate(grads):
                scores[i, alive[i]] += grad.detach().abs().flatten().float().cpu()
            seen += 1
    if seen == 0:
        raise ValueError("head_importance got no batches")
    if normalize:
        scores = scores / (scores.norm(p=2, dim=-1, keepdim=True) + 1e-20)
    return scores


def ffn_importance(
    model: PreTrainedModel,
    method: str = "weight_norm",
    batches: Iterable[dict[str, Tensor]] | None = None,
    max_batches: int | None = None,
) -> list[Tensor]:
    """Per-layer importance of each intermediate (FFN) neuron, one 1-D tensor per layer.

    ``weight_norm``: ||row i of the up projection|| * ||column i of the down projection||; the product,
    because a neuron's contribution to the output scales with both. ``gradient``: first-order Taylor
    importance sum |activation * dL/dactivation| over tokens and ``batches`` (which need ``labels``).
    """
    if method not in FFN_METHODS:
        raise ValueError(f"unknown FFN importance method {method!r}; allowed: {', '.join(FFN_METHODS)}")
    layers = encoder_layers(model)
    if method == "weight_norm":
        out = []
        for layer in layers:
            up, down = ffn_linears(layer)
            out.append((up.weight.detach().norm(dim=1) * down.weight.detach().norm(dim=0)).float().cpu())
        return out
    if batches is None:
        raise ValueError("ffn_importance(method='gradient') needs batches")

    device = next(model.parameters()).device
    scores = [torch.zeros(ffn_linears(layer)[0].out_features) for layer in layers]
    seen = 0
    with _scoring_mode(model):
        for batch in _limited(batches, max_batches):
            acts: list[Tensor] = []

            def capture(_m: nn.Module, args: tuple[Tensor, ...], acts: list[Tensor] = acts) -> None:
                acts.append(args[0])

            def ensure_graph(_m: nn.Module, _args: Any, out: Tensor) -> Tensor | None:
                # A frozen model builds no graph; make the embeddings a leaf so activations get one.
                return out.detach().requires_grad_() if not out.requires_grad else None

            handles = [ffn_linears(layer)[1].register_forward_pre_hook(capture) for layer in layers]
            handles.append(model.get_input_embeddings().register_forward_hook(ensure_graph))
            try:
                loss = model(**_to_device(batch, device)).loss
            finally:
                for handle in handles:
                    handle.remove()
            grads = torch.autograd.grad(loss, acts)
            for i, (act, grad) in enumerate(zip(acts, grads, strict=True)):
                scores[i] += (act.detach() * grad).abs().flatten(0, -2).sum(0).float().cpu()
            seen += 1
    if seen == 0:
        raise ValueError("ffn_importance got no batches")
    return scores


def prune_heads(model: PreTrainedModel, heads_to_prune: dict[int, list[int]]) -> PreTrainedModel:
    """Remove attention heads (original numbering) through ``model.prune_heads``; returns the model.

    The model records them in ``config.pruned_heads``, which ``from_pretrained`` replays (DeBERTa-v2, which
    transformers cannot prune: sliced by ``runtime.shapes``, replayed by ``from_pretrained_pruned``). Raises
    ``ValueError`` for out-of-range indices or a request that would leave a layer with no head.
    """
    layers = encoder_layers(model)
    n_heads = _num_heads(model)
    clean: dict[int, list[int]] = {}
    for layer_index, heads in heads_to_prune.items():
        if not 0 <= layer_index < len(layers):
            raise ValueError(f"layer {layer_index} out of range for {len(layers)} layers")
        bad = [h for h in heads if not 0 <= h < n_heads]
        if bad:
            raise ValueError(f"head indices {bad} out of range 0..{n_heads - 1} in layer {layer_index}")
        already = _pruned_heads(layers[layer_index])
        if already | set(heads) >= set(range(n_heads)):
            raise ValueError(f"pruning heads {sorted(heads)} would leave layer {layer_index} with no head")
        new = sorted(set(heads) - already)
        if new:
            clean[layer_index] = new
    if clean and model.config.model_type in OWN_HEAD_PRUNING:
        # transformers cannot prune these heads; record them as model.prune_heads would (runtime.shapes replays).
        recorded = {int(k): set(v) for k, v in (model.config.pruned_heads or {}).items()}
        for layer_index, heads in clean.items():
            prune_disentangled_heads(layers[layer_index].get_submodule("attention"), heads)
            recorded[layer_index] = recorded.get(layer_index, set()) | set(heads)
        model.config.pruned_heads = {k: sorted(v) for k, v in sorted(recorded.items())}
    elif clean:
        model.prune_heads(clean)
    if clean:
        logger.info("pruned heads %s", clean)
    return model


def prune_ffn(model: PreTrainedModel, keep: Mapping[int, Tensor | Sequence[int]]) -> PreTrainedModel:
    """Keep only neurons ``keep[layer]`` (current numbering) of each listed layer's FFN; returns the model.

    Slices the up projection's rows and the down projection's columns, then records the widths in the
    config (``layers.record_ffn_widths``) so the saved model can be rebuilt.
    """
    layers = encoder_layers(model)
    for layer_index, indices in keep.items():
        if not 0 <= layer_index < len(layers):
            raise ValueError(f"layer {layer_index} out of range for {len(layers)} layers")
        up, down = ffn_linears(layers[layer_index])
        index = torch.as_tensor(indices, dtype=torch.long).flatten().unique(sorted=True)
        if index.numel() == 0:
            raise ValueError(f"layer {layer_index}: keep at least one FFN neuron")
        if index.numel() != torch.as_tensor(indices).numel():
            raise ValueError(f"layer {layer_index}: duplicate FFN indices")
        if index.min() < 0 or index.max() >= up.out_features:
            raise ValueError(f"layer {layer_index}: FFN indices out of range 0..{up.out_features - 1}")
        if index.numel() == up.out_features:
            continue
        index = index.to(up.weight.device)
        set_ffn_linears(
            layers[layer_index], prune_linear_layer(up, index, dim=0), prune_linear_layer(down, index, dim=1)
        )
    logger.info("FFN widths now %s", record_ffn_widths(model))
    return model


def select_heads_to_prune(importance: Tensor, alive: Tensor, count: int) -> dict[int, list[int]]:
    """The ``count`` least important alive heads, ranked across all layers, keeping one head per layer.

    Returns fewer than ``count`` heads when the one-head-per-layer floor makes more impossible.
    """
    remaining = alive.sum(dim=1).tolist()
    chosen: dict[int, list[int]] = {}
    candidates = [(float(importance[i, h]), i, h) for i, h in alive.nonzero().tolist()]
    for _score, i, h in sorted(candidates):
        if count <= 0:
            break
        if remaining[i] > 1:
            chosen.setdefault(i, []).append(h)
            remaining[i] -= 1
            count -= 1
    return chosen


def per_layer_cuts(sizes: Sequence[int], prune_count: int) -> list[int]:
    """Neurons to cut from each layer: the same fraction of each width, at least one neuron left."""
    total = sum(sizes)
    # Rounded per layer, not to an exact total: an exact total would have to cut equal layers unequally.
    # Half up (not Python's half-to-even), so a cut does not depend on the parity of what was cut before.
    return [min(math.floor(prune_count * n / total + 0.5), n - 1) for n in sizes] if total else []


def select_ffn_to_keep(scores: list[Tensor], prune_count: int, scope: str = "per_layer") -> dict[int, Tensor]:
    """Indices to keep per layer after pruning ``prune_count`` more of the lowest-scored FFN neurons.

    ``scope='per_layer'`` cuts each layer the same fraction of its width, rounded per layer, so layers
    of one width keep one width (and the model plain ``from_pretrained`` compatibility); the total cut
    may then differ from ``prune_count`` by up to half a neuron per layer. ``'global'`` ranks all neurons
    together and cuts exactly ``prune_count``. Every layer keeps at least one neuron.
    """
    if scope not in FFN_SCOPES:
        raise ValueError(f"unknown FFN pruning scope {scope!r}; allowed: {', '.join(FFN_SCOPES)}")
    sizes = [s.numel() for s in scores]
    total = sum(sizes)
    prune_count = max(0, min(prune_count, total - len(sizes)))
    if scope == "per_layer":
        cuts = per_layer_cuts(sizes, prune_count)
    else:
        remaining, cuts = list(sizes), [0] * len(sizes)
        flat = sorted((float(v), i) for i, s in enumerate(scores) for v in s.tolist())
        for _value, i in flat:
            if sum(cuts) >= prune_count:
                break
            if remaining[i] > 1:
                remaining[i] -= 1
                cuts[i] += 1
    keep: dict[int, Tensor] = {}
    for i, (s, cut) in enumerate(zip(scores, cuts, strict=True)):
        if cut:
            keep[i] = torch.topk(s, s.numel() - cut).indices.sort().values
    return keep
