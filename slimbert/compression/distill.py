"""Knowledge-distillation loss (Hinton et al. 2015) and its temperature / alpha schedule."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from slimbert.compression.schedules import Schedule


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    temperature: float,
    alpha: float,
) -> Tensor:
    """``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, labels)``.

    The KL term compares temperature-softened distributions (batch mean over examples); the T^2 factor
    keeps its gradient scale independent of T, as in Hinton et al. With ``labels=None`` the soft term is
    returned alone (unweighted), for distilling on unlabelled text. The teacher is detached.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    t = float(temperature)
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.softmax(teacher_logits.detach() / t, dim=-1),
        reduction="batchmean",
    ) * (t * t)
    if labels is None:
        return soft
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


class DistillationParams(NamedTuple):
    """Temperature and alpha for one training step."""

    temperature: float
    alpha: float


@dataclass(frozen=True)
class DistillationSchedule:
    """Temperature and alpha over a run: by default T 10 -> 2 and alpha 0.9 -> 0.2, linearly.

    Early on the student learns from the teacher's soft, high-temperature distribution; later it leans
    on the hard labels with a sharper teacher.
    """

    temperature: Schedule = field(default_factory=lambda: Schedule(10.0, 2.0))
    alpha: Schedule = field(default_factory=lambda: Schedule(0.9, 0.2))

    def __post_init__(self) -> None:
        if min(self.temperature.start, self.temperature.end) <= 0:
            raise ValueError("distillation temperatures must be > 0")
        for value in (self.alpha.start, self.alpha.end):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"distillation alpha must lie in [0, 1], got {value}")

    def at(self, step: int, total: int) -> DistillationParams:
        """Temperature and alpha at ``step`` of a ``total``-step run."""
        return DistillationParams(self.temperature.at(step, total), self.alpha.at(step, total))

    def loss(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None, step: int, total: int
    ) -> Tensor:
        """:func:`distillation_loss` with this schedule's temperature and alpha at ``step``."""
        params = self.at(step, total)
        return distillation_loss(student_logits, teacher_logits, labels, params.temperature, params.alpha)


def distillation_loss_fn(teacher: PreTrainedModel, schedule: DistillationSchedule
                         ) -> Callable[[PreTrainedModel, dict[str, Tensor], int, int], Tensor]:
    """A ``finetune(loss_fn=...)`` hook: Hinton distillation from ``teacher`` along ``schedule``.

    The teacher runs in eval mode under ``no_grad``; student and teacher see the same batch.
    """
    teacher.eval()

    def loss_fn(model: PreTrainedModel, batch: dict[str, Tensor], step: int, total: int) -> Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits
        return schedule.loss(model(**inputs).logits, teacher_logits, batch["labels"], step, total)

    return loss_fn
