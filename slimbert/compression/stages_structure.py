"""Structural stages of a compression job: layer sensitivity, layer pruning, head/FFN pruning.

Each function takes the pipeline's ``Context`` and a model in memory, publishes its variant and returns
the stage detail for the job record. Distillation always uses the fine-tuned baseline as the teacher,
in eval mode under ``no_grad``, plugged into training through ``finetune()``'s ``loss_fn`` hook.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from slimbert.compression.distill import DistillationSchedule
from slimbert.compression.finetune import FinetuneConfig, evaluate, finetune, train_step
from slimbert.compression.heads import GradualPruner, alive_heads, count_encoder_parameters
from slimbert.compression.layers import drop_layers, encoder_layers, ffn_widths
from slimbert.compression.recipe import HeadFfnPruning
from slimbert.compression.sensitivity import LayerScore, choose_layers_to_drop, layer_sensitivity
from slimbert.data import TextDataset, iter_batches
from slimbert.store.manifest import Technique

if TYPE_CHECKING:
    from slimbert.compression.pipeline import Context

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
LossFn = Callable[[PreTrainedModel, dict[str, Tensor], int, int], Tensor]


def encoder_parameters(model: PreTrainedModel) -> int:
    return count_encoder_parameters(model)


def structure_summary(model: PreTrainedModel) -> dict[str, Any]:
    """Layers, alive heads per layer, FFN width per layer and encoder parameters of ``model``."""
    return {
        "layers": len(encoder_layers(model)),
        "heads_per_layer": [int(n) for n in alive_heads(model).sum(dim=1).tolist()],
        "ffn_widths": ffn_widths(model),
        "encoder_parameters": count_encoder_parameters(model),
    }


def distillation_loss_fn(teacher: PreTrainedModel, schedule: DistillationSchedule) -> LossFn:
    """A ``finetune(loss_fn=...)`` hook: Hinton distillation from ``teacher`` along ``schedule``."""
    teacher.eval()

    def loss_fn(model: PreTrainedModel, batch: dict[str, Tensor], step: int, total: int) -> Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits
        return schedule.loss(model(**inputs).logits, teacher_logits, batch["labels"], step, total)

    return loss_fn


def run_sensitivity(ctx: Context, model: PreTrainedModel, progress: Progress | None = None) -> list[LayerScore]:
    """Dev accuracy and loss with each encoder layer removed in turn (the model itself is untouched)."""
    tokenizer, dev, max_length = ctx.tokenizer, ctx.dev, ctx.recipe.eval_max_length

    def acc_loss(m: PreTrainedModel) -> tuple[float, float]:
        result = evaluate(m, tokenizer, dev, max_length=max_length)
        return result.accuracy, result.loss

    return layer_sensitivity(model, acc_loss, progress=progress)


def prune_layers(ctx: Context, model: PreTrainedModel, teacher: PreTrainedModel,
                 scores: list[LayerScore] | None, progress: Progress | None = None) -> dict[str, Any]:
    """Drop layers from ``model`` (a copy of the baseline) in place, re-finetune, publish ``pruned-fp32``."""
    from slimbert.compression.pipeline import publish_torch

    lp = ctx.recipe.layer_pruning
    assert lp is not None
    num_layers = model.config.num_hidden_layers
    count = lp.count_to_drop(num_layers)
    if lp.strategy == "sensitivity" and scores is None:
        raise ValueError("layer_pruning.strategy 'sensitivity' needs the sensitivity stage")
    dropped = choose_layers_to_drop(num_layers, count, lp.strategy, scores if lp.strategy == "sensitivity" else None)
    before = encoder_parameters(model)
    drop_layers(model, dropped)
    loss_fn = distillation_loss_fn(teacher, lp.distill.schedule()) if lp.distill else None
    refit = finetune(model, ctx.tokenizer, ctx.train, ctx.dev, lp.refinetune, progress=progress, loss_fn=loss_fn)
    params: dict[str, Any] = {
        "dropped_layers": dropped, "strategy": lp.strategy, "layers_before": num_layers,
        "layers_after": model.config.num_hidden_layers, "requested": lp.model_dump(include={"drop", "target_layers"}),
        "refinetune": lp.refinetune.model_dump(), "distilled": lp.distill is not None,
        "distill": lp.distill.model_dump() if lp.distill else None,
        "teacher": "baseline-fp32" if lp.distill else None,
        "encoder_parameters_before": before, "encoder_parameters_after": encoder_parameters(model),
    }
    extra: dict[str, Any] = {"encoder_parameters": params["encoder_parameters_after"]}
    if lp.strategy == "sensitivity" and scores is not None:
        extra["sensitivity"] = [s.to_json() for s in scores]
    manifest = publish_torch(ctx, model, "pruned-fp32", "baseline-fp32",
                             Technique(name="layer-pruning", params=params), extra=extra)
    return {**params, "dev_accuracy": manifest.dev_accuracy, "refinetune_seconds": round(refit.seconds, 1),
            "refinetune_history": refit.history}


def _optimizer(model: PreTrainedModel, cfg: FinetuneConfig, warmup: int, total: int, offset: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW plus the linear warm-up/decay schedule, resumed at step ``offset`` of ``total``."""
    no_decay = ("bias", "LayerNorm.weight", "layer_norm")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)

    def factor(s: int) -> float:
        cur = s + offset
        if cur < warmup:
            return cur / max(1, warmup)
        return max(0.0, (total - cur) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_with_pruner(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, train: TextDataset,
                      cfg: HeadFfnPruning, loss_fn: LossFn | None = None, progress: Progress | None = None
                      ) -> dict[str, Any]:
    """Train ``model`` while a :class:`GradualPruner` removes heads and FFN neurons along the schedule.

    Whenever the pruner replaces parameters, the optimizer and LR scheduler are rebuilt from the model's
    new parameters (resuming the LR schedule at the current step; Adam moments restart). Ends with the
    target sparsity reached even when the schedule's end lies past the last step.
    """
    t = cfg.train
    train = t.stage_data(train)
    torch.manual_seed(t.seed)
    total = math.ceil(len(train) / t.batch_size) * t.epochs
    start_step = int(cfg.schedule.start * total)
    end_step = max(start_step, round(cfg.schedule.end * total))
    seeds = itertools.count(10_000)

    def importance_batches() -> Iterator[dict[str, Tensor]]:
        return iter_batches(tokenizer, train, batch_size=t.batch_size, max_length=t.max_length,
                            shuffle=True, seed=next(seeds))

    pruner = GradualPruner(
        model, start_step=start_step, end_step=end_step, head_sparsity=cfg.head_sparsity,
        ffn_sparsity=cfg.ffn_sparsity, batches=importance_batches, max_batches=cfg.importance_batches,
        prune_every=cfg.schedule.prune_every, kind=cfg.schedule.kind, ffn_method=cfg.ffn_method,
        ffn_scope=cfg.ffn_scope,
    )
    warmup = int(t.warmup_ratio * total)
    optimizer, scheduler = _optimizer(model, t, warmup, total, 0)
    events: list[dict[str, Any]] = []

    def record(step: int) -> None:
        heads, ffn = pruner.sparsity()
        events.append({"step": step, "head_sparsity": round(heads, 4), "ffn_sparsity": round(ffn, 4),
                       "encoder_parameters": count_encoder_parameters(model)})

    start, step, losses = time.perf_counter(), 0, []
    for epoch in range(t.epochs):
        for batch in iter_batches(tokenizer, train, batch_size=t.batch_size, max_length=t.max_length,
                                  shuffle=True, seed=t.seed + epoch, group_by_length=True):
            if pruner.step(step):
                optimizer, scheduler = _optimizer(model, t, warmup, total, step)
                record(step)
            model.train()
            losses.append(float(train_step(model, batch, step, total, optimizer, scheduler, loss_fn)))
            step += 1
            if progress and (step % 5 == 0 or step == total):
                progress(100.0 * step / max(total, 1))
    if pruner.step(max(step, end_step)):
        record(max(step, end_step))
    model.eval()
    heads, ffn = pruner.sparsity()
    return {"steps": step, "start_step": start_step, "end_step": end_step, "pruning_events": events,
            "head_sparsity": round(heads, 4), "ffn_sparsity": round(ffn, 4),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "seconds": round(time.perf_counter() - start, 1)}


def prune_heads_ffn(ctx: Context, model: PreTrainedModel, parent: str, teacher: PreTrainedModel,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Gradual head/FFN pruning of ``model`` in place, recovery fine-tune, publish ``heads-fp32``."""
    from slimbert.compression.pipeline import publish_torch

    cfg = ctx.recipe.head_ffn_pruning
    assert cfg is not None
    before = structure_summary(model)
    loss_fn = distillation_loss_fn(teacher, cfg.distill.schedule()) if cfg.distill else None
    share = 70.0 if cfg.recovery else 100.0
    run = train_with_pruner(model, ctx.tokenizer, ctx.train, cfg, loss_fn,
                            progress=(lambda p: progress(share * p / 100)) if progress else None)
    recovery: dict[str, Any] | None = None
    if cfg.recovery is not None:
        rec = finetune(model, ctx.tokenizer, ctx.train, ctx.dev, cfg.recovery, loss_fn=loss_fn,
                       progress=(lambda p: progress(share + (100 - share) * p / 100)) if progress else None)
        recovery = {"dev_accuracy": rec.dev_accuracy, "steps": rec.steps, "seconds": round(rec.seconds, 1),
                    "history": rec.history}
    after = structure_summary(model)
    reduction = 1 - after["encoder_parameters"] / before["encoder_parameters"]
    params: dict[str, Any] = {
        **cfg.model_dump(exclude={"train", "recovery"}), "train": cfg.train.model_dump(),
        "recovery": cfg.recovery.model_dump() if cfg.recovery else None, "distilled": cfg.distill is not None,
        "teacher": "baseline-fp32" if cfg.distill else None, "before": before, "after": after,
        "encoder_parameters_before": before["encoder_parameters"],
        "encoder_parameters_after": after["encoder_parameters"],
        "encoder_parameter_reduction": round(reduction, 4),
        "pruned_heads": {str(k): v for k, v in (model.config.pruned_heads or {}).items()},
        "achieved_head_sparsity": run["head_sparsity"], "achieved_ffn_sparsity": run["ffn_sparsity"],
    }
    manifest = publish_torch(ctx, model, "heads-fp32", parent, Technique(name="head-ffn-pruning", params=params),
                             extra={"encoder_parameters": after["encoder_parameters"]})
    ctx.results["encoder_parameters"] = {"before": before["encoder_parameters"],
                                         "after": after["encoder_parameters"], "reduction": round(reduction, 4)}
    return {**params, "pruning_run": run, "recovery_run": recovery, "dev_accuracy": manifest.dev_accuracy}
