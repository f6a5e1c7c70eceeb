"""docs/RESULTS.md sections: one per preset run, rewritten in place between markers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from slimbert.compression.presets import PRESETS
from slimbert.metrics import wilson_interval
from slimbert.records import BASELINE, Showdown
from slimbert.report.render import to_markdown
from slimbert.store.manifest import VariantManifest


def variants_table(manifests: list[VariantManifest]) -> str:
    """Per variant: the primary metric on test with its 95% interval (Wilson for accuracy, a seeded bootstrap
    for F1), accuracy, the validation value that choices read, parameters, size, lineage."""
    metric = next((m.metric for m in manifests if m.variant == BASELINE), manifests[0].metric if manifests else "")
    lines = [f"| variant | test {metric} [95% CI] | test accuracy | n test | validation {metric} (selects) | "
             "parameters | size (MB) | parent | technique |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in sorted(manifests, key=lambda m: (m.variant != BASELINE, m.variant)):
        value = m.test_metrics.get(metric, m.test_accuracy if metric == "accuracy" else None)
        ci = m.test_metric_ci95
        if ci is None and metric == "accuracy" and m.test_accuracy is not None and m.test_examples:
            ci = wilson_interval(round(m.test_accuracy * m.test_examples), m.test_examples)
        primary = "N/A" if value is None else f"{value:.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        acc = f"{m.test_accuracy:.4f}" if m.test_accuracy is not None else "N/A"
        val = m.validation_metrics.get(metric, m.validation_accuracy if metric == "accuracy" else None)
        lines.append(f"| {m.variant} | {primary} | {acc} | {m.test_examples or '-'} | "
                     f"{'N/A' if val is None else f'{val:.4f}'} | {m.num_parameters:,} | {m.size_mb:.1f} | "
                     f"{m.parent or '-'} | {m.technique.name} |")
    return "\n".join(lines)


def section(label: str, command: str, manifests: list[VariantManifest], report: Showdown,
            wall_seconds: float | None) -> str:
    recipe = manifests[0].recipe if manifests else {}
    wall = f" Job wall time: {wall_seconds / 60:.1f} min." if wall_seconds else ""
    # A section named after its preset (the preset as it is), or after its task (a preset with overrides, on
    # a stored dataset or the embedded SST-2).
    kind = "Preset" if label in PRESETS else "Task"
    return "\n".join([
        f"## {kind} `{label}`: family `{report.family}`", "",
        f"Command: `{command}`.{wall}", "",
        "### Variants (accuracy at creation, on each variant's own runtime)", "", variants_table(manifests), "",
        to_markdown(report).replace("## Showdown:", "### Showdown:"),
        "<details><summary>Recipe (defaults resolved; every variant's manifest carries it)</summary>", "",
        "```json", json.dumps(recipe, indent=1), "```", "</details>", ""])


def write_section(path: Path, label: str, text: str) -> None:
    """Replace (or append) the section between this label's markers, leaving the rest intact."""
    begin, end = f"<!-- begin:{label} -->", f"<!-- end:{label} -->"
    block = f"{begin}\n{text}\n{end}"
    current = path.read_text() if path.exists() else "# Results\n\nMeasured on this project's machines; each " \
        "section names the command that produced it.\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    updated = pattern.sub(lambda _: block, current) if pattern.search(current) else current.rstrip() + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated + ("\n" if not updated.endswith("\n") else ""))
