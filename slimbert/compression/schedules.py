"""Step schedules for gradual pruning (cubic sparsity) and distillation (temperature, alpha).

Every schedule here is a pure function of ``(step, total)``: no state, no optimizer, so a training loop
can ask for the value at any step (including after a restart) and get the same answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

ScheduleKind = Literal["linear", "cosine", "cubic"]
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)


def _progress(step: int, total_steps: int, start_step: int = 0) -> float:
    """Fraction of the schedule elapsed at ``step``, clamped to [0, 1]."""
    if total_steps < 0:
        raise ValueError(f"total_steps must be >= 0, got {total_steps}")
    if total_steps == 0:
        # A zero-length schedule has already finished once its start is reached.
        return 1.0 if step >= start_step else 0.0
    return min(1.0, max(0.0, (step - start_step) / total_steps))


def cubic_sparsity(
    step: int, total_steps: int, s_initial: float, s_final: float, start_step: int = 0
) -> float:
    """Zhu & Gupta (2017) cubic sparsity: ``s_t = s_f + (s_i - s_f) * (1 - t / T) ** 3``.

    ``t = step - start_step`` is clamped to ``[0, total_steps]``, so the value is ``s_initial`` before
    ``start_step`` and ``s_final`` from ``start_step + total_steps`` on. The curve prunes fast early,
    while the network still has redundancy, and slowly near the end.
    """
    for name, value in (("s_initial", s_initial), ("s_final", s_final)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    p = _progress(step, total_steps, start_step)
    return s_final + (s_initial - s_final) * (1.0 - p) ** 3


def linear_schedule(step: int, total_steps: int, start: float, end: float, start_step: int = 0) -> float:
    """Linear interpolation from ``start`` to ``end`` over ``total_steps`` steps, clamped at both ends."""
    p = _progress(step, total_steps, start_step)
    return start + (end - start) * p


def cosine_schedule(step: int, total_steps: int, start: float, end: float, start_step: int = 0) -> float:
    """Half-cosine interpolation from ``start`` to ``end``: flat at both ends, steepest in the middle."""
    p = _progress(step, total_steps, start_step)
    return start + (end - start) * (1.0 - math.cos(math.pi * p)) / 2.0


@dataclass(frozen=True)
class Schedule:
    """A value that moves from ``start`` to ``end`` over a run.

    ``kind`` is one of ``'linear'``, ``'cosine'`` or ``'cubic'`` (the Zhu & Gupta curve, which moves
    fastest at the beginning). ``Schedule(10, 2).at(step, total)`` gives the value at ``step``.
    """

    start: float
    end: float
    kind: ScheduleKind = "linear"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; allowed: {', '.join(SCHEDULE_KINDS)}")

    def at(self, step: int, total: int, start_step: int = 0) -> float:
        """The scheduled value at ``step`` of a ``total``-step schedule beginning at ``start_step``."""
        p = _progress(step, total, start_step)
        if self.kind == "linear":
            return self.start + (self.end - self.start) * p
        if self.kind == "cosine":
            return self.start + (self.end - self.start) * (1.0 - math.cos(math.pi * p)) / 2.0
        return self.end + (self.start - self.end) * (1.0 - p) ** 3
