"""The showdown as Markdown, CSV and an HTML page. All three carry the same numbers."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable
from typing import Any

from slimbert.records import BASELINE, AutotuneSummary, Device, Showdown, ShowdownRow
from slimbert.report.showdown import DEVICES

# (header, device or None, key of a ShowdownRow or of its DeviceCell, formatter)
Column = tuple[str, Device | None, str, Callable[[Any], str]]


def _num(digits: int) -> Callable[[Any], str]:
    return lambda v: f"{v:.{digits}f}"


def _acc(cell_value: Any) -> str:
    return f"{cell_value:.4f}"


COLUMNS: list[Column] = [
    ("Size (MB)", None, "size_mb", _num(2)),
    ("Params", None, "parameters", lambda v: f"{v / 1e6:.2f}M"),
    ("GFLOPs/seq", "cpu", "gflops", _num(3)),
    ("Accuracy (GPU)", "gpu", "accuracy", _acc),
    ("Latency (GPU, ms)", "gpu", "latency_ms", _num(2)),
    ("Peak GPU Mem (MB)", "gpu", "peak_mem_mb", _num(1)),
    ("Accuracy (CPU)", "cpu", "accuracy", _acc),
    ("95% CI (CPU)", "cpu", "accuracy_ci95", lambda v: f"[{v[0]:.3f}, {v[1]:.3f}]"),
    ("McNemar p", "cpu", "mcnemar_p", _num(3)),
    ("Latency (CPU, ms)", "cpu", "latency_ms", _num(2)),
    ("p99 (CPU, ms)", "cpu", "p99_ms", _num(2)),
    ("Throughput (CPU, seq/s)", "cpu", "throughput_seq_s", _num(1)),
    ("Peak CPU Mem (MB)", "cpu", "peak_mem_mb", _num(1)),
    ("Speed-up (CPU)", "cpu", "speedup", lambda v: f"{v:.2f}x"),
    ("Compression", None, "compression_ratio", lambda v: f"{v:.2f}x"),
]


_METRIC_TITLES = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "f1": "F1"}


def columns(report: Showdown) -> list[Column]:
    """The table's columns; a task whose primary metric is not accuracy leads with that metric, then accuracy."""
    if report.metric == "accuracy":
        return COLUMNS
    title = _METRIC_TITLES.get(report.metric, report.metric)
    at = next(i for i, c in enumerate(COLUMNS) if c[0] == "Accuracy (CPU)")
    primary: list[Column] = [(f"{title} (GPU)", "gpu", "metric_value", _acc),
                             (f"{title} (CPU)", "cpu", "metric_value", _acc),
                             (f"{title} 95% CI (CPU)", "cpu", "metric_ci95", lambda v: f"[{v[0]:.3f}, {v[1]:.3f}]")]
    return COLUMNS[:3] + primary + COLUMNS[3:at] + COLUMNS[at:]


def _value(row: ShowdownRow, device: Device | None, key: str) -> Any:
    return getattr(row.cell(device), key) if device else getattr(row, key)


def _cells(report: Showdown, bold: Callable[[str], str]) -> tuple[list[list[str]], list[str]]:
    """Table cells, best values marked with ``bold``; N/A cells point at numbered reasons."""
    reasons: list[str] = []
    table = []
    for row in report.rows:
        cells = [row.variant]
        for _, device, key, fmt in columns(report):
            value = _value(row, device, key)
            if value is None:
                reason = row.cell(device).na if device else None
                if reason:
                    if reason not in reasons:
                        reasons.append(reason)
                    cells.append(f"N/A [{reasons.index(reason) + 1}]")
                else:
                    cells.append("-")
                continue
            text = fmt(value)
            best_key = f"{device}.{key}" if device else key
            cells.append(bold(text) if report.best.get(best_key) == row.variant and len(report.rows) > 1
                         else text)
        table.append(cells)
    return table, reasons


def measured_line(report: Showdown) -> str:
    run = report.run
    if not run:
        return "No benchmark run yet: sizes and creation-time accuracy only."
    spec = run.spec
    parts = []
    for device, env in run.environment.items():
        if isinstance(env, str):
            parts.append(f"{device}: N/A ({env})")
        else:
            flags = ",".join(k for k, v in (env.flags or {}).items() if v)
            where = env.gpu or env.cpu
            parts.append(f"{device}: {where} [{flags}], {env.torch_threads} torch threads")
    return (f"Run {run.run_id} ({run.created_at}): batch {report.batch_size}, seq_len {spec.seq_len}, "
            f"{spec.runs} runs after {spec.warmup} warm-up, variants interleaved; latency = p50 model time "
            f"(tokenization apart). " + "; ".join(parts) + f". {_METRIC_TITLES.get(report.metric, report.metric)} "
            f"and accuracy on the test split ({report.dataset or 'GLUE SST-2 dev'}; nothing was selected on it) on "
            "each runtime, 95% intervals (Wilson for accuracy, a seeded bootstrap for F1); McNemar test on "
            f"per-example correctness paired against {BASELINE}. Peak memory, on both devices: weights plus one "
            "batch at the largest batch size (CPU: RSS peak of a fresh process above its RSS after imports; GPU: "
            "the variant's tensors plus the CUDA allocator's peak during the batch).")


def _pick_text(report: Showdown, key: str) -> str:
    item = report.recommendations.picks()[key]
    return item.variant if item.variant is not None else f"N/A ({item.na})"


def to_markdown(report: Showdown) -> str:
    table, reasons = _cells(report, lambda t: f"**{t}**")
    header = ["Model"] + [c[0] for c in columns(report)]
    lines = [f"## Showdown: {report.family}", "", measured_line(report), *splits_lines(report), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table]
    lines += [""] + [f"[{i + 1}] {r}" for i, r in enumerate(reasons)]
    rec = report.recommendations
    lines += ["", f"Recommendations ({rec.rule}):"]
    lines += [f"- {key}: {_pick_text(report, key)}" for key in rec.picks()]
    lines.append(f"- Pareto frontier, CPU {report.metric} vs latency: {', '.join(report.pareto_cpu) or 'N/A'}")
    lines += autotune_lines(report.autotune)
    return "\n".join(lines) + "\n"


def splits_lines(report: Showdown) -> list[str]:
    """Where each figure came from: the test split reports, the validation split chose (recommendations)."""
    s = report.splits
    if not s:
        return ["", "Splits: not recorded (variants made before the splits); accuracy is GLUE SST-2 dev's."]
    parts = [f"{name} {s[name]['examples']} ({s[name]['from']})" for name in ("train", "validation", "test")
             if name in s]
    sha = s.get("sha256")
    data = (f"Dataset: {s.get('dataset', report.dataset or 'glue-sst2')} ({s.get('task', 'single')}"
            f"{', sha256 ' + sha if sha else ''}); primary metric: {report.metric}.")
    return ["", data, f"Splits (seed {s.get('seed')}): " + "; ".join(parts) + ". Metric columns: test. "
            "Recommendations: validation."]


def autotune_lines(tune: AutotuneSummary | None) -> list[str]:
    if not tune:
        return []
    out = ["", f"Autotune run {tune.run_id}: winner {tune.winner or 'none'} -> variant {tune.variant or '-'} "
           f"({tune.target} at batch {tune.batch_size}, cost {tune.cost_vs_baseline} x baseline; "
           f"gate threshold {tune.threshold}; stopped: {tune.stopped})", "",
           "| candidate | verdict | validation accuracy (the gate's) | cost vs baseline |", "|---|---|---|---|"]
    out += [f"| {e.candidate} | {e.verdict} | {e.validation_accuracy if e.validation_accuracy is not None else '-'} "
            f"| {e.cost_vs_baseline if e.cost_vs_baseline is not None else '-'} |" for e in tune.trail]
    return out


def to_csv(report: Showdown) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = ["variant", "runtime", "precision", "layers", "parameters", "size_mb", "compression_ratio",
            "test_accuracy_at_creation", "validation_accuracy_at_creation", "test_metric_at_creation",
            "validation_metric_at_creation"]
    device_keys = ["accuracy", "accuracy_ci95", "macro_f1", "f1", "metric_value", "metric_ci95", "mcnemar_p",
                   "latency_ms", "p99_ms", "spread_ms",
                   "runs", "throughput_seq_s", "tokenize_ms", "peak_mem_mb", "gflops", "gflops_method", "speedup",
                   "na"]
    writer.writerow(keys + [f"{d}_{k}" for d in DEVICES for k in device_keys])
    for row in report.rows:
        values = [getattr(row, k) for k in keys]
        for device in DEVICES:
            for k in device_keys:
                v = getattr(row.cell(device), k)
                values.append(";".join(f"{x}" for x in v) if isinstance(v, list | tuple) else v)
        writer.writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def to_html(report: Showdown, charts: dict[str, str]) -> str:
    """A self-contained page; ``charts`` maps a title to inline SVG markup."""
    table, reasons = _cells(report, lambda t: f"<b>{t}</b>")
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in ["Model"] + [c[0] for c in columns(report)])
    body = "".join("<tr>" + "".join(f"<td>{c if c.startswith('<b>') else esc(c)}</td>" for c in cells) + "</tr>"
                   for cells in table)
    notes = "".join(f"<li>[{i + 1}] {esc(r)}</li>" for i, r in enumerate(reasons))
    rec = report.recommendations
    recs = "".join(f"<li><b>{k}</b>: {esc(_pick_text(report, k))}</li>" for k in rec.picks())
    figures = "".join(f"<figure><figcaption>{esc(t)}</figcaption>{svg}</figure>" for t, svg in charts.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SlimBERT showdown: {esc(report.family)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child {{ text-align: left; font-weight: 600; }}
figure {{ display: inline-block; margin: 1rem; vertical-align: top; }} figure svg {{ max-width: 640px; height: auto; }}
</style></head><body>
<h1>Showdown: {esc(report.family)}</h1>
<p class="measured">{esc(measured_line(report))}</p>
<table id="showdown"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<ul class="reasons">{notes}</ul>
<h2>Recommendations</h2><p>{esc(rec.rule)}</p><ul>{recs}</ul>
<p>Pareto frontier (CPU {esc(report.metric)} vs latency): {esc(', '.join(report.pareto_cpu) or 'N/A')}</p>
<h2>Autotune</h2><pre>{esc(chr(10).join(autotune_lines(report.autotune)) or "no autotune run yet")}</pre>
<h2>Charts</h2><div id="charts">{figures}</div>
</body></html>
"""
