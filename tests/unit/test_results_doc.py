from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from slimbert.report.results import selections, variants_table, write_section
from slimbert.store.manifest import Technique, VariantManifest


def test_sections_are_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "RESULTS.md"
    write_section(doc, "quick", "first quick")
    write_section(doc, "study", "the study")
    write_section(doc, "quick", "second quick")
    text = doc.read_text()
    assert "first quick" not in text and text.count("second quick") == 1 and "the study" in text
    assert text.index("second quick") < text.index("the study")


def test_variant_rows_carry_wilson_intervals() -> None:
    m = VariantManifest(family="f", variant="baseline-fp32", runtime="torch", precision="fp32", base_model_id="x",
                        technique=Technique(name="finetune"), labels={0: "a", 1: "b"}, num_parameters=1000,
                        test_accuracy=0.8589, test_examples=872)
    row = variants_table([m]).splitlines()[2]
    # 749/872 correct: Wilson 95% interval [0.8343, 0.8805] (by hand: centre 0.8574, half-width 0.0231)
    assert "0.8589 [0.834, 0.880]" in row and "| 872 |" in row


def test_the_section_says_what_validation_selected() -> None:
    def manifest(variant: str, technique: Technique, **kw: Any) -> VariantManifest:
        return VariantManifest(family="f", variant=variant, runtime="torch", precision="fp32", base_model_id="x",
                               labels={0: "a", 1: "b"}, num_parameters=1000, technique=technique, metric="macro_f1",
                               **kw)
    base = manifest("baseline-fp32", Technique(name="finetune", params={"selected": {
        "kept_epoch": 2, "epochs_run": 3, "metric": "macro_f1", "validation_by_epoch": [0.91, 0.95, 0.94]}}),
        splits={"validation": {"examples": 545, "from": "545 of trec train, stratified by label, seed 0"}})
    scores = [{"layer": i, "accuracy": a, "loss": 0.1, "accuracy_drop": 0.0, "loss_increase": 0.0}
              for i, a in enumerate([0.2, 0.9, 0.93, 0.8, 0.94, 0.7])]
    pruned = manifest("pruned-fp32", Technique(name="layer-pruning", params={
        "dropped_layers": [2, 4], "strategy": "sensitivity", "layers_before": 6, "distilled": True,
        "teacher": "baseline-fp32", "refinetune_selected": {"kept_epoch": 3, "epochs_run": 3, "metric": "macro_f1",
                                                            "validation_by_epoch": [0.9, 0.92, 0.93]}}),
        extra={"sensitivity": scores})
    int8 = manifest("pruned-int8", Technique(name="int8-dynamic"))
    text = selections([int8, pruned, base])
    assert "Validation: 545 examples (545 of trec train, stratified by label, seed 0)" in text
    assert "kept epoch 2 of 3 run (validation macro_f1 by epoch: 0.9100, 0.9500, 0.9400)" in text
    assert "dropped layers [2, 4] of 6" in text and "L2 0.9300" in text and "distilled from baseline-fp32" in text
    assert "kept epoch 3 of 3" in text
    assert "`pruned-int8` (int8-dynamic): nothing chosen" in text
    assert text.index("`baseline-fp32`") < text.index("`pruned-fp32`")


# --- The docs' figures and the commands beside them -------------------------------------------------------------
# Every measured figure in docs/ stands beside the command that produces it as written. These tests check what
# can be checked without running anything: the commands exist, their flags exist, the JSON bodies they send
# validate, and each RESULTS.md section's recipe is the one its command resolves to.

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The arguments run to the end of the code span or line, comments included: a comment that names defaults
# (`# --runs 30`) names flags too.
SCRIPT_CALL = re.compile(r"(?:\.venv/bin/)?python (?P<path>(?:benchmarks|scripts)/\w+\.py)(?P<args>[^`\n|]*)")
RUN_UP = re.compile(r"\./run\.sh up(?P<args>[^`\n]*)")
SECTION = re.compile(r"<!-- begin:(?P<label>[\w.-]+) -->\n(?P<body>.*?)<!-- end:(?P=label) -->", re.S)


def _flags(args: str) -> list[str]:
    return re.findall(r"(?<![\w-])--[a-z][\w-]*", args)


def _argparse_flags(script: Path) -> set[str]:
    return set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", script.read_text()))


def _doc_texts() -> list[tuple[str, str]]:
    return [(doc.name, doc.read_text()) for doc in DOCS]


@pytest.mark.parametrize(("name", "text"), _doc_texts(), ids=[d.name for d in DOCS])
def test_every_documented_script_exists_with_its_flags(name: str, text: str) -> None:
    calls = list(SCRIPT_CALL.finditer(text))
    for call in calls:
        script = ROOT / call["path"]
        assert script.is_file(), f"{name}: {call['path']} does not exist"
        missing = set(_flags(call["args"])) - _argparse_flags(script)
        assert not missing, f"{name}: `{call.group(0).strip()}` uses flags {sorted(missing)} that {call['path']} lacks"
    up_flags = _argparse_flags(ROOT / "scripts" / "up.py")
    for call in RUN_UP.finditer(text):
        missing = set(_flags(call["args"])) - up_flags
        assert not missing, f"{name}: `./run.sh up{call['args']}` uses flags {sorted(missing)} that scripts/up.py lacks"


def _json_after(text: str, marker: str) -> list[dict[str, Any]]:
    bodies = []
    for hit in re.finditer(re.escape(marker), text):
        start = text.find("{", hit.end())
        if 0 <= start - hit.end() <= 12:  # a request with its body, not a mention of the route
            bodies.append(json.JSONDecoder().raw_decode(text[start:])[0])
    return bodies


def test_documented_job_bodies_validate() -> None:
    from slimbert.benchmark.runner import BenchmarkSpec
    from slimbert.orchestrate.autotune_spec import AutotuneSpec

    for doc in ("RESULTS.md", "PERFORMANCE.md"):
        text = (ROOT / "docs" / doc).read_text()
        for body in _json_after(text, "POST /jobs/autotune"):
            AutotuneSpec.model_validate(body)
        for body in _json_after(text, "POST /jobs/benchmark"):
            BenchmarkSpec.model_validate(body)


def _up_command_for(text: str, section: re.Match[str]) -> str:
    """The `./run.sh up` call that made the section's variants: its Command line, or the first one after it."""
    command = re.search(r"^Command: `(?P<c>[^`]+)`", section["body"], re.M)
    assert command, f"section {section['label']} has no Command line"
    if command["c"].startswith("./run.sh up"):
        return command["c"]
    after = text[section.end():]
    nxt = after.find("<!-- begin:")
    found = RUN_UP.search(after[: nxt if nxt >= 0 else None])
    assert found, f"section {section['label']}: no `./run.sh up` command after it says how its variants were made"
    return found.group(0)


def test_each_results_section_is_its_commands_recipe() -> None:
    from slimbert.compression.presets import PRESETS, build_recipe

    text = (ROOT / "docs" / "RESULTS.md").read_text()
    sections = list(SECTION.finditer(text))
    assert {s["label"] for s in sections} >= {"quick"}
    drift: list[str] = []
    for section in sections:
        label = section["label"]
        command = re.search(r"^Command: `(?P<c>[^`]+)`", section["body"], re.M)
        assert command
        argv = shlex.split(command["c"])
        up = shlex.split(_up_command_for(text, section))
        preset = up[up.index("--preset") + 1] if "--preset" in up else "quick"
        assert preset in PRESETS, f"section {label} was made by {preset}, which is no preset"
        if argv[0] == "./run.sh":  # written by up --write-results: the section's label is --label, else the preset
            assert (argv[argv.index("--label") + 1] if "--label" in argv else preset) == label
        else:  # written by the results script: its --label is the section's
            assert argv[1] == "benchmarks/write_results_section.py" and argv[argv.index("--label") + 1] == label
        kind = "Preset" if label == preset else "Task"
        assert section["body"].startswith(f"## {kind} `{label}`: family `"), section["body"][:80]
        overrides = json.loads(up[up.index("--recipe") + 1]) if "--recipe" in up else {}
        if "--dataset" in up:  # up stores the dataset and names it in the recipe
            first = up[up.index("--dataset") + 1]
            overrides["dataset"] = (up[up.index("--dataset-name") + 1] if "--dataset-name" in up
                                    else Path(first.split("=", 1)[-1]).stem.lower())
        recorded = json.loads(re.search(r"```json\n(.*?)```", section["body"], re.S)[1])  # type: ignore[index]
        resolved = build_recipe(preset, overrides).model_dump(mode="json")
        drift += [f"{label}: {d}" for d in _recipe_drift(recorded, resolved, "")]
    assert not drift, "the sections' commands no longer resolve to the recipes they recorded (rerun each " \
                      "section with its command, or remove it):\n" + "\n".join(drift)


def _recipe_drift(recorded: Any, resolved: Any, where: str) -> list[str]:
    """Where the recorded recipe and today's resolution differ; a field added since the run that resolves to null
    (a stage that stays off) is no difference."""
    if not (isinstance(recorded, dict) and isinstance(resolved, dict)):
        return [] if recorded == resolved else [f"{where.rstrip('.')}: recorded {recorded!r}, resolves to {resolved!r}"]
    out = [f"{where}{key}: not in the record, resolves to {resolved[key]!r}"
           for key in sorted(resolved.keys() - recorded.keys()) if resolved[key] is not None]
    out += [f"{where}{key}: in the record, no longer a recipe field"
            for key in sorted(recorded.keys() - resolved.keys())]
    for key in sorted(recorded.keys() & resolved.keys()):
        out += _recipe_drift(recorded[key], resolved[key], f"{where}{key}.")
    return out
