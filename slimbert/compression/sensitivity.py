"""Layer sensitivity by ablation, and the choice of which encoder layers to drop.

Sensitivity: remove one encoder layer at a time, evaluate, and record how much accuracy falls against the
full model. Layers whose removal costs least are the first candidates for layer dropping (the
"sensitivity" strategy); "top" and "alternate" are the fixed strategies of Sajjad et al. (2020) and
DistilBERT-style every-other-layer students.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from transformers import PreTrainedModel

from slimbert.compression.layers import drop_layers
from slimbert.runtime.shapes import encoder_layers

logger = logging.getLogger(__name__)

Evaluate = Callable[[PreTrainedModel], tuple[float, float]]
"""Returns (score, loss) of a model on a fixed evaluation set: the split's primary metric (accuracy for a
balanced task, macro-F1 or F1 otherwise). The records keep the name ``accuracy`` for that score, so layer
scores stored before the metrics still read."""
Progress = Callable[[float], None]
"""Receives the percentage (0-100) of the work done, the convention of the pipeline's stages."""

DropStrategy = Literal["sensitivity", "top", "alternate"]
DROP_STRATEGIES: tuple[str, ...] = get_args(DropStrategy)


@dataclass(frozen=True)
class LayerScore:
    """The effect of removing one encoder layer; drops are measured against the full model."""

    layer: int
    accuracy: float
    loss: float
    accuracy_drop: float
    loss_increase: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields."""
        return asdict(self)


def layer_sensitivity(
    model: PreTrainedModel, evaluate: Evaluate, progress: Progress | None = None
) -> list[LayerScore]:
    """Evaluate ``model`` with each encoder layer removed in turn; one :class:`LayerScore` per layer.

    Each ablation runs on a deep copy with the layer physically removed (:func:`drop_layers`), so the
    caller's model is never modified and ``evaluate`` sees exactly the model a drop would produce.
    ``progress`` receives percentages after the baseline and after each layer.
    """
    n = len(encoder_layers(model))
    if n < 2:
        raise ValueError(f"layer sensitivity needs at least 2 encoder layers, the model has {n}")
    base_acc, base_loss = evaluate(model)
    logger.info("sensitivity baseline: score %.4f loss %.4f", base_acc, base_loss)
    if progress:
        progress(100.0 / (n + 1))
    scores: list[LayerScore] = []
    for i in range(n):
        ablated = drop_layers(copy.deepcopy(model), [i])
        try:
            acc, loss = evaluate(ablated)
        finally:
            del ablated
        scores.append(
            LayerScore(
                layer=i,
                accuracy=float(acc),
                loss=float(loss),
                accuracy_drop=float(base_acc - acc),
                loss_increase=float(loss - base_loss),
            )
        )
        logger.info("without layer %d: score %.4f (drop %.4f)", i, acc, base_acc - acc)
        if progress:
            progress(100.0 * (i + 2) / (n + 1))
    return scores


def rank_layers(scores: Sequence[LayerScore]) -> list[int]:
    """Layer indices, least important first: smallest accuracy drop, then smallest loss increase."""
    ordered = sorted(scores, key=lambda s: (s.accuracy_drop, s.loss_increase, s.layer))
    return [s.layer for s in ordered]


def _evenly_spaced(candidates: list[int], count: int) -> list[int]:
    # floor(j * len / count) spreads the picks and starts at the first candidate: 3 of
    # [1, 3, 5, 7, 9, 11] gives [1, 5, 9], 2 of [1, 3, 5] gives [1, 3].
    return [candidates[(j * len(candidates)) // count] for j in range(count)]


def _alternate(num_layers: int, count: int) -> list[int]:
    odd = list(range(1, num_layers, 2))
    if count <= len(odd):
        return _evenly_spaced(odd, count)
    # More than half: after every odd layer, take even ones but keep layer 0 as long as possible.
    even = list(range(2, num_layers, 2))
    return sorted(odd + _evenly_spaced(even, count - len(odd)))


def choose_layers_to_drop(
    num_layers: int,
    count_or_target: int | float,
    strategy: str = "sensitivity",
    scores: Sequence[LayerScore] | None = None,
) -> list[int]:
    """Sorted indices of the encoder layers to drop.

    ``count_or_target`` is the number of layers to drop (an ``int``) or the fraction of layers to drop (a
    ``float`` in (0, 1), rounded to the nearest count, at least one). ``strategy``:

    - ``'top'``: the last layers (Sajjad et al. 2020 found the top layers the most expendable);
    - ``'alternate'``: every other layer starting at index 1, evenly spaced when fewer are asked
      (6 layers, drop 2 -> ``[1, 3]``; 12 layers, drop 3 -> ``[1, 5, 9]``);
    - ``'sensitivity'``: the layers whose removal hurts least, from :func:`layer_sensitivity` ``scores``.
    """
    if strategy not in DROP_STRATEGIES:
        raise ValueError(f"unknown layer-drop strategy {strategy!r}; allowed: {', '.join(DROP_STRATEGIES)}")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 2:
        raise ValueError(f"num_layers must be an int >= 2, got {num_layers!r}")
    if isinstance(count_or_target, bool):
        raise ValueError("count_or_target must be an int count or a float fraction, not a bool")
    if isinstance(count_or_target, float):
        if not 0.0 < count_or_target < 1.0:
            raise ValueError(f"a fraction of layers to drop must lie in (0, 1), got {count_or_target}")
        count = max(1, round(count_or_target * num_layers))
    elif isinstance(count_or_target, int):
        count = count_or_target
    else:
        raise ValueError(f"count_or_target must be an int or a float, got {type(count_or_target).__name__}")
    if not 1 <= count <= num_layers - 1:
        raise ValueError(f"can drop between 1 and {num_layers - 1} of {num_layers} layers, asked for {count}")

    if strategy == "top":
        return list(range(num_layers - count, num_layers))
    if strategy == "alternate":
        return _alternate(num_layers, count)
    if scores is None:
        raise ValueError("strategy 'sensitivity' needs scores from layer_sensitivity()")
    layers = sorted(s.layer for s in scores)
    if layers != list(range(num_layers)):
        raise ValueError(f"scores must cover layers 0..{num_layers - 1} once each, got layers {layers}")
    return sorted(rank_layers(scores)[:count])
