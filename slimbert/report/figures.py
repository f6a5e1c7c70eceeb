"""The showdown's charts, drawn from the report JSON and the family's manifests."""

from __future__ import annotations

from typing import Any, Literal

from slimbert.report.charts import accuracy_cost_chart, latency_chart, radar_chart, sensitivity_chart
from slimbert.store.manifest import VariantManifest

CHARTS = ("sensitivity", "latency", "radar", "accuracy-latency", "accuracy-gflops")
ChartName = Literal["sensitivity", "latency", "radar", "accuracy-latency", "accuracy-gflops"]


def sensitivity_scores(manifests: list[VariantManifest]) -> list[dict[str, Any]]:
    """Layer-ablation scores recorded by the job that pruned layers, if any."""
    for m in manifests:
        for source in (m.technique.params, m.extra):
            scores = source.get("sensitivity")
            if scores:
                return [{"layer": s["layer"], "accuracy": s["accuracy"], "loss": s.get("loss"),
                         "drop": s.get("accuracy_drop", s.get("drop", 0.0))} for s in scores]
    return []


def chart(name: str, report: dict[str, Any], manifests: list[VariantManifest], fmt: Literal["svg", "png"],
          accuracy_range: tuple[float, float] = (0.80, 0.95)) -> bytes | None:
    """One chart's bytes, or None when the data for it does not exist yet."""
    rows = report["rows"]
    if name == "sensitivity":
        scores = sensitivity_scores(manifests)
        return sensitivity_chart(scores, fmt=fmt) if scores else None
    if name == "latency":
        series = {r["variant"]: {d: r[d]["latency_by_batch"] for d in ("cpu", "gpu") if r[d].get("latency_by_batch")}
                  for r in rows}
        series = {k: v for k, v in series.items() if v}
        return latency_chart(series, fmt=fmt) if series else None
    cpu = {r["variant"]: {"size_mb": r["size_mb"], "latency_ms": r["cpu"].get("latency_ms"),
                          "peak_mem_mb": r["cpu"].get("peak_mem_mb"), "accuracy": r["cpu"].get("accuracy"),
                          "gflops": r["cpu"].get("gflops")} for r in rows if r["cpu"].get("accuracy") is not None}
    if not cpu:
        return None
    if name == "radar":
        return radar_chart(cpu, accuracy_range=accuracy_range, fmt=fmt)
    if name == "accuracy-latency":
        return accuracy_cost_chart(cpu, cost_key="latency_ms", fmt=fmt)
    if name == "accuracy-gflops":
        return accuracy_cost_chart(cpu, cost_key="gflops", fmt=fmt)
    raise ValueError(f"chart must be one of {CHARTS}, got {name!r}")
