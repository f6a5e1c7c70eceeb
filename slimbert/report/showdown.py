"""The showdown: every variant of a family side by side, from its manifests and its latest
benchmark run, with ratios against the baseline, an accuracy gate and recommendations."""

from __future__ import annotations

from typing import Any

from slimbert.report.pareto import pareto_frontier
from slimbert.store.manifest import VariantManifest

BASELINE = "baseline-fp32"
DEVICES = ("cpu", "gpu")
NO_RUN = "no benchmark run yet: POST /jobs/benchmark"


def _device_cell(run: dict[str, Any] | None, device: str, variant: str, batch_size: int) -> dict[str, Any]:
    """One variant's measurements on one device, or an N/A reason."""
    if run is None:
        return {"na": NO_RUN}
    dev = run["devices"].get(device)
    if dev is None:
        return {"na": f"{device} was not requested in run {run['run_id']}"}
    if "na" in dev or "error" in dev:
        return {"na": dev.get("na") or f"failed: {dev['error']}"}
    row = dev["variants"].get(variant)
    if row is None:
        return {"na": f"not in run {run['run_id']}"}
    if "na" in row:
        return {"na": row["na"]}
    lat = row.get("latency", {}).get(str(batch_size), {})
    mcn = row.get("mcnemar_vs_baseline")
    return {
        "accuracy": row.get("accuracy"), "accuracy_ci95": row.get("accuracy_ci95"), "macro_f1": row.get("macro_f1"),
        "latency_ms": lat.get("p50"), "p99_ms": lat.get("p99"), "spread_ms": lat.get("std"),
        "runs": lat.get("runs"), "throughput_seq_s": lat.get("throughput_seq_s"),
        "tokenize_ms": lat.get("tokenize_ms"),
        "peak_mem_mb": (row.get("peak_memory") or {}).get("peak_mb"),
        "mcnemar_p": None if mcn is None else mcn.get("p_value"), "load_ms": row.get("load_ms"),
        "accuracy_margin95": (row.get("paired_vs_baseline") or {}).get("margin95", 0.0),
        "gflops": (row.get("gflops_per_sequence") or {}).get("value"),
        "gflops_method": (row.get("gflops_per_sequence") or {}).get("method"),
        "latency_by_batch": {int(b): v["p50"] for b, v in row.get("latency", {}).items()},
    }


def build_showdown(
    family: str, manifests: list[VariantManifest], run: dict[str, Any] | None, *,
    batch_size: int = 1, gate: float = 0.99,
) -> dict[str, Any]:
    """The report as JSON: rows, best per column, recommendations, frontier and how it was measured."""
    if run is not None and batch_size not in run["spec"]["batch_sizes"]:
        batch_size = run["spec"]["batch_sizes"][0]
    base = next((m for m in manifests if m.variant == BASELINE), None)
    rows: list[dict[str, Any]] = []
    for m in sorted(manifests, key=lambda m: (m.variant != BASELINE, m.size_bytes)):
        row: dict[str, Any] = {
            "variant": m.variant, "runtime": m.runtime, "precision": m.precision, "layers": m.num_layers,
            "parameters": m.num_parameters, "size_mb": round(m.size_mb, 2), "parent": m.parent,
            "technique": m.technique.name, "dev_accuracy_at_creation": m.dev_accuracy,
            "compression_ratio": round(base.size_bytes / m.size_bytes, 2) if base and m.size_bytes else None,
        }
        for device in DEVICES:
            row[device] = _device_cell(run, device, m.variant, batch_size)
        rows.append(row)
    by_name = {r["variant"]: r for r in rows}
    for device in DEVICES:
        base_lat = by_name.get(BASELINE, {}).get(device, {}).get("latency_ms")
        for r in rows:
            lat = r[device].get("latency_ms")
            r[device]["speedup"] = round(base_lat / lat, 2) if base_lat and lat else None
    return {
        "family": family, "batch_size": batch_size, "gate": gate, "rows": rows,
        "best": _best(rows), "recommendations": _recommend(rows, gate),
        "pareto_cpu": pareto_frontier([(r["variant"], r["cpu"]["latency_ms"], r["cpu"]["accuracy"]) for r in rows
                                       if r["cpu"].get("latency_ms") and r["cpu"].get("accuracy") is not None]),
        "run": None if run is None else {"run_id": run["run_id"], "created_at": run["created_at"],
                                         "spec": run["spec"], "environment": _environment(run)},
    }


def _environment(run: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for device, dev in run["devices"].items():
        env = dev.get("environment") or {}
        out[device] = dev.get("na") or {
            "cpu": (env.get("cpu") or {}).get("model_name"), "flags": (env.get("cpu") or {}).get("flags"),
            "torch_threads": env.get("torch_threads"), "gpu": (env.get("cuda") or {}).get("device_name"),
            "libraries": env.get("libraries"), "worker": dev.get("worker"),
        }
    return out


_LOWER_IS_BETTER = {"size_mb", "parameters", "latency_ms", "p99_ms", "peak_mem_mb", "gflops"}
_HIGHER_IS_BETTER = {"accuracy", "throughput_seq_s", "macro_f1", "speedup", "compression_ratio"}


def _best(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Column key (``size_mb``, ``cpu.latency_ms``...) -> the variant with the best value."""
    best: dict[str, str] = {}
    columns: list[tuple[str, str | None]] = [(k, None) for k in ("size_mb", "parameters", "compression_ratio")]
    columns += [(k, d) for d in DEVICES for k in ("accuracy", "latency_ms", "p99_ms", "throughput_seq_s",
                                                   "peak_mem_mb", "gflops", "speedup")]
    for key, device in columns:
        values = [(r[device].get(key) if device else r.get(key), r["variant"]) for r in rows]
        values = [(v, n) for v, n in values if isinstance(v, int | float)]
        if values:
            pick = min(values) if key in _LOWER_IS_BETTER else max(values)
            best[f"{device}.{key}" if device else key] = pick[1]
    return best


def _passes(row: dict[str, Any], device: str, ref: float, gate: float) -> bool:
    """The gate uses the paired interval, as autotune does: a variant passes unless it is significantly
    (one-sided 95%) below gate x baseline on the same sentences."""
    cell = row[device]
    return (cell.get("accuracy") or 0) + (cell.get("accuracy_margin95") or 0) >= gate * ref


def _recommend(rows: list[dict[str, Any]], gate: float) -> dict[str, Any]:
    """Best CPU, best GPU and smallest variant among those passing the accuracy gate."""
    out: dict[str, Any] = {}
    base = next((r for r in rows if r["variant"] == BASELINE), None)
    for device in DEVICES:
        ref = base[device].get("accuracy") if base else None
        if ref is None:
            out[device] = {"na": f"no {device} accuracy for {BASELINE}"}
            continue
        ok = [r for r in rows if r[device].get("latency_ms") and _passes(r, device, ref, gate)]
        pick = min(ok, key=lambda r: r[device]["latency_ms"], default=None)
        out[device] = {"variant": pick["variant"], "latency_ms": pick[device]["latency_ms"],
                       "accuracy": pick[device]["accuracy"]} if pick else {"na": "no variant passes the gate"}
    ref = base["cpu"].get("accuracy") if base else None
    if ref is not None:
        ok = [r for r in rows if _passes(r, "cpu", ref, gate)]
    else:  # no benchmark run yet: creation-time accuracy, point estimates
        ref = (base or {}).get("dev_accuracy_at_creation")
        ok = [r for r in rows if ref is not None and (r["dev_accuracy_at_creation"] or 0) >= gate * ref]
    small = min(ok, key=lambda r: r["size_mb"], default=None)
    out["smallest"] = {"variant": small["variant"], "size_mb": small["size_mb"]} if small else {"na": "no baseline"}
    out["rule"] = (f"not significantly below {gate:.0%} of {BASELINE} on the same device and sentences "
                   "(accuracy + one-sided 95% paired margin >= threshold); fastest p50 wins")
    return out


def autotune_summary(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The winner and the trail of the newest autotune run, for the report."""
    if run is None:
        return None
    trail = [{"candidate": e["candidate"], "verdict": e.get("verdict") or f"skipped: {e.get('skipped')}",
              "dev_accuracy": (e.get("dev") or e.get("screen") or {}).get("accuracy"),
              "cost_vs_baseline": e.get("cost_vs_baseline")} for e in run.get("trail", [])]
    best = run.get("best") or {}
    return {"run_id": run["run_id"], "created_at": run["created_at"], "variant": run.get("variant"),
            "winner": best.get("candidate"), "cost_vs_baseline": best.get("cost_vs_baseline"),
            "target": run["spec"]["target"], "batch_size": run["spec"]["batch_size"],
            "threshold": run.get("threshold"), "stopped": run.get("stopped"), "trail": trail}
