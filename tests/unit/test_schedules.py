"""Sparsity and distillation schedules: exact values at known points."""
from __future__ import annotations

import pytest

from slimbert.compression.schedules import Schedule, cosine_schedule, cubic_sparsity, linear_schedule


def test_cubic_sparsity_exact_values_at_start_middle_end() -> None:
    # s_t = s_f + (s_i - s_f)(1 - t/T)^3 with s_i = 0, s_f = 0.8, T = 100.
    assert cubic_sparsity(0, 100, 0.0, 0.8) == pytest.approx(0.0)
    assert cubic_sparsity(50, 100, 0.0, 0.8) == pytest.approx(0.8 - 0.8 * 0.125)  # 0.7
    assert cubic_sparsity(100, 100, 0.0, 0.8) == pytest.approx(0.8)


def test_cubic_sparsity_clamps_and_honours_start_step() -> None:
    assert cubic_sparsity(-5, 100, 0.1, 0.9) == pytest.approx(0.1)
    assert cubic_sparsity(500, 100, 0.1, 0.9) == pytest.approx(0.9)
    # Starting at step 20, step 70 is halfway through a 100-step schedule.
    assert cubic_sparsity(70, 100, 0.0, 0.8, start_step=20) == pytest.approx(0.7)
    assert cubic_sparsity(10, 100, 0.2, 0.8, start_step=20) == pytest.approx(0.2)


def test_cubic_sparsity_is_monotone_and_front_loaded() -> None:
    values = [cubic_sparsity(t, 10, 0.0, 1.0) for t in range(11)]
    assert values == sorted(values)
    # Front-loaded: 1 - (3/4)^3 = 58% of the pruning happens in the first quarter of the schedule.
    assert cubic_sparsity(25, 100, 0.0, 1.0) == pytest.approx(1 - 0.75**3)


def test_cubic_sparsity_rejects_out_of_range_sparsity() -> None:
    with pytest.raises(ValueError, match="s_final"):
        cubic_sparsity(0, 10, 0.0, 1.5)
    with pytest.raises(ValueError, match="total_steps"):
        cubic_sparsity(0, -1, 0.0, 0.5)


def test_zero_length_schedule_jumps_to_the_end() -> None:
    assert cubic_sparsity(0, 0, 0.0, 0.5) == pytest.approx(0.5)
    assert linear_schedule(3, 0, 1.0, 2.0) == pytest.approx(2.0)


def test_linear_and_cosine_schedules() -> None:
    assert linear_schedule(0, 8, 10.0, 2.0) == pytest.approx(10.0)
    assert linear_schedule(2, 8, 10.0, 2.0) == pytest.approx(8.0)
    assert linear_schedule(8, 8, 10.0, 2.0) == pytest.approx(2.0)
    assert linear_schedule(99, 8, 10.0, 2.0) == pytest.approx(2.0)
    assert cosine_schedule(0, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert cosine_schedule(5, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert cosine_schedule(10, 10, 1.0, 0.0) == pytest.approx(0.0)


def test_schedule_dataclass_matches_functions() -> None:
    assert Schedule(10.0, 2.0).at(4, 8) == pytest.approx(6.0)
    assert Schedule(1.0, 0.0, "cosine").at(5, 10) == pytest.approx(0.5)
    assert Schedule(0.0, 0.8, "cubic").at(50, 100) == pytest.approx(cubic_sparsity(50, 100, 0.0, 0.8))
    assert Schedule(0.0, 0.8, "cubic").at(70, 100, start_step=20) == pytest.approx(0.7)


def test_schedule_rejects_unknown_kind_naming_allowed_values() -> None:
    with pytest.raises(ValueError, match="linear, cosine, cubic"):
        Schedule(0.0, 1.0, "exponential")  # type: ignore[arg-type]
