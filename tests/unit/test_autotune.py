"""Autotune end to end on a tiny family, through the plain job function the Celery task calls."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from slimbert.autotune import AutotuneSpec, execute_autotune_job, paired_gate
from slimbert.config import Settings
from slimbert.jobs import JobRecord, JobStore
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
    for name, n in (("train.tsv", 64), ("dev.tsv", 48)):
        rows = [f"{words[i % 8]} film number {i} .\t{i % 2}" for i in range(n)]
        (sst2 / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    settings = Settings(store_dir=tmp_path / "store", sst2_dir=sst2, _env_file=None)  # type: ignore[call-arg]
    store = VariantStore(settings.store_dir)
    with store.staging("tiny-tune", "baseline-fp32") as staged:
        shutil.copytree(tiny_model_dir, staged, dirs_exist_ok=True)
        store.publish(staged, VariantManifest(
            family="tiny-tune", variant="baseline-fp32", runtime="torch", precision="fp32", base_model_id="tiny",
            technique=Technique(name="finetune"), labels={0: "negative", 1: "positive"}, num_parameters=10,
            num_layers=3))
    return settings


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
    assert best["verdict"] == "passes the gate" and "dev" in best and "screen" in best
    passing = [e for e in record.results["trail"] if e["verdict"] == "passes the gate"]
    assert best["cost_vs_baseline"] == min(e["cost_vs_baseline"] for e in passing)
    store = VariantStore(tuned_settings.store_dir)
    winner = store.manifest("tiny-tune", result["variant"])
    assert winner.technique.name == "autotune" and winner.parent == "baseline-fp32"
    assert any(r.get("kind") == "autotune" for r in store.reports("tiny-tune"))
    assert not any((tuned_settings.store_dir / ".staging").iterdir())  # candidates cleaned up
    from slimbert.report.render import to_markdown
    from slimbert.report.showdown import autotune_summary, build_showdown

    report = build_showdown("tiny-tune", store.manifests("tiny-tune"), store.latest_report("tiny-tune"))
    report["autotune"] = autotune_summary(store.latest_report("tiny-tune", kind="autotune"))
    assert report["run"] is None  # an autotune run is not a benchmark run
    text = to_markdown(report)
    assert f"-> variant {result['variant']}" in text and "| drop1-kd-int8 |" in text


def test_min_drop_skips_shallow_cuts(tuned_settings: Settings) -> None:
    from slimbert.autotune import Search

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
    from slimbert.autotune import Search, _OutOfBudget

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
