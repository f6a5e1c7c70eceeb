"""The showdown table: every variant of a family side by side, with ratios against the baseline."""

from __future__ import annotations

import csv
import io
from typing import Any

from slimbert.store.manifest import VariantManifest

BASELINE = "baseline-fp32"
COLUMNS = ("variant", "runtime", "precision", "layers", "parameters", "size_mb", "dev_accuracy",
           "compression_ratio", "accuracy_delta", "parent", "technique")


def showdown_rows(manifests: list[VariantManifest]) -> list[dict[str, Any]]:
    """One row per variant; ratios are against ``baseline-fp32`` when the family has it."""
    base = next((m for m in manifests if m.variant == BASELINE), None)
    rows = []
    for m in sorted(manifests, key=lambda m: (m.variant != BASELINE, m.size_bytes)):
        rows.append({
            "variant": m.variant,
            "runtime": m.runtime,
            "precision": m.precision,
            "layers": m.num_layers,
            "parameters": m.num_parameters,
            "size_mb": round(m.size_mb, 2),
            "dev_accuracy": None if m.dev_accuracy is None else round(m.dev_accuracy, 4),
            "dev_examples": m.dev_examples,
            "compression_ratio": round(base.size_bytes / m.size_bytes, 2) if base and m.size_bytes else None,
            "accuracy_delta": (round(m.dev_accuracy - base.dev_accuracy, 4)
                               if base and m.dev_accuracy is not None and base.dev_accuracy is not None else None),
            "parent": m.parent,
            "technique": m.technique.name,
        })
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "N/A"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(rows: list[dict[str, Any]], family: str) -> str:
    header = "| " + " | ".join(COLUMNS) + " |"
    sep = "|" + "---|" * len(COLUMNS)
    lines = [f"## Showdown: {family}", "", header, sep]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    n = next((r["dev_examples"] for r in rows if r.get("dev_examples")), None)
    lines += ["", f"Accuracy: measured on {n} SST-2 dev sentences at creation, on the variant's own runtime. "
              "Size: bytes on disk of the variant's files. Ratios against baseline-fp32."]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
