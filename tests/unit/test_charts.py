"""Charts and their pure helpers: radar normalization, Pareto frontier, SVG/PNG output."""
from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_hex, to_rgb
from matplotlib.image import imread

from slimbert.report.charts import (
    RADAR_METRICS,
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


SVG = "{http://www.w3.org/2000/svg}"
RED, GREEN, GREY = "#c0392b", "#27ae60", "#7f8c8d"  # the charts' bar, frontier and off-frontier colours
TAB10 = [to_hex(colormaps["tab10"](i)) for i in range(10)]


def _assert_svg(data: bytes) -> ET.Element:
    """The parsed SVG (comments kept: matplotlib writes each text, drawn as glyph paths, in a comment)."""
    assert data.startswith(b"<?xml") or b"<svg" in data[:500]
    assert data.rstrip().endswith(b"</svg>")
    root = ET.fromstring(data, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
    assert root.tag == f"{SVG}svg"
    return root


def _texts(root: ET.Element) -> list[str]:
    """Every text the chart draws (tick labels, axis labels, title, legend, annotations), in drawing order."""
    return [line.strip() for el in root.iter() if el.tag is ET.Comment and el.text
            for line in el.text.strip().splitlines()]


def _style(el: ET.Element) -> dict[str, str]:
    return dict(part.strip().split(": ", 1) for part in el.get("style", "").split(";") if ": " in part)


def _vertices(d: str) -> list[tuple[float, float]]:
    assert re.fullmatch(r"[\sML0-9.e-]+z?\s*", d), f"not a polyline: {d[:80]}"
    numbers = [float(n) for n in re.findall(r"-?[0-9.]+(?:e-?[0-9]+)?", d)]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def _data_lines(root: ET.Element) -> list[tuple[list[tuple[float, float]], dict[str, str]]]:
    """The plotted series: polylines inside the axes (clipped) in a colour of the cycle, not grid lines."""
    lines = []
    for g in root.iter(f"{SVG}g"):
        if not g.get("id", "").startswith("line2d_"):
            continue
        for path in g.findall(f"{SVG}path"):
            style = _style(path)
            if path.get("clip-path") and style.get("stroke") in TAB10:
                lines.append((_vertices(path.get("d", "")), style))
    return lines


def _clipped_fills(root: ET.Element, prefix: str) -> list[tuple[list[tuple[float, float]], str]]:
    """(vertices, fill colour) of the clipped filled shapes whose group id starts with ``prefix``."""
    shapes = []
    for g in root.iter(f"{SVG}g"):
        if g.get("id", "").startswith(prefix):
            for path in g.findall(f"{SVG}path"):
                if path.get("clip-path") and "fill" in _style(path) and _style(path)["fill"] != "none":
                    shapes.append((_vertices(path.get("d", "")), _style(path)["fill"]))
    return shapes


def _scatter_points(root: ET.Element) -> list[tuple[float, float, str]]:
    """(x, y, fill) of every scatter marker, in drawing order."""
    return [(float(use.get("x", "nan")), float(use.get("y", "nan")), _style(use)["fill"])
            for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("PathCollection_")
            for use in g.iter(f"{SVG}use")]


def _assert_png(data: bytes, width: int, height: int, colours: list[str]) -> None:
    """A PNG of the figure's size that is not blank and shows ``colours`` (the series) in real areas."""
    assert data.startswith(PNG_MAGIC)
    image = imread(io.BytesIO(data), format="png")
    assert image.shape[:2] == (height, width)
    rgb = image[..., :3]
    distinct = len(np.unique(rgb.reshape(-1, 3), axis=0))
    assert distinct > 20, f"the image is blank or nearly so: {distinct} distinct colours"
    assert (rgb.min(axis=2) < 0.5).mean() > 0.002, "no dark pixels: no text or axes were drawn"
    for colour in colours:
        close = (np.abs(rgb - np.array(to_rgb(colour))).max(axis=2) < 0.02).sum()
        assert close >= 20, f"{colour} is (almost) absent: {close} pixels"


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
    # Shuffled: the bars must still come out in layer order.
    root = _assert_svg(sensitivity_chart([scores[i] for i in (2, 0, 3, 1)], fmt="svg"))
    texts = _texts(root)
    title = "Layer sensitivity: accuracy lost when one layer is removed"
    assert {"removed layer", "accuracy drop", title} <= set(texts)
    assert texts[:4] == ["0", "1", "2", "3"]  # one x tick per layer
    assert any(t.endswith("%") for t in texts)  # fractions shown as percentages
    bars = sorted(_clipped_fills(root, "patch_"), key=lambda bar: min(x for x, _ in bar[0]))
    # A layer whose removal helps (negative drop) is green, the others red.
    assert [fill for _, fill in bars] == [GREEN, RED, RED, RED]
    heights = [max(y for _, y in v) - min(y for _, y in v) for v, _ in bars]
    assert [h / heights[0] for h in heights] == pytest.approx([1, 1, 3, 5], rel=1e-3)  # |drop| 0.5, 0.5, 1.5, 2.5
    _assert_png(sensitivity_chart(scores, fmt="png"), 700, 450, [RED, GREEN])


def test_latency_chart_formats() -> None:
    series: dict[str, dict[str, dict[Any, float]]] = {
        "baseline": {"cpu": {1: 5.0, 8: 30.0, 32: 100.0}},
        "int8": {"cpu": {"1": 2.0, "8": 10.0, "32": 40.0}, "cuda": {1: 1.0, 8: 1.5, 32: 3.0}},
    }
    root = _assert_svg(latency_chart(series))
    texts = _texts(root)
    assert {"batch size", "p50 latency (ms)", "Latency vs batch size"} <= set(texts)
    assert texts[:3] == ["1", "8", "32"]  # the batch sizes as x ticks
    assert texts[-3:] == ["baseline (cpu)", "int8 (cpu)", "int8 (cuda)"]  # the legend, one entry per series
    lines = _data_lines(root)
    plotted = [(v, st) for v, st in lines if len(v) == 3]
    assert len(plotted) == len(lines) == 3
    (base, base_style), (cpu, cpu_style), (cuda, cuda_style) = plotted
    # String and int batch sizes land on the same x positions; on a log2 axis 1, 8, 32 sit at 0, 3, 5.
    xs = [x for x, _ in base]
    assert [x for x, _ in cpu] == pytest.approx(xs) and [x for x, _ in cuda] == pytest.approx(xs)
    assert (xs[1] - xs[0]) / (xs[2] - xs[0]) == pytest.approx(3 / 5, rel=1e-3)
    # Higher latency is drawn higher (smaller SVG y), at every batch size and along each line.
    for (_, yb), (_, yc), (_, yg) in zip(base, cpu, cuda, strict=True):
        assert yb < yc < yg
    for line in (base, cpu, cuda):
        assert [y for _, y in line] == sorted((y for _, y in line), reverse=True)
    # Log y: baseline 5 -> 100 ms spans log10(20) decades, int8 cpu 2 -> 40 ms the same.
    assert base[0][1] - base[2][1] == pytest.approx(cpu[0][1] - cpu[2][1], rel=1e-3)
    # Colour is the variant, line style the device.
    assert base_style["stroke"] != cpu_style["stroke"] == cuda_style["stroke"]
    assert "stroke-dasharray" not in cpu_style and "stroke-dasharray" in cuda_style
    _assert_png(latency_chart(series, fmt="png"), 700, 450, TAB10[:2])
    empty = _assert_svg(latency_chart({}))  # an empty showdown still renders, with its axes and no series
    assert "Latency vs batch size" in _texts(empty) and _data_lines(empty) == []


def test_radar_and_accuracy_cost_charts() -> None:
    root = _assert_svg(radar_chart(ROWS, accuracy_range=(0.8, 0.95)))
    texts = _texts(root)
    for axis in ("size", "latency", "peak memory"):
        assert texts[texts.index(axis) + 1] == "(smaller is better)"
    assert texts[texts.index("accuracy") + 1] == "(higher is better)"
    assert "Outward is better (accuracy axis: 0.8 to 0.95)" in texts
    assert texts[-3:] == list(ROWS)  # the legend names every variant
    # One closed polygon per variant whose radii are its normalized scores (axes at 0, 90, 180, 270 degrees).
    polygons = [(v, st) for v, st in _data_lines(root) if len(v) == len(RADAR_METRICS) + 1]
    assert len(polygons) == len(ROWS)
    normalized = normalize_radar(ROWS, accuracy_range=(0.8, 0.95))
    for (vertices, _), name in zip(polygons, ROWS, strict=True):
        assert vertices[0] == vertices[-1]
        cx, cy = vertices[1][0], vertices[0][1]  # the first axis points right, the second up
        radii = [math.hypot(x - cx, y - cy) for x, y in vertices[:-1]]
        latency_radius = radii[1]  # every variant's latency is equal, so normalized to 1: the full radius
        expected = [normalized[name][key] for key, _, _ in RADAR_METRICS]
        assert [r / latency_radius for r in radii] == pytest.approx(expected, abs=1e-3)
    assert len({st["stroke"] for _, st in polygons}) == len(ROWS)
    _assert_png(radar_chart(ROWS, accuracy_range=(0.8, 0.95), fmt="png"), 700, 600, TAB10[:3])

    # By size: int8 (100 MB, 0.85) and pruned (200 MB, 0.95) are the frontier; baseline (500 MB, 0.92) is not.
    root = _assert_svg(accuracy_cost_chart(ROWS, "size_mb"))
    texts = _texts(root)
    assert {"size on disk (MB)", "accuracy", "Accuracy vs size on disk (MB)", "Pareto frontier"} <= set(texts)
    assert set(ROWS) <= set(texts)  # every variant is labelled
    points = sorted(_scatter_points(root))  # by x: int8, pruned, baseline
    assert [fill for _, _, fill in points] == [RED, RED, GREY]
    (x_int8, y_int8, _), (x_pruned, y_pruned, _), (x_base, y_base, _) = points
    assert (x_pruned - x_int8) / (x_base - x_int8) == pytest.approx(100 / 400, rel=1e-3)
    assert y_pruned < y_base < y_int8  # more accurate is higher
    assert (y_int8 - y_base) / (y_int8 - y_pruned) == pytest.approx(0.07 / 0.10, rel=1e-3)
    staircase = [v for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("line2d_")
                 for path in g.findall(f"{SVG}path") if path.get("clip-path") and _style(path).get("stroke") == RED
                 for v in [_vertices(path.get("d", ""))]]
    assert len(staircase) == 1  # int8 -> across at its accuracy -> up to pruned
    assert [c for vertex in staircase[0] for c in vertex] == pytest.approx(
        [x_int8, y_int8, x_pruned, y_int8, x_pruned, y_pruned])
    _assert_png(accuracy_cost_chart(ROWS, "size_mb", fmt="png"), 700, 450, [RED])
    # By latency all three cost 20 ms: the most accurate (pruned) alone is the frontier, so no staircase.
    root = _assert_svg(accuracy_cost_chart(ROWS, "latency_ms"))
    texts = _texts(root)
    assert {"p50 latency (ms)", "Accuracy vs p50 latency (ms)"} <= set(texts) and "Pareto frontier" not in texts
    assert set(ROWS) <= set(texts)
    points = _scatter_points(root)
    assert len(points) == 3 and len({round(x, 3) for x, _, _ in points}) == 1
    assert [fill for _, y, fill in sorted(points, key=lambda p: p[1])] == [RED, GREY, GREY]  # top: pruned
    _assert_png(accuracy_cost_chart(ROWS, "latency_ms", fmt="png"), 700, 450, [RED, GREY])


def test_svg_is_deterministic_and_format_checked() -> None:
    assert radar_chart(ROWS, (0.8, 0.95)) == radar_chart(ROWS, (0.8, 0.95))
    with pytest.raises(ValueError):
        accuracy_cost_chart(ROWS, "size_mb", fmt="gif")  # type: ignore[arg-type]
