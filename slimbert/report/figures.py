"""The showdown's charts, drawn from the report and the family's manifests."""

from __future__ import annotations

from typing import Literal, TypedDict, get_args

from slimbert.records import Showdown
from slimbert.report.charts import accuracy_cost_chart, latency_chart, radar_chart, sensitivity_chart
from slimbert.report.showdown import DEVICES
from slimbert.store.manifest import VariantManifest

ChartName = Literal["sensitivity", "latency", "radar", "accuracy-latency", "accuracy-gflops"]
CHARTS: tuple[ChartName, ...] = get_args(ChartName)


class SensitivityScore(TypedDict):
    """One layer's ablation: dev accuracy without it, the loss, and the accuracy drop against the baseline."""

    layer: int
    accuracy: float
    loss: float | None
    drop: float


def sensitivity_scores(manifests: list[VariantManifest]) -> list[SensitivityScore]:
    """Layer-ablation scores recorded by the job that pruned layers, if any."""
    for m in manifests:
        for source in (m.technique.params, m.extra):
            scores = source.get("sensitivity")
            if scores:
                return [{"layer": s["layer"], "accuracy": s["accuracy"], "loss": s.get("loss"),
                         "drop": s.get("accuracy_drop", s.get("drop", 0.0))} for s in scores]
    return []


def chart(name: str, report: Showdown, manifests: list[VariantManifest], fmt: Literal["svg", "png"],
          accuracy_range: tuple[float, float] = (0.80, 0.95)) -> bytes | None:
    """One chart's bytes, or None when the data for it does not exist yet."""
    rows = report.rows
    if name == "sensitivity":
        scores = sensitivity_scores(manifests)
        return sensitivity_chart(scores, fmt=fmt) if scores else None
    if name == "latency":
        series: dict[str, dict[str, dict[int, float]]] = {
            r.variant: {d: r.cell(d).latency_by_batch for d in DEVICES if r.cell(d).latency_by_batch} for r in rows}
        series = {k: v for k, v in series.items() if v}
        return latency_chart(series, fmt=fmt) if series else None
    cpu = {r.variant: {"size_mb": r.size_mb, "latency_ms": r.cpu.latency_ms, "peak_mem_mb": r.cpu.peak_mem_mb,
                       "accuracy": r.cpu.accuracy, "gflops": r.cpu.gflops}
           for r in rows if r.cpu.accuracy is not None}
    if not cpu:
        return None
    if name == "radar":
        return radar_chart(cpu, accuracy_range=accuracy_range, fmt=fmt)
    if name == "accuracy-latency":
        return accuracy_cost_chart(cpu, cost_key="latency_ms", fmt=fmt)
    if name == "accuracy-gflops":
        return accuracy_cost_chart(cpu, cost_key="gflops", fmt=fmt)
    raise ValueError(f"chart must be one of {CHARTS}, got {name!r}")
