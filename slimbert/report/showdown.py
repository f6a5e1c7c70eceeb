"""The showdown: every variant of a family side by side, from its manifests and its latest
benchmark run, with ratios against the baseline, an accuracy gate and recommendations."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from slimbert.records import (
    BASELINE,
    AutotuneSummary,
    AutotuneTrailEntry,
    BenchmarkRun,
    Device,
    DeviceCell,
    DeviceError,
    DeviceNA,
    DeviceRun,
    EnvironmentSummary,
    Pick,
    Recommendations,
    RunSummary,
    Showdown,
    ShowdownRow,
)
from slimbert.report.pareto import pareto_frontier
from slimbert.store.manifest import VariantManifest
from slimbert.store.store import VariantStore

log = logging.getLogger(__name__)
DEVICES: tuple[Device, ...] = ("cpu", "gpu")
NO_RUN = "no benchmark run yet: POST /jobs/benchmark"


def cpu_pick(family: str, manifests: list[VariantManifest], raw_run: Mapping[str, Any]) -> str | None:
    """The showdown's CPU recommendation (default batch size and gate) for a stored or about-to-be-stored
    run; None when the run cannot make a showdown, logged, so neither a job nor serving fails on it."""
    try:
        run = BenchmarkRun.model_validate(raw_run)
        return build_showdown(family, manifests, run).recommendations.cpu.variant
    except Exception as exc:  # a malformed run must not fail the job that saves it or the serving path
        log.warning("no CPU recommendation from run %s of %s: %s", raw_run.get("run_id"), family, exc)
        return None


def latest_benchmark_run(store: VariantStore, family: str) -> BenchmarkRun | None:
    """The family's newest stored benchmark run, read into its record."""
    raw = store.latest_report(family)
    return None if raw is None else BenchmarkRun.model_validate(raw)


def _device_cell(run: BenchmarkRun | None, device: Device, variant: str, batch_size: int) -> DeviceCell:
    """One variant's measurements on one device, or an N/A reason."""
    if run is None:
        return DeviceCell(na=NO_RUN)
    dev = run.devices.get(device)
    if dev is None:
        return DeviceCell(na=f"{device} was not requested in run {run.run_id}")
    if isinstance(dev, DeviceNA):
        return DeviceCell(na=dev.na)
    if isinstance(dev, DeviceError):
        return DeviceCell(na=f"failed: {dev.error}")
    row = dev.variants.get(variant)
    if row is None:
        return DeviceCell(na=f"not in run {run.run_id}")
    if row.na is not None:
        return DeviceCell(na=row.na)
    lat = row.latency.get(str(batch_size))
    gflops, paired = row.gflops_per_sequence, row.paired_vs_baseline
    return DeviceCell(
        accuracy=row.accuracy, accuracy_ci95=row.accuracy_ci95, macro_f1=row.macro_f1, f1=row.f1,
        metric_value=row.metric_value if row.metric_value is not None else row.accuracy,
        metric_ci95=row.metric_ci95 if row.metric_ci95 is not None else row.accuracy_ci95,
        latency_ms=lat.p50 if lat else None, p99_ms=lat.p99 if lat else None, spread_ms=lat.std if lat else None,
        runs=lat.runs if lat else None, throughput_seq_s=lat.throughput_seq_s if lat else None,
        tokenize_ms=lat.tokenize_ms if lat else None,
        peak_mem_mb=row.peak_memory.peak_mb if row.peak_memory else None,
        mcnemar_p=row.mcnemar_vs_baseline.p_value if row.mcnemar_vs_baseline else None, load_ms=row.load_ms,
        accuracy_margin95=paired.margin95 if paired else 0.0,
        gflops=gflops.value if gflops else None, gflops_method=gflops.method if gflops else None,
        latency_by_batch={int(b): v.p50 for b, v in row.latency.items()},
    )


def build_showdown(
    family: str, manifests: list[VariantManifest], run: BenchmarkRun | None, *,
    batch_size: int = 1, gate: float = 0.99,
) -> Showdown:
    """The report: rows, best per column, recommendations, frontier and how it was measured."""
    if run is not None and batch_size not in run.spec.batch_sizes:
        batch_size = run.spec.batch_sizes[0]
    base = next((m for m in manifests if m.variant == BASELINE), None)
    metric = base.metric if base else "accuracy"
    rows = [
        ShowdownRow(
            variant=m.variant, runtime=m.runtime, precision=m.precision, layers=m.num_layers,
            parameters=m.num_parameters, size_mb=round(m.size_mb, 2), parent=m.parent,
            technique=m.technique.name, test_accuracy_at_creation=m.test_accuracy,
            validation_accuracy_at_creation=m.validation_accuracy,
            test_metric_at_creation=_metric_of(m, "test"), validation_metric_at_creation=_metric_of(m, "validation"),
            compression_ratio=round(base.size_bytes / m.size_bytes, 2) if base and m.size_bytes else None,
            cpu=_device_cell(run, "cpu", m.variant, batch_size), gpu=_device_cell(run, "gpu", m.variant, batch_size),
        )
        for m in sorted(manifests, key=lambda m: (m.variant != BASELINE, m.size_bytes))
    ]
    base_row = next((r for r in rows if r.variant == BASELINE), None)
    for device in DEVICES:
        base_lat = base_row.cell(device).latency_ms if base_row else None
        for r in rows:
            lat = r.cell(device).latency_ms
            r.cell(device).speedup = round(base_lat / lat, 2) if base_lat and lat else None
    return Showdown(
        family=family, batch_size=batch_size, gate=gate, rows=rows,
        best=_best(rows), recommendations=_recommend(rows, gate, metric),
        pareto_cpu=pareto_frontier([(r.variant, r.cpu.latency_ms, r.cpu.metric_value) for r in rows
                                    if r.cpu.latency_ms and r.cpu.metric_value is not None]),
        run=None if run is None else RunSummary(run_id=run.run_id, created_at=run.created_at, spec=run.spec,
                                                environment=_environment(run)),
        splits=base.splits if base and base.splits else None, metric=metric, dataset=base.dataset if base else None,
    )


def _metric_of(m: VariantManifest, split: str) -> float | None:
    """The manifest's primary metric on ``split``; accuracy for manifests made before the metrics."""
    values = m.test_metrics if split == "test" else m.validation_metrics
    if m.metric in values:
        return values[m.metric]
    return m.test_accuracy if split == "test" else m.validation_accuracy


def _environment(run: BenchmarkRun) -> dict[str, str | EnvironmentSummary]:
    out: dict[str, str | EnvironmentSummary] = {}
    for device, dev in run.devices.items():
        if isinstance(dev, DeviceNA) and dev.na:
            out[device] = dev.na
            continue
        env = dev.environment if isinstance(dev, DeviceRun) else {}
        cpu = env.get("cpu") or {}
        out[device] = EnvironmentSummary(
            cpu=cpu.get("model_name"), flags=cpu.get("flags"), torch_threads=env.get("torch_threads"),
            gpu=(env.get("cuda") or {}).get("device_name"), libraries=env.get("libraries"),
            worker=dev.worker if isinstance(dev, DeviceRun) else None,
        )
    return out


_LOWER_IS_BETTER = {"size_mb", "parameters", "latency_ms", "p99_ms", "peak_mem_mb", "gflops"}
_HIGHER_IS_BETTER = {"accuracy", "throughput_seq_s", "macro_f1", "speedup", "compression_ratio"}


def _best(rows: list[ShowdownRow]) -> dict[str, str]:
    """Column key (``size_mb``, ``cpu.latency_ms``...) -> the variant with the best value."""
    best: dict[str, str] = {}
    columns: list[tuple[str, Device | None]] = [(k, None) for k in ("size_mb", "parameters", "compression_ratio")]
    columns += [(k, d) for d in DEVICES for k in ("accuracy", "latency_ms", "p99_ms", "throughput_seq_s",
                                                   "peak_mem_mb", "gflops", "speedup")]
    for key, device in columns:
        values = [(getattr(r.cell(device) if device else r, key), r.variant) for r in rows]
        values = [(v, n) for v, n in values if isinstance(v, int | float)]
        if values:
            pick = min(values) if key in _LOWER_IS_BETTER else max(values)
            best[f"{device}.{key}" if device else key] = pick[1]
    return best


def _passes(row: ShowdownRow, ref: float, gate: float) -> bool:
    """The gate reads the primary metric on the validation split, never the test split the table reports:
    a choice made on the figures it then shows would be optimistic by construction."""
    return (row.validation_metric_at_creation or 0) >= gate * ref


def _recommend(rows: list[ShowdownRow], gate: float, metric: str = "accuracy") -> Recommendations:
    """Best CPU, best GPU and smallest variant among those passing the gate (the primary metric) on validation."""
    picks: dict[Device, Pick] = {}
    base = next((r for r in rows if r.variant == BASELINE), None)
    ref = base.validation_metric_at_creation if base else None
    for device in DEVICES:
        if ref is None:
            picks[device] = Pick(na=f"no validation {metric} for {BASELINE}: remake the family to record one")
            continue
        ok = [r for r in rows if r.cell(device).latency_ms and _passes(r, ref, gate)]
        pick = min(ok, key=lambda r: r.cell(device).latency_ms or math.inf, default=None)
        picks[device] = (Pick(variant=pick.variant, latency_ms=pick.cell(device).latency_ms,
                              accuracy=pick.cell(device).accuracy) if pick else Pick(na="no variant passes the gate"))
    ok = [r for r in rows if ref is not None and _passes(r, ref, gate)]
    small = min(ok, key=lambda r: r.size_mb, default=None)
    return Recommendations(
        cpu=picks["cpu"], gpu=picks["gpu"],
        smallest=Pick(variant=small.variant, size_mb=small.size_mb) if small else Pick(na="no baseline"),
        rule=(f"validation {metric} (measured when the variant was made, on its runtime) >= {gate:.0%} of "
              f"{BASELINE}'s; fastest p50 wins. Validation selects; every figure shown is the test split's"),
    )


def autotune_summary(run: Mapping[str, Any] | None) -> AutotuneSummary | None:
    """The winner and the trail of the newest autotune run (as ``slimbert.orchestrate.autotune`` stores it)."""
    if run is None:
        return None
    trail = [AutotuneTrailEntry(candidate=e["candidate"], verdict=e.get("verdict") or f"skipped: {e.get('skipped')}",
                                validation_accuracy=(e.get("validation") or e.get("dev") or e.get("screen")
                                                     or {}).get("accuracy"),
                                cost_vs_baseline=e.get("cost_vs_baseline")) for e in run.get("trail", [])]
    best = run.get("best") or {}
    return AutotuneSummary(
        run_id=run["run_id"], created_at=run["created_at"], variant=run.get("variant"),
        winner=best.get("candidate"), cost_vs_baseline=best.get("cost_vs_baseline"),
        target=run["spec"]["target"], batch_size=run["spec"]["batch_size"],
        threshold=run.get("threshold"), stopped=run.get("stopped"), trail=trail)
