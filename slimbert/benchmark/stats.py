"""Accuracy statistics for the showdown: point estimates, confidence intervals, paired tests.

Inputs are array-likes of integer class ids (lists, numpy arrays or CPU tensors) of equal length.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from slimbert.metrics import _paired

# Below this many discordant pairs the chi-square approximation is poor; the exact test is used.
MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class McNemarResult:
    """Outcome of McNemar's paired test on two classifiers scored on the same examples.

    ``b``: A right and B wrong; ``c``: A wrong and B right. ``statistic`` is min(b, c) for the
    exact test and the continuity-corrected chi-square value otherwise; ``method`` says which.
    """

    b: int
    c: int
    statistic: float
    p_value: float
    method: str

    def significant(self, alpha: float = 0.05) -> bool:
        """True when the two classifiers' error rates differ at level ``alpha``."""
        return self.p_value < alpha

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)


def mcnemar(pred_a: ArrayLike, pred_b: ArrayLike, labels: ArrayLike) -> McNemarResult:
    """McNemar's test of whether classifiers A and B have different error rates on paired data.

    Uses the exact two-sided binomial test on the discordant pairs when b + c < 25 (Edwards'
    chi-square approximation is unreliable there) and chi-square with continuity correction,
    (|b - c| - 1)^2 / (b + c) on 1 degree of freedom, otherwise.
    """
    a, y = _paired(pred_a, labels)
    bp, _ = _paired(pred_b, labels)
    a_right = a == y
    b_right = bp == y
    b = int(np.sum(a_right & ~b_right))
    c = int(np.sum(~a_right & b_right))
    n = b + c
    if n < MCNEMAR_EXACT_BELOW:
        method = f"exact binomial (two-sided, b+c={n} < {MCNEMAR_EXACT_BELOW})"
        if n == 0:
            return McNemarResult(b=b, c=c, statistic=0.0, p_value=1.0, method=method)
        # Two-sided exact p for p=0.5 is symmetric: twice the smaller tail, capped at 1.
        p_value = min(1.0, 2.0 * float(sps.binom.cdf(min(b, c), n, 0.5)))
        return McNemarResult(b=b, c=c, statistic=float(min(b, c)), p_value=p_value, method=method)
    statistic = (abs(b - c) - 1.0) ** 2 / n
    p_value = float(sps.chi2.sf(statistic, df=1))
    method = f"chi-square with continuity correction (df=1, b+c={n} >= {MCNEMAR_EXACT_BELOW})"
    return McNemarResult(b=b, c=c, statistic=float(statistic), p_value=p_value, method=method)


def paired_difference(pred_a: ArrayLike, pred_b: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same items, and its one-sided 95% margin.

    Pairing on the same sentences gives a far tighter interval than two independent Wilson
    intervals: only the items where the two disagree add variance.
    """
    a, b, y = (np.asarray(x) for x in (pred_a, pred_b, labels))
    d = (a == y).astype(float) - (b == y).astype(float)
    n = len(d)
    if n < 2:
        return float(d.mean()) if n else 0.0, float("inf")
    return float(d.mean()), float(1.645 * d.std(ddof=1) / math.sqrt(n))
