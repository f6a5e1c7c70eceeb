"""Distillation loss against values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from slimbert.compression.distill import DistillationSchedule, distillation_loss
from slimbert.compression.schedules import Schedule

# Row 0: the teacher's logits [2 ln 3, 0] at T = 2 soften to p = [3/4, 1/4]; the student's [0, 0]
# give q = [1/2, 1/2]. Row 1: teacher and student agree on [0, 0], so its KL is 0.
STUDENT = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
TEACHER = torch.tensor([[2 * math.log(3.0), 0.0], [0.0, 0.0]])
LABELS = torch.tensor([0, 1])
KL_ROW0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
KL_BATCHMEAN = (KL_ROW0 + 0.0) / 2
CE = math.log(2.0)  # both rows: uniform student, any label


def test_loss_equals_hand_computed_value() -> None:
    loss = distillation_loss(STUDENT, TEACHER, LABELS, temperature=2.0, alpha=0.5)
    expected = 0.5 * (2.0**2) * KL_BATCHMEAN + 0.5 * CE
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_alpha_extremes_select_one_term() -> None:
    soft = distillation_loss(STUDENT, TEACHER, LABELS, temperature=2.0, alpha=1.0)
    hard = distillation_loss(STUDENT, TEACHER, LABELS, temperature=2.0, alpha=0.0)
    assert soft.item() == pytest.approx(4.0 * KL_BATCHMEAN, rel=1e-6)
    assert hard.item() == pytest.approx(CE, rel=1e-6)


def test_without_labels_only_the_soft_term_remains() -> None:
    loss = distillation_loss(STUDENT, TEACHER, None, temperature=2.0, alpha=0.3)
    assert loss.item() == pytest.approx(4.0 * KL_BATCHMEAN, rel=1e-6)


def test_identical_logits_give_zero_soft_loss() -> None:
    logits = torch.randn(5, 3)
    assert distillation_loss(logits, logits.clone(), None, 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_reaches_student_not_teacher() -> None:
    student = STUDENT.clone().requires_grad_()
    teacher = TEACHER.clone().requires_grad_()
    distillation_loss(student, teacher, LABELS, 2.0, 0.5).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize(
    ("temperature", "alpha", "match"), [(0.0, 0.5, "temperature"), (2.0, 1.5, "alpha")]
)
def test_rejects_bad_arguments(temperature: float, alpha: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        distillation_loss(STUDENT, TEACHER, LABELS, temperature, alpha)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        distillation_loss(torch.zeros(2, 2), torch.zeros(2, 3), LABELS, 2.0, 0.5)


def test_default_schedule_runs_from_10_to_2_and_point9_to_point2() -> None:
    schedule = DistillationSchedule()
    assert schedule.at(0, 100) == pytest.approx((10.0, 0.9))
    assert schedule.at(50, 100) == pytest.approx((6.0, 0.55))
    assert schedule.at(100, 100) == pytest.approx((2.0, 0.2))


def test_schedule_loss_uses_scheduled_parameters() -> None:
    schedule = DistillationSchedule(temperature=Schedule(2.0, 2.0), alpha=Schedule(1.0, 0.0))
    at_end = schedule.loss(STUDENT, TEACHER, LABELS, step=10, total=10)
    assert at_end.item() == pytest.approx(CE, rel=1e-6)
    at_start = schedule.loss(STUDENT, TEACHER, LABELS, step=0, total=10)
    assert at_start.item() == pytest.approx(4.0 * KL_BATCHMEAN, rel=1e-6)


def test_schedule_rejects_non_positive_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        DistillationSchedule(temperature=Schedule(1.0, 0.0))
