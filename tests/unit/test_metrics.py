"""The primary metric per task, its interval, and the paired gate on F1."""

from __future__ import annotations

import numpy as np
import pytest

from slimbert.metrics import (
    all_metrics,
    choose_metric,
    f1_positive,
    interval,
    macro_f1,
    paired_bootstrap_margin,
    score,
    wilson_interval,
)
from slimbert.orchestrate.autotune_spec import paired_gate


def test_f1_of_the_positive_class_by_hand() -> None:
    gold = [1, 1, 1, 0, 0, 1]
    pred = [1, 0, 1, 1, 0, 1]  # tp 3, fp 1, fn 1
    assert f1_positive(pred, gold) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # Always answering "paraphrase" on MRPC's dev balance (279 of 408) scores F1 0.81, accuracy 0.68.
    gold = [1] * 279 + [0] * 129
    always = [1] * 408
    assert round(f1_positive(always, gold), 2) == 0.81 and round(score("accuracy", always, gold, 2), 2) == 0.68
    # The negative class's F1 is not the positive class's: swapping the labels changes it.
    assert f1_positive([1 - p for p in always], [1 - g for g in gold]) == 0.0


def test_choose_metric_by_task_and_balance() -> None:
    assert choose_metric("auto", pair=True, label_counts=[1194, 2474]) == "f1"  # MRPC train
    assert choose_metric("auto", pair=False, label_counts=[29780, 37569]) == "accuracy"  # SST-2 train
    # TREC: ABBR has 86 of 5,452 questions; accuracy would reward never answering it.
    assert choose_metric("auto", pair=False, label_counts=[86, 1162, 1250, 1223, 835, 896]) == "macro_f1"
    assert choose_metric("auto", pair=True, label_counts=[100, 100, 100]) == "accuracy"  # 3-way pairs: no positive
    assert choose_metric("macro_f1", pair=True, label_counts=[1, 2]) == "macro_f1"  # the recipe decides
    with pytest.raises(ValueError, match="binary"):
        choose_metric("f1", pair=False, label_counts=[5, 5, 5])


def test_macro_f1_counts_a_class_nobody_predicts() -> None:
    gold = [0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 1]  # class 2 never predicted: F1 0 for it
    assert score("macro_f1", pred, gold, 3) == pytest.approx((1 + 0.8 + 0) / 3)
    # Over every label of the task, even one neither side has in this split.
    assert score("macro_f1", [0, 1], [0, 1], 3) == pytest.approx(2 / 3)
    assert macro_f1([0, 1], [0, 1]) == 1.0  # the plain helper averages over the classes seen


def test_all_metrics_names_by_task() -> None:
    assert set(all_metrics([0, 1, 1], [0, 1, 0], 2)) == {"accuracy", "macro_f1", "f1"}
    assert set(all_metrics([0, 1, 2], [0, 1, 2], 3)) == {"accuracy", "macro_f1"}


def test_intervals_wilson_for_accuracy_bootstrap_for_f1() -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 300).tolist()
    pred = [g if rng.random() < 0.8 else 1 - g for g in gold]
    correct = sum(p == g for p, g in zip(pred, gold, strict=True))
    assert interval("accuracy", pred, gold, 2) == wilson_interval(correct, 300)
    lo, hi = interval("f1", pred, gold, 2, seed=3)
    value = f1_positive(pred, gold)
    assert lo < value < hi and 0.03 < hi - lo < 0.2
    assert interval("f1", pred, gold, 2, seed=3) == (lo, hi)  # seeded: the same interval every time
    assert interval("f1", pred, gold, 2, seed=4) != (lo, hi)


def test_paired_gate_on_f1_rejects_a_worse_candidate_and_passes_an_equal_one() -> None:
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 400).tolist()
    base = [g if rng.random() < 0.9 else 1 - g for g in gold]
    worse = [0 if (b == 1 and rng.random() < 0.4) else b for b in base]  # drops many positives
    same = list(base)
    bad = paired_gate(worse, base, gold, 0.99, metric="f1", num_labels=2)
    ok = paired_gate(same, base, gold, 0.99, metric="f1", num_labels=2)
    assert bad["metric"] == "f1" and not bad["passes"]
    assert ok["passes"] and ok["difference"] == 0.0
    # The accuracy key stays accuracy whatever the metric (the trail shows both).
    assert bad["accuracy"] == pytest.approx(sum(p == g for p, g in zip(worse, gold, strict=True)) / 400, abs=1e-4)
    diff, margin = paired_bootstrap_margin("f1", worse, base, gold, 2)
    assert diff < 0 < margin
