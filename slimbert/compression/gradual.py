"""Gradual head and FFN pruning on a sparsity schedule, inside a caller-owned training loop (Sanh et al.
2020's cubic schedule; importance and slicing come from ``heads``)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from torch import Tensor
from transformers import PreTrainedModel

from slimbert.compression.heads import (
    FFN_METHODS,
    FFN_SCOPES,
    alive_heads,
    ffn_importance,
    head_importance,
    per_layer_cuts,
    prune_ffn,
    prune_heads,
    select_ffn_to_keep,
    select_heads_to_prune,
)
from slimbert.compression.schedules import Schedule, ScheduleKind
from slimbert.runtime.shapes import ffn_widths

logger = logging.getLogger(__name__)


class GradualPruner:
    """Prunes heads and FFN neurons along a sparsity schedule inside a caller-owned training loop.

    Call :meth:`step` once per optimisation step (before or after ``optimizer.step()``, but not between
    ``backward()`` and ``optimizer.step()``). At ``start_step``, every ``prune_every`` steps after it and
    at any step from ``end_step`` on, it computes the scheduled sparsity (cubic by default, reaching
    ``head_sparsity`` / ``ffn_sparsity`` at ``end_step``) and physically prunes the least important
    structures down to it: heads ranked globally across layers (one kept per layer), FFN neurons per
    layer or globally (``ffn_scope``). Sparsity is relative to the counts when the pruner was built.
    ``batches`` is a factory returning labelled batches for importance, called at each pruning step.

    :meth:`step` returns ``True`` when parameters were replaced: the old tensors are gone from the model,
    so the caller **must rebuild its optimizer (and LR scheduler)** from ``model.parameters()``.
    Layers must not be dropped while a pruner is active.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        start_step: int,
        end_step: int,
        head_sparsity: float = 0.0,
        ffn_sparsity: float = 0.0,
        batches: Callable[[], Iterable[dict[str, Tensor]]] | None = None,
        max_batches: int | None = 8,
        prune_every: int = 1,
        kind: ScheduleKind = "cubic",
        ffn_method: str = "weight_norm",
        ffn_scope: str = "per_layer",
    ) -> None:
        for name, value in (("head_sparsity", head_sparsity), ("ffn_sparsity", ffn_sparsity)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value}")
        if end_step < start_step or prune_every < 1:
            raise ValueError("need start_step <= end_step and prune_every >= 1")
        if ffn_method not in FFN_METHODS or ffn_scope not in FFN_SCOPES:
            raise ValueError(f"ffn_method must be one of {FFN_METHODS}, ffn_scope one of {FFN_SCOPES}")
        needs_batches = head_sparsity > 0 or (ffn_sparsity > 0 and ffn_method == "gradient")
        if needs_batches and batches is None:
            raise ValueError("head pruning and gradient FFN importance need a batches() factory")
        self.model, self.batches, self.max_batches = model, batches, max_batches
        self.start_step, self.end_step, self.prune_every = start_step, end_step, prune_every
        self.head_schedule = Schedule(0.0, head_sparsity, kind)
        self.ffn_schedule = Schedule(0.0, ffn_sparsity, kind)
        self.ffn_method, self.ffn_scope = ffn_method, ffn_scope
        self.initial_heads = int(alive_heads(model).sum())
        self.initial_neurons = self._neurons()
        self._last_step: int | None = None

    def _neurons(self) -> int:
        return sum(ffn_widths(self.model))

    def targets(self, step: int) -> tuple[float, float]:
        """Scheduled (head, FFN) sparsity at ``step``."""
        total = self.end_step - self.start_step
        return (
            self.head_schedule.at(step, total, self.start_step),
            self.ffn_schedule.at(step, total, self.start_step),
        )

    def sparsity(self) -> tuple[float, float]:
        """Current (head, FFN) sparsity of the model relative to the counts at construction."""
        heads = 1.0 - int(alive_heads(self.model).sum()) / self.initial_heads
        return heads, 1.0 - self._neurons() / self.initial_neurons

    def step(self, step: int) -> bool:
        """Prune to the scheduled sparsity if ``step`` is a pruning step; True if parameters changed."""
        # Every step from end_step on is due, so a loop that never hits end_step exactly still finishes.
        due = step >= self.end_step or (
            step >= self.start_step and (step - self.start_step) % self.prune_every == 0
        )
        if not due or step == self._last_step:
            return False
        self._last_step = step
        head_target, ffn_target = self.targets(step)
        changed = False

        pruned_heads = self.initial_heads - int(alive_heads(self.model).sum())
        head_count = round(head_target * self.initial_heads) - pruned_heads
        if head_count > 0 and self.batches is not None:
            importance = head_importance(self.model, self.batches(), self.max_batches)
            chosen = select_heads_to_prune(importance, alive_heads(self.model), head_count)
            if chosen:
                prune_heads(self.model, chosen)
                changed = True

        ffn_count = round(ffn_target * self.initial_neurons) - (self.initial_neurons - self._neurons())
        if self.ffn_scope == "per_layer" and ffn_count > 0:
            # Scoring is a pass over batches: skip it when the per-layer rounding cuts nothing anyway.
            ffn_count = ffn_count if any(per_layer_cuts(ffn_widths(self.model), ffn_count)) else 0
        if ffn_count > 0:
            batches = self.batches() if self.ffn_method == "gradient" and self.batches else None
            scores = ffn_importance(self.model, self.ffn_method, batches, self.max_batches)
            keep = select_ffn_to_keep(scores, ffn_count, self.ffn_scope)
            if keep:
                prune_ffn(self.model, keep)
                changed = True
        if changed:
            heads, ffn = self.sparsity()
            logger.info("step %d: head sparsity %.3f, FFN sparsity %.3f", step, heads, ffn)
        return changed
