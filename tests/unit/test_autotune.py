"""Autotune end to end on a tiny family, through the plain job function the Celery task calls."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from slimbert.config import Settings
from slimbert.data import read_tsv
from slimbert.inference.loader import load_variant
from slimbert.jobs import JobRecord, JobStore
from slimbert.orchestrate.autotune import Search, execute_autotune_job
from slimbert.orchestrate.autotune_spec import AutotuneSpec, paired_gate
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore


def test_paired_gate_uses_the_interval() -> None:
    labels = [1, 0] * 100
    base = list(labels)
    worse = list(labels)
    for i in range(0, 6):
        worse[i] = 1 - worse[i]  # 3 points below a perfect baseline
    verdict = paired_gate(worse, base, labels, gate=0.985)
    assert verdict["accuracy"] == 0.97 and verdict["difference"] == -0.03
    # By hand: var = (6 * 0.97^2 + 194 * 0.03^2) / 199 = 0.029246, margin = 1.645 * sqrt(var / 200) = 0.01989.
    assert verdict["difference_upper95"] == pytest.approx(-0.03 + 0.01989, abs=1e-4)
    # The point estimate 0.97 misses 0.985, but 0.97 + margin reaches it: not significantly below, so it passes.
    assert verdict["passes"] is True
    assert paired_gate(worse, base, labels, gate=0.995)["passes"] is False
    far_worse = [1 - x for x in labels[:40]] + labels[40:]
    assert paired_gate(far_worse, base, labels, gate=0.99)["passes"] is False


def test_require_point_also_needs_the_measured_accuracy_at_the_bar() -> None:
    labels = [1, 0] * 100
    worse = list(labels)
    for i in range(0, 6):
        worse[i] = 1 - worse[i]  # 0.97 against a perfect baseline
    # 0.985 x 1.0: not significantly below (passes by the interval), but measured below the bar.
    loose = paired_gate(worse, labels, labels, gate=0.985)
    strict = paired_gate(worse, labels, labels, gate=0.985, require_point=True)
    assert loose["passes"] is True and strict["passes"] is False
    assert "accuracy >= threshold" in strict["rule"]
    # At or above the bar, the extra condition changes nothing.
    assert paired_gate(worse, labels, labels, gate=0.97, kind="absolute", require_point=True)["passes"] is True


@pytest.fixture
def tuned_settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    words = ["great", "awful", "fine", "dull", "moving", "boring", "superb", "weak"]
    for name, n in (("train.tsv", 96), ("dev.tsv", 48)):
        rows = [f"{words[i % 8]} film number {i} .\t{i % 2}" for i in range(n)]
        (sst2 / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    settings = Settings(store_dir=tmp_path / "store", sst2_dir=sst2, _env_file=None)  # type: ignore[call-arg]
    store = VariantStore(settings.store_dir)
    with store.staging("tiny-tune", "baseline-fp32") as staged:
        shutil.copytree(tiny_model_dir, staged, dirs_exist_ok=True)
        store.publish(staged, VariantManifest(
            family="tiny-tune", variant="baseline-fp32", runtime="torch", precision="fp32", base_model_id="tiny",
            technique=Technique(name="finetune"), labels={0: "negative", 1: "positive"}, num_parameters=10,
            num_layers=3, recipe={"validation_examples": 32, "data_seed": 0}))
    return settings


@pytest.fixture
def judged_settings(tuned_settings: Settings) -> Settings:
    """``tuned_settings`` with every label (train and dev files, so whichever split the search gates on)
    rewritten to the baseline's own prediction: the baseline scores 1.0, and a candidate that disagrees
    with it is plainly worse."""
    store = VariantStore(tuned_settings.store_dir)
    manifest = store.manifest("tiny-tune", "baseline-fp32")
    baseline = load_variant(manifest, store.variant_dir("tiny-tune", "baseline-fp32"))
    assert tuned_settings.sst2_dir is not None
    for name in ("train.tsv", "dev.tsv"):
        path = tuned_settings.sst2_dir / name
        texts = read_tsv(path).texts
        labels = [p.label_id for p in baseline.predict(texts).predictions]
        path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True)))
    return tuned_settings


def _wrecked_candidate(settings: Settings, out: Path) -> tuple[Path, int]:
    """The baseline cut by a layer (so smaller: it would win on size) with its classifier destroyed: zero
    weights and a bias for the class the baseline predicts least, so it mostly contradicts the baseline."""
    base_dir = VariantStore(settings.store_dir).variant_dir("tiny-tune", "baseline-fp32")
    model = AutoModelForSequenceClassification.from_pretrained(base_dir)
    model.bert.encoder.layer = model.bert.encoder.layer[:-1]
    model.config.num_hidden_layers -= 1
    assert settings.sst2_dir is not None
    labels = [y for name in ("train.tsv", "dev.tsv") for y in read_tsv(settings.sst2_dir / name).labels]
    minority = int(sum(labels) * 2 < len(labels))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([-10.0, 10.0] if minority == 1 else [10.0, -10.0]))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out, model.num_parameters()


class _SearchWithWreckedCandidate(Search):
    """The real search (gate, verdicts, choice of the best) over the baseline and one wrecked structure."""

    wrecked: tuple[Path, int]

    def structures(self) -> Iterator[tuple[str, Path, int, dict[str, Any]]]:
        yield from super().structures()  # max_drop=0: the uncut baseline only
        path, params = self.wrecked
        yield "wrecked", path, params, {"dropped_layers": [2]}


def test_a_clearly_worse_candidate_is_rejected_and_never_best(judged_settings: Settings, tmp_path: Path) -> None:
    # Cost by size, so nothing is timed: a gate that let the wrecked candidate through would make it the best.
    spec = AutotuneSpec(family="tiny-tune", max_drop=0, precisions=["fp32"], target="size", screen_examples=32,
                        budget_minutes=3, runs=3)
    search = _SearchWithWreckedCandidate(judged_settings, spec, lambda stage, pct, best: None, lambda: False)
    try:
        search.wrecked = _wrecked_candidate(judged_settings, tmp_path / "wrecked")
        outcome = search.run()
    finally:
        search.cleanup()
    trail = {e["candidate"]: e for e in outcome["trail"]}
    assert list(trail) == ["drop0-fp32", "wrecked-fp32"]
    base, wrecked = trail["drop0-fp32"], trail["wrecked-fp32"]
    assert base["verdict"] == "passes the gate" and base["validation"]["accuracy"] == 1.0
    screen = wrecked["screen"]
    assert screen["baseline_accuracy"] == 1.0 and screen["threshold"] == 0.99 and screen["accuracy"] <= 0.5
    assert screen["difference_upper95"] < 0 and screen["passes"] is False  # significantly below the baseline
    # Rejected on the held-out subset: never measured on the full split, never costed.
    assert wrecked["verdict"] == "rejected on the held-out subset"
    assert not {"dev", "validation", "size_mb", "cost_vs_baseline"} & set(wrecked)
    assert outcome["best"]["candidate"] == "drop0-fp32"
    wrecked_mb = sum(p.stat().st_size for p in (tmp_path / "wrecked").rglob("*") if p.is_file()) / 1e6
    assert wrecked_mb < base["size_mb"]  # so only the gate kept it from winning


def test_autotune_searches_publishes_winner_and_trail(tuned_settings: Settings) -> None:
    spec = AutotuneSpec(family="tiny-tune", max_drop=1, distill=[True], precisions=["fp32", "int8"],
                        budget_minutes=3, screen_examples=32, train_examples=32, runs=3,
                        refinetune={"epochs": 1, "batch_size": 16, "max_length": 32})
    jobs = JobStore(tuned_settings.job_dir)
    job = jobs.save(JobRecord(id=jobs.new_id(), kind="autotune", request={"spec": spec.model_dump(mode="json")}))
    result = execute_autotune_job(tuned_settings, job.id, queue="cpu", worker="test")
    record = jobs.get(job.id)
    assert record.state == "succeeded", record.error
    names = [e["candidate"] for e in record.results["trail"]]
    assert names == ["drop0-fp32", "drop0-int8", "drop1-kd-fp32", "drop1-kd-int8"]
    best = record.results["best"]
    assert best["verdict"] == "passes the gate" and "validation" in best and "screen" in best
    passing = [e for e in record.results["trail"] if e["verdict"] == "passes the gate"]
    assert best["cost_vs_baseline"] == min(e["cost_vs_baseline"] for e in passing)
    store = VariantStore(tuned_settings.store_dir)
    winner = store.manifest("tiny-tune", result["variant"])
    assert winner.technique.name == "autotune" and winner.parent == "baseline-fp32"
    assert any(r.get("kind") == "autotune" for r in store.reports("tiny-tune"))
    assert not any((tuned_settings.store_dir / ".staging").iterdir())  # candidates cleaned up
    from slimbert.report.render import to_markdown
    from slimbert.report.showdown import autotune_summary, build_showdown, latest_benchmark_run

    report = build_showdown("tiny-tune", store.manifests("tiny-tune"), latest_benchmark_run(store, "tiny-tune"))
    report.autotune = autotune_summary(store.latest_report("tiny-tune", kind="autotune"))
    assert report.run is None  # an autotune run is not a benchmark run
    text = to_markdown(report)
    assert f"-> variant {result['variant']}" in text and "| drop1-kd-int8 |" in text


def test_min_drop_skips_shallow_cuts(tuned_settings: Settings) -> None:
    from slimbert.orchestrate.autotune import Search

    spec = AutotuneSpec(family="tiny-tune", min_drop=2, max_drop=2, distill=[False], precisions=["fp32"],
                        budget_minutes=3, screen_examples=32, train_examples=32, runs=3,
                        refinetune={"epochs": 1, "batch_size": 16, "max_length": 32})
    search = Search(tuned_settings, spec, lambda stage, pct, best: None, lambda: False)
    try:
        made = [(name, details.get("dropped_layers")) for name, _, _, details in search.structures()]
    finally:
        search.cleanup()
    assert [name for name, _ in made] == ["drop0", "drop2"]  # the uncut baseline, then straight to two layers
    assert len(made[1][1]) == 2
    with pytest.raises(ValidationError, match="min_drop") as refused:
        AutotuneSpec(family="tiny-tune", min_drop=3, max_drop=2)
    assert refused.value.errors()[0]["loc"] == ("min_drop",)  # the 422 names the field


def test_training_stops_when_the_budget_is_spent(tuned_settings: Settings) -> None:
    from slimbert.orchestrate.autotune import Search, _OutOfBudget

    spec = AutotuneSpec(family="tiny-tune", max_drop=1, distill=[False], precisions=["fp32"], budget_minutes=5,
                        screen_examples=32, train_examples=32, runs=3)
    seen: list[str] = []
    search = Search(tuned_settings, spec, lambda stage, pct, best: seen.append(stage), lambda: False)
    try:
        search._training("drop1", 40.0)
        assert seen[-1] == "training drop1 (40%)"
        search.deadline = 0.0  # the budget is spent
        with pytest.raises(_OutOfBudget):
            search._training("drop1", 60.0)
        outcome = search.run()
        assert outcome["stopped"] == "budget" and outcome["trail"] == []
    finally:
        search.cleanup()
