"""The primary metric of a task, every metric on a split, and the interval each is quoted with.

The primary metric is what gates, recommendations and autotune choose on (on validation) and what the
reports lead with (on test):
- ``accuracy`` for single-sentence tasks whose classes are about balanced;
- ``macro_f1`` when classes are imbalanced (TREC's ABBR is under 2% of its questions): accuracy there
  rewards ignoring the small classes;
- ``f1`` of the positive class for binary sentence-pair tasks (paraphrase detection, as GLUE scores MRPC):
  always answering "paraphrase" already scores 0.68 accuracy on MRPC.

Intervals: Wilson for accuracy (a binomial proportion); a seeded percentile bootstrap over examples for
the F1s, which are not proportions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from slimbert.records import MetricChoice, MetricName


def _as_labels(values: ArrayLike, name: str) -> NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr

def _paired(preds: ArrayLike, labels: ArrayLike) -> tuple[NDArray[Any], NDArray[Any]]:
    p = _as_labels(preds, "preds")
    y = _as_labels(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"preds and labels differ in length: {p.shape[0]} vs {y.shape[0]}")
    if p.size == 0:
        raise ValueError("preds and labels are empty")
    return p, y

def accuracy(preds: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predictions equal to their label."""
    p, y = _paired(preds, labels)
    return float(np.mean(p == y))

def macro_f1(preds: ArrayLike, labels: ArrayLike, classes: Sequence[int] | None = None) -> float:
    """Unweighted mean of per-class F1 over ``classes`` (default: every class seen in preds or labels).

    Matches scikit-learn's ``f1_score(average='macro')`` with ``zero_division=0``: a class with no
    true positives scores 0.
    """
    p, y = _paired(preds, labels)
    class_ids = np.unique(np.concatenate([p, y])) if classes is None else np.asarray(list(classes))
    if class_ids.size == 0:
        raise ValueError("no classes to average over")
    scores = []
    for cls in class_ids:
        tp = int(np.sum((p == cls) & (y == cls)))
        fp = int(np.sum((p == cls) & (y != cls)))
        fn = int(np.sum((p != cls) & (y == cls)))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))

def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``correct / n``.

    Preferred over the normal (Wald) interval because it stays inside [0, 1] and keeps its
    coverage near 0% and 100% accuracy, where compressed models often sit. ``n == 0`` gives (0, 1).
    """
    if n < 0 or correct < 0 or correct > n:
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = float(sps.norm.ppf(0.5 + confidence / 2.0))
    phat = correct / n
    denom = 1.0 + z * z / n
    centre = (phat + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(phat * (1.0 - phat) / n + z * z / (4.0 * n * n)) / denom
    # At 0% and 100% the bound is exactly 0 or 1; pin it rather than keep a rounding error.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


# The smallest class under this share of the largest makes a task imbalanced: its primary metric is macro-F1.
IMBALANCE_RATIO = 0.5
BOOTSTRAP_RESAMPLES = 1000
# The positive class of a binary task is label id 1 (GLUE's "1": paraphrase, positive, entailment).
POSITIVE_ID = 1


def f1_positive(preds: Sequence[int], labels: Sequence[int], positive: int = POSITIVE_ID) -> float:
    """F1 of the ``positive`` class alone (scikit-learn's ``f1_score(pos_label=positive)``, zero_division=0)."""
    p, y = np.asarray(preds), np.asarray(labels)
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"need equal, non-empty preds and labels, got {p.size} and {y.size}")
    tp = int(np.sum((p == positive) & (y == positive)))
    denom = 2 * tp + int(np.sum((p == positive) & (y != positive))) + int(np.sum((p != positive) & (y == positive)))
    return 2 * tp / denom if denom else 0.0


def choose_metric(requested: MetricChoice, *, pair: bool, label_counts: Sequence[int]) -> MetricName:
    """The primary metric: the recipe's choice, or by the rules above from the task and train's label counts."""
    if requested != "auto":
        if requested == "f1" and len(label_counts) != 2:
            raise ValueError(f"metric 'f1' (of the positive class) needs a binary task, this one has "
                             f"{len(label_counts)} labels: use 'macro_f1'")
        return requested
    if pair and len(label_counts) == 2:
        return "f1"
    counts = [c for c in label_counts if c > 0]
    if counts and min(counts) < IMBALANCE_RATIO * max(counts):
        return "macro_f1"
    return "accuracy"


def score(metric: MetricName, preds: Sequence[int], labels: Sequence[int], num_labels: int) -> float:
    if metric == "accuracy":
        return accuracy(preds, labels)
    if metric == "macro_f1":
        # Over every label of the task, so a class the model never predicts (and the split lacks) still counts.
        return macro_f1(preds, labels, classes=range(num_labels))
    return f1_positive(preds, labels)


def all_metrics(preds: Sequence[int], labels: Sequence[int], num_labels: int, digits: int | None = None
                ) -> dict[str, float]:
    """accuracy and macro_f1 always; f1 of the positive class for binary tasks; exact unless ``digits`` rounds
    them (a manifest keeps them exact: its accuracy is checked against a rescoring of the same files)."""
    names: list[MetricName] = ["accuracy", "macro_f1"]
    if num_labels == 2:
        names.append("f1")
    values: dict[str, float] = {m: score(m, preds, labels, num_labels) for m in names}
    return values if digits is None else {m: round(v, digits) for m, v in values.items()}


def interval(metric: MetricName, preds: Sequence[int], labels: Sequence[int], num_labels: int, *,
             seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """95% interval of ``metric``: Wilson for accuracy, a seeded percentile bootstrap for the F1s."""
    p, y = np.asarray(preds), np.asarray(labels)
    if metric == "accuracy":
        return wilson_interval(int(np.sum(p == y)), int(y.size))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, y.size, size=(resamples, y.size))
    values = np.sort([score(metric, p[d].tolist(), y[d].tolist(), num_labels) for d in draws])
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def paired_bootstrap_margin(metric: MetricName, cand: Sequence[int], base: Sequence[int], labels: Sequence[int],
                            num_labels: int, *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
                            ) -> tuple[float, float]:
    """(candidate minus baseline ``metric`` on the same examples, its one-sided 95% margin): both scored on
    each of ``resamples`` seeded resamples of the examples, as the paired accuracy difference is for accuracy."""
    c, b, y = np.asarray(cand), np.asarray(base), np.asarray(labels)
    observed = score(metric, c.tolist(), y.tolist(), num_labels) - score(metric, b.tolist(), y.tolist(), num_labels)
    rng = np.random.default_rng(seed)
    diffs = []
    for d in rng.integers(0, y.size, size=(resamples, y.size)):
        yd = y[d].tolist()
        diffs.append(score(metric, c[d].tolist(), yd, num_labels) - score(metric, b[d].tolist(), yd, num_labels))
    return observed, float(observed - np.quantile(diffs, 0.05))
