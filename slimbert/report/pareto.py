"""Pareto frontier of variants trading cost (latency, size, memory) against accuracy."""
from __future__ import annotations

import math
from collections.abc import Iterable


def pareto_frontier(points: Iterable[tuple[str, float, float]]) -> list[str]:
    """Names of the non-dominated points, ordered by increasing cost.

    Each point is ``(name, cost, accuracy)``; lower cost and higher accuracy are better. A point
    is dominated when another is at least as good on both axes and strictly better on one, so
    exact ties all stay on the frontier. Points with a non-finite cost or accuracy are ignored.
    """
    clean = [(n, float(c), float(a)) for n, c, a in points if math.isfinite(c) and math.isfinite(a)]
    # Sort by cost, best accuracy first among equal costs; then one sweep keeps each point that
    # beats the best accuracy seen at any lower cost.
    clean.sort(key=lambda p: (p[1], -p[2]))
    frontier: list[str] = []
    best_acc = -math.inf
    best_cost = math.nan
    for name, cost, acc in clean:
        if acc > best_acc:
            frontier.append(name)
            best_acc, best_cost = acc, cost
        elif acc == best_acc and cost == best_cost:
            frontier.append(name)
    return frontier
