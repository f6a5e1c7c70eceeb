"""docs/RESULTS.md sections: one per preset run, rewritten in place between markers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

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


def _epochs(sel: dict[str, Any] | None) -> str:
    if not sel or not sel.get("validation_by_epoch"):
        return "early stopping: not recorded"
    by = ", ".join(f"{v:.4f}" for v in sel["validation_by_epoch"])
    return (f"early stopping kept epoch {sel['kept_epoch']} of {sel['epochs_run']} run "
            f"(validation {sel['metric']} by epoch: {by})")


# What each technique chose, and on which split: nothing here reads the test split.
_CHOOSES_NOTHING = {"int8-dynamic": "nothing chosen (activation ranges are taken at run time)",
                    "fp16-bf16": "nothing chosen (a cast)", "int4-nf4": "nothing chosen (a fixed 4-bit grid)"}
_CALIBRATION = {"int8-static": "calibration ranges from train sentences",
                "int8-inductor": "calibration ranges from train sentences",
                "int8-qat": "quantization-aware training on train",
                "int8-mixed": "the fp32 layers by per-layer INT8 divergence on train probe sentences"}


def selections(manifests: list[VariantManifest]) -> str:
    """What the validation split (and train, where a stage calibrates) chose in the job, read from the
    manifests: the section shows test figures only, so this is where the choices are accounted for."""
    base = next((m for m in manifests if m.variant == BASELINE), None)
    val = (base.splits.get("validation") or {}) if base else {}
    lines = ["### What the validation split selected", "",
             f"Validation: {val.get('examples', base.validation_examples if base else '?')} examples "
             f"({val.get('from', 'origin not recorded')}). Everything below chose on it (or on train), never on test."]
    for m in sorted(manifests, key=lambda m: (m.variant != BASELINE, m.variant)):
        p, name = m.technique.params, m.technique.name
        if name == "finetune":
            what = (f"fine-tune skipped: {p['skipped']}" if "skipped" in p
                    else "fine-tune: " + _epochs(p.get("selected")))
        elif name == "layer-pruning":
            scores = m.extra.get("sensitivity") or []
            ranked = ", ".join(f"L{s['layer']} {s['accuracy']:.4f}" for s in scores)
            how = (f"the {len(p['dropped_layers'])} whose removal cost least on validation "
                   f"({m.metric} without each layer: {ranked})" if p.get("strategy") == "sensitivity" and scores
                   else f"by the {p.get('strategy')} rule (no data)")
            what = (f"dropped layers {p['dropped_layers']} of {p.get('layers_before')}, {how}; re-finetune"
                    f"{' distilled from ' + str(p.get('teacher')) if p.get('distilled') else ''}: "
                    + _epochs(p.get("refinetune_selected")))
        elif name == "head-ffn-pruning":
            what = "heads and FFN neurons by importance on train batches, pruned on its schedule while training"
        else:
            what = _CHOOSES_NOTHING.get(name) or _CALIBRATION.get(name, "see its manifest")
        lines.append(f"- `{m.variant}` ({name}): {what}.")
    lines.append("- The showdown's recommendations gate on each variant's validation figure (above).")
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
        selections(manifests), "",
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
