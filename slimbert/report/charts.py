"""Showdown charts rendered off-screen with matplotlib, returned as SVG or PNG bytes.

Figures are built with the object-oriented API on an Agg canvas, never through pyplot: pyplot
keeps global figure state and picks a GUI backend, neither of which belongs in a worker process.
"""
from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from slimbert.report.pareto import pareto_frontier

logger = logging.getLogger(__name__)

ChartFormat = Literal["svg", "png"]

# Radar axes, in drawing order: (row key, axis label, lower is better).
RADAR_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("size_mb", "size", True),
    ("latency_ms", "latency", True),
    ("peak_mem_mb", "peak memory", True),
    ("accuracy", "accuracy", False),
)

_COST_LABELS = {
    "latency_ms": "p50 latency (ms)",
    "size_mb": "size on disk (MB)",
    "peak_mem_mb": "peak memory (MB)",
}


def _new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _render(fig: Figure, fmt: str) -> bytes:
    if fmt not in ("svg", "png"):
        raise ValueError(f"chart format must be 'svg' or 'png', got {fmt!r}")
    buffer = io.BytesIO()
    # A fixed hash salt and no date keep SVG output byte-identical for identical data.
    with rc_context({"svg.hashsalt": "slimbert"}):
        metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
        fig.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def sensitivity_chart(scores: Sequence[Mapping[str, Any]], fmt: ChartFormat = "svg") -> bytes:
    """Bar chart of the accuracy drop caused by removing each layer.

    ``scores`` are dicts with ``layer``, ``accuracy``, ``drop`` and ``loss``; ``drop`` is the
    baseline accuracy minus the accuracy without that layer, so tall bars mark layers to keep.
    """
    fig = _new_figure()
    ax = fig.add_subplot()
    ordered = sorted(scores, key=lambda s: int(s["layer"]))
    layers = [int(s["layer"]) for s in ordered]
    drops = [float(s["drop"]) for s in ordered]
    colors = ["#c0392b" if d > 0 else "#27ae60" for d in drops]
    ax.bar(layers, drops, color=colors)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(layers)
    ax.set_xlabel("removed layer")
    ax.set_ylabel("accuracy drop")
    accuracies = [float(s["accuracy"]) for s in ordered]
    if accuracies and max(accuracies) <= 1.0:
        # Fractions read better as percentage points.
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_title("Layer sensitivity: accuracy lost when one layer is removed")
    return _render(fig, fmt)


def latency_chart(series: Mapping[str, Mapping[str, Mapping[Any, float]]], fmt: ChartFormat = "svg") -> bytes:
    """Log-log plot of p50 latency against batch size, one line per variant and device.

    ``series[variant][device][batch_size] = p50_ms``; batch sizes may be ints or their string
    form (as after a JSON round trip). Colour encodes the variant, line style the device.
    """
    fig = _new_figure()
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    devices = sorted({device for per_device in series.values() for device in per_device})
    cmap = colormaps["tab10"]
    all_batches: set[int] = set()
    for index, (variant, per_device) in enumerate(series.items()):
        color = cmap(index % 10)
        for device, points in per_device.items():
            pairs = sorted((int(b), float(ms)) for b, ms in points.items() if _finite(ms) is not None)
            if not pairs:
                continue
            xs, ys = zip(*pairs, strict=True)
            all_batches.update(xs)
            ax.plot(xs, ys, marker="o", color=color, linestyle=styles[devices.index(device) % len(styles)],
                    label=f"{variant} ({device})")
    if all_batches:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(all_batches), labels=[str(b) for b in sorted(all_batches)])
        ax.legend(fontsize="small")
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("Latency vs batch size")
    ax.grid(True, which="major", alpha=0.3)
    return _render(fig, fmt)


def _scale_cost(value: float | None, lo: float, hi: float, alpha: float) -> float:
    if value is None:
        return alpha
    if hi == lo:
        return 1.0
    return alpha + (1.0 - alpha) * (hi - value) / (hi - lo)


def normalize_radar(
    rows: Mapping[str, Mapping[str, Any]],
    accuracy_range: tuple[float, float],
    alpha: float = 0.1,
) -> dict[str, dict[str, float]]:
    """Map each variant's metrics onto [alpha, 1], where 1 is best, for a radar chart.

    Cost metrics (``size_mb``, ``latency_ms``, ``peak_mem_mb``) are min-max scaled and inverted
    across variants: the smallest gets 1, the largest ``alpha``, all-equal values get 1. Accuracy
    is placed linearly on the fixed range ``accuracy_range = (lo, hi)`` and clipped, so a 0.2-point
    difference is not blown up to the full axis. ``alpha > 0`` keeps the worst variant visible.
    A missing or non-finite value counts as worst (``alpha``) so a chart never flatters a variant.
    """
    lo_acc, hi_acc = accuracy_range
    if not hi_acc > lo_acc:
        raise ValueError(f"accuracy_range must have lo < hi, got {accuracy_range}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    result: dict[str, dict[str, float]] = {name: {} for name in rows}
    for key, _, lower_is_better in RADAR_METRICS:
        values = {name: _finite(row.get(key)) for name, row in rows.items()}
        if not lower_is_better:
            for name, value in values.items():
                if value is None:
                    result[name][key] = alpha
                    continue
                t = min(1.0, max(0.0, (value - lo_acc) / (hi_acc - lo_acc)))
                result[name][key] = alpha + (1.0 - alpha) * t
            continue
        known = [v for v in values.values() if v is not None]
        lo, hi = (min(known), max(known)) if known else (0.0, 0.0)
        for name, value in values.items():
            result[name][key] = _scale_cost(value, lo, hi, alpha)
    return result


def radar_chart(
    rows: Mapping[str, Mapping[str, Any]],
    accuracy_range: tuple[float, float],
    alpha: float = 0.1,
    fmt: ChartFormat = "svg",
) -> bytes:
    """Radar chart of size, latency, peak memory and accuracy per variant; outward is better.

    Values come from :func:`normalize_radar`; axis labels say the raw direction.
    """
    normalized = normalize_radar(rows, accuracy_range, alpha)
    fig = _new_figure(7.0, 6.0)
    ax = fig.add_subplot(projection="polar")
    angles = np.linspace(0.0, 2.0 * math.pi, len(RADAR_METRICS), endpoint=False).tolist()
    closed_angles = angles + angles[:1]
    for name, metrics in normalized.items():
        values = [metrics[key] for key, _, _ in RADAR_METRICS]
        ax.plot(closed_angles, values + values[:1], linewidth=1.5, label=name)
        ax.fill(closed_angles, values + values[:1], alpha=0.1)
    labels = [f"{label}\n({'smaller' if lower else 'higher'} is better)" for _, label, lower in RADAR_METRICS]
    ax.set_xticks(angles, labels=labels)
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0], labels=[])
    lo, hi = accuracy_range
    ax.set_title(f"Outward is better (accuracy axis: {lo:g} to {hi:g})", pad=24)
    if normalized:
        fig.legend(loc="outside lower center", ncols=min(4, len(normalized)), fontsize="small")
    return _render(fig, fmt)


def accuracy_cost_chart(
    rows: Mapping[str, Mapping[str, Any]],
    cost_key: str = "latency_ms",
    fmt: ChartFormat = "svg",
) -> bytes:
    """Scatter of accuracy against a cost (``latency_ms``, ``size_mb``...) with the Pareto frontier.

    Every variant is labelled; the frontier (no other variant is both cheaper and more accurate)
    is drawn as a staircase through its members.
    """
    fig = _new_figure()
    ax = fig.add_subplot()
    points: list[tuple[str, float, float]] = []
    for name, row in rows.items():
        cost, acc = _finite(row.get(cost_key)), _finite(row.get("accuracy"))
        if cost is not None and acc is not None:
            points.append((name, cost, acc))
    skipped = set(rows) - {name for name, _, _ in points}
    if skipped:
        logger.warning("accuracy_cost_chart: no %s/accuracy for %s", cost_key, sorted(skipped))
    frontier = set(pareto_frontier(points))
    for name, cost, acc in points:
        on_front = name in frontier
        ax.scatter([cost], [acc], s=50 if on_front else 30, color="#c0392b" if on_front else "#7f8c8d",
                   zorder=3)
        ax.annotate(name, (cost, acc), textcoords="offset points", xytext=(5, 5), fontsize="small")
    front_points = sorted((c, a) for n, c, a in points if n in frontier)
    if len(front_points) > 1:
        xs, ys = zip(*front_points, strict=True)
        ax.step(xs, ys, where="post", color="#c0392b", linewidth=1.2, label="Pareto frontier")
        ax.legend(fontsize="small", loc="lower right")
    ax.set_xlabel(_COST_LABELS.get(cost_key, cost_key))
    ax.set_ylabel("accuracy")
    ax.set_title(f"Accuracy vs {_COST_LABELS.get(cost_key, cost_key)}")
    ax.grid(True, alpha=0.3)
    return _render(fig, fmt)
