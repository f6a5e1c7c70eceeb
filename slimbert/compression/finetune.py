"""Fine-tuning and dev-set evaluation of a sequence classifier (plain PyTorch loop)."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, Field
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from slimbert.data import TextDataset, iter_batches
from slimbert.metrics import score

log = logging.getLogger(__name__)

Progress = Callable[[float], None]


class FinetuneConfig(BaseModel):
    """AdamW with linear warm-up and decay, early stopping on dev accuracy."""

    epochs: int = Field(default=1, ge=1, le=20)
    learning_rate: float = Field(default=1e-4, gt=0, le=1e-2)
    batch_size: int = Field(default=32, ge=1, le=512)
    max_length: int = Field(default=64, ge=8, le=512)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0, le=1)
    seed: int = 0
    early_stopping_patience: int | None = Field(default=1, ge=1, description="epochs without gain")
    # A stage can train on part of the job's train set: the study's later stages start from a model
    # that has already seen all of it, and on 2 CPU cores every epoch over 67k sentences costs ~20 min.
    max_examples: int | None = Field(
        default=None, ge=8, description="sentences this stage trains on (a seeded subset); null = all"
    )

    def stage_data(self, train: TextDataset) -> TextDataset:
        """The part of ``train`` this stage trains on."""
        return train.subset(self.max_examples, self.seed)


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    predictions: list[int] = field(repr=False)
    seconds: float
    score: float  # the data's primary metric (accuracy, macro-F1 or F1): what selection reads


@dataclass
class FinetuneResult:
    dev_accuracy: float
    dev_loss: float
    steps: int
    epochs_run: int
    seconds: float
    history: list[dict[str, float]]
    kept_epoch: int = 0  # the epoch whose weights were kept: the best on validation


LossFn = Callable[[PreTrainedModel, dict[str, torch.Tensor], int, int], torch.Tensor]


def selected_epoch(result: FinetuneResult) -> dict[str, Any]:
    """What early stopping chose, for a manifest: the kept epoch and the validation metric by epoch."""
    metric = next((k.removeprefix("validation_") for k in (result.history[0] if result.history else {})
                   if k.startswith("validation_")), None)
    return {"kept_epoch": result.kept_epoch, "epochs_run": result.epochs_run, "metric": metric,
            "validation_by_epoch": [h[f"validation_{metric}"] for h in result.history] if metric else []}


@dataclass
class Amp:
    """Mixed precision for training on a CUDA device: bf16 autocast where the GPU has it, else fp16 with a
    gradient scaler. On a CPU, nothing changes: fp32 throughout."""

    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> Amp:
        device = next(model.parameters()).device
        if device.type != "cuda":
            return cls()
        if torch.cuda.is_bf16_supported():
            return cls(torch.bfloat16)
        return cls(torch.float16, torch.amp.GradScaler("cuda"))

    def autocast(self) -> Any:
        return torch.autocast("cuda", dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()


def on_device(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` on the device ``model`` lives on (the orchestrator places the model; data follows it)."""
    device = next(model.parameters()).device
    return batch if device.type == "cpu" else {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_step(model: PreTrainedModel, batch: dict[str, torch.Tensor], step: int, total: int,
               optimizer: torch.optim.Optimizer, scheduler: Any, loss_fn: LossFn | None = None,
               amp: Amp | None = None) -> torch.Tensor:
    """One optimizer step with gradient clipping, on the model's device; returns the detached loss."""
    amp = amp or Amp()
    batch = on_device(model, batch)
    with amp.autocast():
        loss = loss_fn(model, batch, step, total) if loss_fn else model(**batch).loss
    if amp.scaler is not None:
        amp.scaler.scale(loss).backward()
        amp.scaler.unscale_(optimizer)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        amp.scaler.step(optimizer)
        amp.scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


@torch.no_grad()
def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: TextDataset,
    *,
    batch_size: int = 64,
    max_length: int = 128,
) -> EvalResult:
    """Accuracy and mean cross-entropy of ``model`` on ``data``."""
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    preds: list[int] = []
    loss_sum = 0.0
    for batch in iter_batches(tokenizer, data, batch_size=batch_size, max_length=max_length):
        out = model(**on_device(model, batch))
        loss_sum += float(out.loss) * len(batch["labels"])
        preds.extend(out.logits.argmax(-1).tolist())
    model.train(was_training)
    correct = sum(int(p == y) for p, y in zip(preds, data.labels, strict=True))
    n = max(len(data), 1)
    primary = score(data.metric, preds, data.labels, int(model.config.num_labels)) if preds else 0.0
    return EvalResult(correct / n, loss_sum / n, preds, time.perf_counter() - start, primary)


def finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: TextDataset,
    dev: TextDataset,
    cfg: FinetuneConfig,
    *,
    progress: Progress | None = None,
    loss_fn: LossFn | None = None,
) -> FinetuneResult:
    """Train ``model`` in place and leave it at its best dev-accuracy epoch.

    ``loss_fn(model, batch, step, total_steps)`` replaces the plain cross-entropy, which is how
    distillation plugs in without a second training loop.
    """
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    train = cfg.stage_data(train)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    no_decay = ("bias", "LayerNorm.weight", "layer_norm")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    amp = Amp.for_model(model)
    best_acc, best_loss, best_state, stale, kept = -1.0, math.inf, None, 0, 0
    history: list[dict[str, float]] = []
    step = 0
    epochs_run = 0
    for epoch in range(cfg.epochs):
        model.train()
        batches = iter_batches(
            tokenizer, train, batch_size=cfg.batch_size, max_length=cfg.max_length,
            shuffle=True, seed=cfg.seed + epoch, group_by_length=True,
        )
        for batch in batches:
            train_step(model, batch, step, total, optimizer, scheduler, loss_fn, amp)
            step += 1
            if progress and (step % 5 == 0 or step == total):
                # Leave the last slice of the bar for the per-epoch dev evaluation.
                progress(95.0 * step / total)
        epochs_run += 1
        result = evaluate(model, tokenizer, dev)
        history.append({"epoch": epoch + 1, "dev_accuracy": result.accuracy, "dev_loss": result.loss,
                        f"validation_{dev.metric}": result.score})
        log.info("epoch %d: validation %s %.4f loss %.4f", epoch + 1, dev.metric, result.score, result.loss)
        if result.score > best_acc:
            best_acc, best_loss, stale, kept = result.score, result.loss, 0, epoch + 1
            # Only worth the copy when a later epoch could be worse.
            best_state = copy.deepcopy(model.state_dict()) if epoch + 1 < cfg.epochs else None
        else:
            stale += 1
            if cfg.early_stopping_patience is not None and stale >= cfg.early_stopping_patience:
                break
    if best_state is not None and history[-1][f"validation_{dev.metric}"] < best_acc:
        model.load_state_dict(best_state)
    model.eval()
    if progress:
        progress(100.0)
    return FinetuneResult(best_acc, best_loss, step, epochs_run, time.perf_counter() - start, history, kept)
