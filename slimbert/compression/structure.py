"""Structural transforms: layer sensitivity, layer pruning, head/FFN pruning.

Each function takes a model in memory and the data, changes the model in place (or measures it) and
returns a :class:`Made` record of what it did; the orchestrator publishes the variant. Distillation
always uses the fine-tuned baseline as the teacher, plugged into training through ``finetune()``'s
``loss_fn`` hook.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from slimbert.compression.distill import distillation_loss_fn
from slimbert.compression.finetune import Amp, FinetuneConfig, evaluate, finetune, selected_epoch, train_step
from slimbert.compression.gradual import GradualPruner
from slimbert.compression.heads import alive_heads, count_encoder_parameters
from slimbert.compression.layers import drop_layers
from slimbert.compression.recipe import HeadFfnPruning, LayerPruning
from slimbert.compression.sensitivity import LayerScore, choose_layers_to_drop, layer_sensitivity
from slimbert.data import TextDataset, iter_batches
from slimbert.records import BASELINE
from slimbert.runtime.shapes import encoder_layers, ffn_widths
from slimbert.store.manifest import Technique

Progress = Callable[[float], None]
LossFn = Callable[[PreTrainedModel, dict[str, Tensor], int, int], Tensor]


@dataclass
class Made:
    """What a structural stage did to its model: the technique for the manifest, the manifest ``extra``
    its descendants inherit, and what the job record shows beyond the technique (training runs)."""

    technique: Technique
    extra: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


def structure_summary(model: PreTrainedModel) -> dict[str, Any]:
    """Layers, alive heads per layer, FFN width per layer and encoder parameters of ``model``."""
    return {
        "layers": len(encoder_layers(model)),
        "heads_per_layer": [int(n) for n in alive_heads(model).sum(dim=1).tolist()],
        "ffn_widths": ffn_widths(model),
        "encoder_parameters": count_encoder_parameters(model),
    }


def sensitivity_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: TextDataset,
                       max_length: int, progress: Progress | None = None) -> list[LayerScore]:
    """The primary metric (``data.metric``; accuracy for balanced tasks) and loss on ``data`` (a selection
    split) with each encoder layer removed in turn."""

    def acc_loss(m: PreTrainedModel) -> tuple[float, float]:
        result = evaluate(m, tokenizer, data, max_length=max_length)
        return result.score, result.loss

    return layer_sensitivity(model, acc_loss, progress=progress)


def prune_layers(model: PreTrainedModel, teacher: PreTrainedModel, lp: LayerPruning,
                 scores: list[LayerScore] | None, tokenizer: PreTrainedTokenizerBase, train: TextDataset,
                 dev: TextDataset, progress: Progress | None = None) -> Made:
    """Drop layers from ``model`` (a copy of the baseline) in place and re-finetune it."""
    num_layers = model.config.num_hidden_layers
    count = lp.count_to_drop(num_layers)
    if lp.strategy == "sensitivity" and scores is None:
        raise ValueError("layer_pruning.strategy 'sensitivity' needs the sensitivity stage")
    dropped = choose_layers_to_drop(num_layers, count, lp.strategy, scores if lp.strategy == "sensitivity" else None)
    before = count_encoder_parameters(model)
    drop_layers(model, dropped)
    loss_fn = distillation_loss_fn(teacher, lp.distill.schedule()) if lp.distill else None
    refit = finetune(model, tokenizer, train, dev, lp.refinetune, progress=progress, loss_fn=loss_fn)
    params: dict[str, Any] = {
        "dropped_layers": dropped, "strategy": lp.strategy, "layers_before": num_layers,
        "layers_after": model.config.num_hidden_layers, "requested": lp.model_dump(include={"drop", "target_layers"}),
        "refinetune": lp.refinetune.model_dump(), "refinetune_selected": selected_epoch(refit),
        "distilled": lp.distill is not None,
        "distill": lp.distill.model_dump() if lp.distill else None,
        "teacher": BASELINE if lp.distill else None,
        "encoder_parameters_before": before, "encoder_parameters_after": count_encoder_parameters(model),
    }
    extra: dict[str, Any] = {"encoder_parameters": params["encoder_parameters_after"]}
    if lp.strategy == "sensitivity" and scores is not None:
        extra["sensitivity"] = [s.to_json() for s in scores]
    return Made(Technique(name="layer-pruning", params=params), extra,
                {"refinetune_seconds": round(refit.seconds, 1), "refinetune_history": refit.history})


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

    amp = Amp.for_model(model)  # bf16/fp16 autocast on a GPU; fp32 on a CPU
    start, step, losses = time.perf_counter(), 0, []
    for epoch in range(t.epochs):
        for batch in iter_batches(tokenizer, train, batch_size=t.batch_size, max_length=t.max_length,
                                  shuffle=True, seed=t.seed + epoch, group_by_length=True):
            if pruner.step(step):
                optimizer, scheduler = _optimizer(model, t, warmup, total, step)
                record(step)
            model.train()
            losses.append(float(train_step(model, batch, step, total, optimizer, scheduler, loss_fn, amp)))
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


def prune_heads_ffn(model: PreTrainedModel, teacher: PreTrainedModel, cfg: HeadFfnPruning,
                    tokenizer: PreTrainedTokenizerBase, train: TextDataset, dev: TextDataset,
                    progress: Progress | None = None) -> Made:
    """Gradual head/FFN pruning of ``model`` in place, then the recovery fine-tune."""
    before = structure_summary(model)
    loss_fn = distillation_loss_fn(teacher, cfg.distill.schedule()) if cfg.distill else None
    share = 70.0 if cfg.recovery else 100.0
    run = train_with_pruner(model, tokenizer, train, cfg, loss_fn,
                            progress=(lambda p: progress(share * p / 100)) if progress else None)
    recovery: dict[str, Any] | None = None
    if cfg.recovery is not None:
        rec = finetune(model, tokenizer, train, dev, cfg.recovery, loss_fn=loss_fn,
                       progress=(lambda p: progress(share + (100 - share) * p / 100)) if progress else None)
        recovery = {"dev_accuracy": rec.dev_accuracy, "steps": rec.steps, "seconds": round(rec.seconds, 1),
                    "history": rec.history}
    after = structure_summary(model)
    reduction = 1 - after["encoder_parameters"] / before["encoder_parameters"]
    params: dict[str, Any] = {
        **cfg.model_dump(exclude={"train", "recovery"}), "train": cfg.train.model_dump(),
        "recovery": cfg.recovery.model_dump() if cfg.recovery else None, "distilled": cfg.distill is not None,
        "teacher": BASELINE if cfg.distill else None, "before": before, "after": after,
        "encoder_parameters_before": before["encoder_parameters"],
        "encoder_parameters_after": after["encoder_parameters"],
        "encoder_parameter_reduction": round(reduction, 4),
        "pruned_heads": {str(k): v for k, v in (model.config.pruned_heads or {}).items()},
        "achieved_head_sparsity": run["head_sparsity"], "achieved_ffn_sparsity": run["ffn_sparsity"],
    }
    return Made(Technique(name="head-ffn-pruning", params=params), {"encoder_parameters": after["encoder_parameters"]},
                {"pruning_run": run, "recovery_run": recovery})
