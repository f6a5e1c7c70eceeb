"""Charts and their pure helpers: radar normalization, Pareto frontier, SVG/PNG output."""
from __future__ import annotations

from typing import Any

import pytest

from slimbert.report.charts import (
    accuracy_cost_chart,
    latency_chart,
    normalize_radar,
    radar_chart,
    sensitivity_chart,
)
from slimbert.report.pareto import pareto_frontier

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ROWS: dict[str, dict[str, Any]] = {
    "baseline": {"size_mb": 500.0, "latency_ms": 20.0, "peak_mem_mb": 900.0, "accuracy": 0.92},
    "int8": {"size_mb": 100.0, "latency_ms": 20.0, "peak_mem_mb": 300.0, "accuracy": 0.85},
    "pruned": {"size_mb": 200.0, "latency_ms": 20.0, "peak_mem_mb": None, "accuracy": 0.95},
}


def _assert_svg(data: bytes) -> None:
    assert data.startswith(b"<?xml") or b"<svg" in data[:500]
    assert data.rstrip().endswith(b"</svg>")


def test_normalize_radar_exact_values() -> None:
    norm = normalize_radar(ROWS, accuracy_range=(0.80, 0.90), alpha=0.1)
    # size: min 100, max 500 -> 1.0, 0.1 and 0.1 + 0.9 * (500 - 200) / 400 = 0.775
    assert norm["int8"]["size_mb"] == pytest.approx(1.0)
    assert norm["baseline"]["size_mb"] == pytest.approx(0.1)
    assert norm["pruned"]["size_mb"] == pytest.approx(0.775)
    # latency: all equal -> every variant gets 1
    assert {v["latency_ms"] for v in norm.values()} == {1.0}
    # peak memory: a missing value counts as worst
    assert norm["int8"]["peak_mem_mb"] == pytest.approx(1.0)
    assert norm["baseline"]["peak_mem_mb"] == pytest.approx(0.1)
    assert norm["pruned"]["peak_mem_mb"] == pytest.approx(0.1)
    # accuracy: linear on the fixed range [0.80, 0.90], then clipped to [alpha, 1]
    assert norm["int8"]["accuracy"] == pytest.approx(0.1 + 0.9 * 0.5)
    assert norm["baseline"]["accuracy"] == pytest.approx(1.0)
    assert norm["pruned"]["accuracy"] == pytest.approx(1.0)
    one = {"size_mb": 1, "latency_ms": 1, "peak_mem_mb": 1, "accuracy": 0.5}
    low = normalize_radar({"bad": one}, (0.8, 0.9))
    assert low["bad"] == pytest.approx({**{key: 1.0 for key in one if key != "accuracy"}, "accuracy": 0.1})


def test_normalize_radar_respects_alpha_and_validates() -> None:
    norm = normalize_radar(ROWS, accuracy_range=(0.80, 0.90), alpha=0.0)
    assert norm["baseline"]["size_mb"] == 0.0
    assert all(0.0 <= v <= 1.0 for metrics in norm.values() for v in metrics.values())
    with pytest.raises(ValueError):
        normalize_radar(ROWS, accuracy_range=(0.9, 0.9))
    with pytest.raises(ValueError):
        normalize_radar(ROWS, accuracy_range=(0.8, 0.9), alpha=1.0)


def test_pareto_frontier() -> None:
    points = [
        ("baseline", 20.0, 0.92),
        ("int8", 8.0, 0.91),
        ("distilled", 10.0, 0.90),  # dominated by int8: slower and less accurate
        ("tiny", 2.0, 0.80),
        ("same-acc-slower", 25.0, 0.92),  # dominated by baseline
        ("twin", 8.0, 0.91),  # an exact tie stays on the frontier
        ("broken", float("nan"), 0.99),
    ]
    assert pareto_frontier(points) == ["tiny", "int8", "twin", "baseline"]
    assert pareto_frontier([]) == []


def test_sensitivity_chart_formats() -> None:
    scores = [
        {"layer": i, "accuracy": 0.9 - 0.01 * i, "drop": 0.01 * i - 0.005, "loss": 0.3} for i in range(4)
    ]
    _assert_svg(sensitivity_chart(scores, fmt="svg"))
    assert sensitivity_chart(scores, fmt="png").startswith(PNG_MAGIC)


def test_latency_chart_formats() -> None:
    series: dict[str, dict[str, dict[Any, float]]] = {
        "baseline": {"cpu": {1: 5.0, 8: 30.0, 32: 100.0}},
        "int8": {"cpu": {"1": 2.0, "8": 10.0, "32": 40.0}, "cuda": {1: 1.0, 8: 1.5, 32: 3.0}},
    }
    _assert_svg(latency_chart(series))
    assert latency_chart(series, fmt="png").startswith(PNG_MAGIC)
    _assert_svg(latency_chart({}))  # an empty showdown still renders


def test_radar_and_accuracy_cost_charts() -> None:
    _assert_svg(radar_chart(ROWS, accuracy_range=(0.8, 0.95)))
    assert radar_chart(ROWS, accuracy_range=(0.8, 0.95), fmt="png").startswith(PNG_MAGIC)
    for cost in ("latency_ms", "size_mb"):
        _assert_svg(accuracy_cost_chart(ROWS, cost))
        assert accuracy_cost_chart(ROWS, cost, fmt="png").startswith(PNG_MAGIC)


def test_svg_is_deterministic_and_format_checked() -> None:
    assert radar_chart(ROWS, (0.8, 0.95)) == radar_chart(ROWS, (0.8, 0.95))
    with pytest.raises(ValueError):
        accuracy_cost_chart(ROWS, "size_mb", fmt="gif")  # type: ignore[arg-type]
