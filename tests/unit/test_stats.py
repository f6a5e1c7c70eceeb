"""Accuracy statistics: Wilson intervals, McNemar's test, accuracy and macro-F1."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from slimbert.benchmark.stats import MCNEMAR_EXACT_BELOW, mcnemar
from slimbert.metrics import accuracy, macro_f1, wilson_interval


@pytest.mark.parametrize(
    ("correct", "n", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(correct: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(correct, n)
    assert lo == pytest.approx(low, abs=5e-5)
    assert hi == pytest.approx(high, abs=5e-5)


def test_wilson_by_hand_and_against_scipy() -> None:
    z = 1.959963984540054  # two-sided 95% normal quantile
    n, p = 100, 0.81
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(81, 100)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (lo, hi) == pytest.approx((0.7222, 0.8749), abs=1e-4)
    for k, m, conf in [(81, 100, 0.95), (3, 7, 0.9), (50, 50, 0.99), (872, 1000, 0.95)]:
        ci = binomtest(k, m).proportion_ci(confidence_level=conf, method="wilson")
        assert wilson_interval(k, m, conf) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_edge_cases() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and 0.6 < lo < 0.8
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(5, 10, confidence=1.0)


def _paired_predictions(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[int], ...]:
    """Predictions for binary labels (all 1) with the given right/wrong contingency counts."""
    labels = [1] * (both + only_a + only_b + neither)
    pred_a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    pred_b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return pred_a, pred_b, labels


def test_mcnemar_chi_square_hand_worked() -> None:
    # b = 20, c = 10: chi2 = (|20 - 10| - 1)^2 / 30 = 81 / 30 = 2.7; p = erfc(sqrt(2.7 / 2)).
    pred_a, pred_b, labels = _paired_predictions(both=100, only_a=20, only_b=10, neither=7)
    result = mcnemar(pred_a, pred_b, labels)
    assert (result.b, result.c) == (20, 10)
    assert result.statistic == pytest.approx(2.7)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(2.7 / 2)), rel=1e-9)
    assert result.p_value == pytest.approx(0.1003, abs=1e-4)
    assert result.method.startswith("chi-square with continuity correction")
    assert not result.significant(0.05)


def test_mcnemar_exact_hand_worked_and_against_scipy() -> None:
    # b = 7, c = 1: p = 2 * (C(8,0) + C(8,1)) / 2^8 = 18 / 256.
    pred_a, pred_b, labels = _paired_predictions(both=50, only_a=7, only_b=1, neither=3)
    result = mcnemar(pred_a, pred_b, labels)
    assert (result.b, result.c) == (7, 1)
    assert result.p_value == pytest.approx(18 / 256)
    assert result.method.startswith("exact binomial")
    for b, c in [(7, 1), (0, 5), (12, 12), (3, 9), (13, 11)]:
        pa, pb, y = _paired_predictions(both=5, only_a=b, only_b=c, neither=2)
        expected = binomtest(min(b, c), b + c, 0.5).pvalue
        assert mcnemar(pa, pb, y).p_value == pytest.approx(expected, rel=1e-9)


def test_mcnemar_switches_method_at_25_discordant_pairs() -> None:
    below = mcnemar(*_paired_predictions(both=10, only_a=14, only_b=10, neither=0))
    at = mcnemar(*_paired_predictions(both=10, only_a=15, only_b=10, neither=0))
    assert below.b + below.c == MCNEMAR_EXACT_BELOW - 1 and below.method.startswith("exact")
    assert at.b + at.c == MCNEMAR_EXACT_BELOW and at.method.startswith("chi-square")


def test_mcnemar_identical_classifiers_and_multiclass() -> None:
    same = mcnemar([0, 1, 2, 2], [0, 1, 2, 2], [0, 1, 1, 2])
    assert (same.b, same.c, same.p_value) == (0, 0, 1.0)
    # Disagreeing wrong answers are concordant (both wrong), not discordant.
    multi = mcnemar(np.array([0, 2, 1]), np.array([0, 1, 2]), np.array([0, 0, 2]))
    assert (multi.b, multi.c) == (0, 1)
    with pytest.raises(ValueError):
        mcnemar([0, 1], [0], [0, 1])


def test_accuracy_and_macro_f1_hand_worked() -> None:
    labels = [0, 0, 1, 1, 2]
    preds = [0, 1, 1, 1, 0]
    assert accuracy(preds, labels) == pytest.approx(3 / 5)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fn1 -> 0.
    assert macro_f1(preds, labels) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert macro_f1(np.array([1, 1]), np.array([1, 1])) == 1.0
    assert macro_f1([1, 1], [1, 1], classes=[0, 1]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        accuracy([], [])
