"""docs/RESULTS.md sections: one per preset run, rewritten in place between markers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from slimbert.benchmark.stats import wilson_interval
from slimbert.records import BASELINE, Showdown
from slimbert.report.render import to_markdown
from slimbert.store.manifest import VariantManifest


def variants_table(manifests: list[VariantManifest]) -> str:
    """Per variant: test accuracy with its 95% Wilson interval, the validation accuracy that choices read,
    parameters, size, lineage."""
    lines = ["| variant | test accuracy [95% CI] | n test | validation accuracy (selects) | parameters | size (MB) "
             "| parent | technique |",
             "|---|---|---|---|---|---|---|---|"]
    for m in sorted(manifests, key=lambda m: (m.variant != BASELINE, m.variant)):
        if m.test_accuracy is not None and m.test_examples:
            lo, hi = wilson_interval(round(m.test_accuracy * m.test_examples), m.test_examples)
            acc = f"{m.test_accuracy:.4f} [{lo:.3f}, {hi:.3f}]"
        else:
            acc = "N/A"
        val = f"{m.validation_accuracy:.4f}" if m.validation_accuracy is not None else "N/A"
        lines.append(f"| {m.variant} | {acc} | {m.test_examples or '-'} | {val} | {m.num_parameters:,} | "
                     f"{m.size_mb:.1f} | "
                     f"{m.parent or '-'} | {m.technique.name} |")
    return "\n".join(lines)


def section(label: str, command: str, manifests: list[VariantManifest], report: Showdown,
            wall_seconds: float | None) -> str:
    recipe = manifests[0].recipe if manifests else {}
    wall = f" Job wall time: {wall_seconds / 60:.1f} min." if wall_seconds else ""
    return "\n".join([
        f"## Preset `{label}`: family `{report.family}`", "",
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
