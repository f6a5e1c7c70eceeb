"""Autotune: search the compression menu for the fastest CPU variant that passes an accuracy gate.

Cheap candidates first: every precision/runtime of the unpruned baseline needs no training; then
sensitivity-ranked depths, each re-fine-tuned with and without distillation, each in every
precision. A candidate is screened on a subset of the validation split, then measured on the
whole split; the gate decision uses a confidence interval on the paired accuracy difference, not a
point estimate. The search stops at its budget with the best candidate found so far. It builds its
candidates with the same transforms a compression job runs, in the store's staging area, and
publishes the winner through the store like any other variant.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from transformers import AutoModelForSequenceClassification

from slimbert.benchmark.latency import interleaved
from slimbert.compression.distill import DistillationSchedule, distillation_loss_fn
from slimbert.compression.finetune import evaluate, finetune
from slimbert.compression.layers import drop_layers
from slimbert.compression.precision_steps import PrecisionStep, build_precision, cannot_run
from slimbert.compression.recipe import Precision, Recipe
from slimbert.compression.sensitivity import choose_layers_to_drop, layer_sensitivity
from slimbert.config import Settings
from slimbert.data import Splits, TextDataset
from slimbert.inference.bucketing import predict_label_ids
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Predictor, model_call
from slimbert.jobs.lifecycle import FollowUp, JobResult, Run, run_job
from slimbert.jobs.store import JobRecord, open_job_store, utcnow
from slimbert.metrics import score
from slimbert.models import load_tokenizer
from slimbert.orchestrate.autotune_spec import AutotuneSpec, PrecisionChoice, paired_gate
from slimbert.orchestrate.publish import score_splits
from slimbert.records import BASELINE, Method
from slimbert.runtime.shapes import from_pretrained_pruned
from slimbert.splits import in_label_order, splits_of_recipe
from slimbert.store.bucket import open_variant_store
from slimbert.store.manifest import Technique, VariantManifest

log = logging.getLogger(__name__)

# Train sentences that calibrate static INT8 ranges (never validation sentences: the gate measures on those).
CALIBRATION_SAMPLES = 128
# Each precision choice as the recipe's precision step that builds it.
CANDIDATE_STEPS: dict[PrecisionChoice, tuple[Method, dict[str, Any]]] = {
    "bf16": ("fp16-bf16", {"fp16_bf16": {"dtype": "bf16"}}),
    "int8": ("int8-dynamic", {"int8_dynamic": {}}),
    "int8-optimized": ("int8-dynamic", {"int8_dynamic": {"optimize": True}}),
    "int8-per-channel": ("int8-dynamic", {"int8_dynamic": {"per_channel": True}}),
    "int8-static": ("int8-static", {"int8_static": {"calibration_samples": CALIBRATION_SAMPLES}}),
    "int8-inductor": ("int8-inductor", {"int8_inductor": {"calibration_samples": CALIBRATION_SAMPLES}}),
}


def _draft(runtime: str, precision: str, base: VariantManifest, params: int) -> VariantManifest:
    return VariantManifest.model_validate({
        "family": base.family, "variant": "candidate", "runtime": runtime, "precision": precision,
        "base_model_id": base.base_model_id, "technique": Technique(name="autotune-candidate"),
        "labels": base.labels, "num_parameters": params})


def _predict_all(predictor: Predictor, data: TextDataset) -> list[int]:
    return predict_label_ids(predictor, data.inputs)


class _OutOfBudget(Exception):
    """Raised from the training progress hook when the search's budget is spent."""


class Search:
    """One autotune run; ``report`` is called with (stage text, percent, best so far)."""

    def __init__(self, settings: Settings, spec: AutotuneSpec,
                 report: Callable[[str, float, dict[str, Any] | None], None], should_stop: Callable[[], bool]) -> None:
        self.settings, self.spec, self.report, self.should_stop = settings, spec, report, should_stop
        self.store = open_variant_store(settings)
        self.base = self.store.manifest(spec.family, BASELINE)
        self.base_dir = self.store.variant_dir(spec.family, BASELINE)
        # The family's own splits (same carve, same seed): the gate reads validation, which the baseline
        # never trained on; the winner's reported accuracy comes from test, which nothing here reads.
        self.splits = in_label_order(splits_of_recipe(settings, self.base.recipe), self.base.labels)
        dev = self.splits.validation
        self.screen = dev.subset(spec.screen_examples, seed=1)
        self.dev = dev
        self.deadline = time.monotonic() + spec.budget_minutes * 60
        self.trail: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        # Candidates live in the store's staging area: same disk, removed at the end and after a crash.
        self._scratch = ExitStack()
        self.work = self._scratch.enter_context(self.store.staging(spec.family, "autotune"))
        baseline = load_variant(self.base, self.base_dir)
        self.base_screen = _predict_all(baseline, self.screen)
        self.base_dev = _predict_all(baseline, self.dev)
        n_labels = len(self.splits.label_names)
        base_value = score(dev.metric, self.base_dev, dev.labels, n_labels)
        self.threshold = spec.gate * base_value if spec.gate_kind == "relative" else spec.gate
        self.gate = (spec.gate, spec.gate_kind, spec.require_point)
        self.n_labels = n_labels
        # The precision steps draw their calibration subset from here (train sentences, never validation).
        self.calibration = self.splits.train
        self.tokenizer = load_tokenizer(str(self.base_dir))
        self.texts = [dev.inputs[i % len(dev)] for i in range(spec.batch_size)]
        self.baseline_predictor = baseline

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline or self.should_stop()

    # --- candidates ---------------------------------------------------------------------------
    def structures(self) -> Iterator[tuple[str, Path, int, dict[str, Any]]]:
        """(name, fp32 checkpoint dir, parameters, params): baseline first, then deeper cuts."""
        yield "drop0", self.base_dir, self.base.num_parameters, {"dropped_layers": []}
        if self.spec.max_drop == 0:
            return
        tokenizer = self.tokenizer
        teacher = from_pretrained_pruned(AutoModelForSequenceClassification, self.base_dir)
        scores = layer_sensitivity(teacher, functools.partial(self._acc_loss, tokenizer))
        train = self.splits.train.subset(self.spec.train_examples, seed=7)
        layers = teacher.config.num_hidden_layers
        for drop in range(self.spec.min_drop, min(self.spec.max_drop, layers - 1) + 1):
            dropped = choose_layers_to_drop(layers, drop, "sensitivity", scores)
            for distill in self.spec.distill:
                if self.out_of_time():
                    return
                name = f"drop{drop}{'-kd' if distill else ''}"
                self.report(f"training {name}", self._percent(), self.best)
                student = drop_layers(copy.deepcopy(teacher), dropped)
                loss_fn = distillation_loss_fn(teacher, DistillationSchedule()) if distill else None
                try:
                    finetune(student, tokenizer, train, self.screen, self.spec.refinetune, loss_fn=loss_fn,
                             progress=functools.partial(self._training, name))
                except _OutOfBudget:
                    self.trail.append({"candidate": name, "skipped": "the budget ran out while training it"})
                    return
                out = self.work / name
                student.save_pretrained(out)
                tokenizer.save_pretrained(out)
                yield name, out, student.num_parameters(), {"dropped_layers": dropped, "distill": distill,
                                                             "layer_scores": [s.to_json() for s in scores]}

    def _training(self, name: str, percent: float) -> None:
        """Progress while a structure trains; stops the training when the budget is spent."""
        if self.out_of_time():
            raise _OutOfBudget(name)
        self.report(f"training {name} ({percent:.0f}%)", self._percent(), self.best)

    def _acc_loss(self, tokenizer: Any, model: Any) -> tuple[float, float]:
        r = evaluate(model, tokenizer, self.screen)
        return r.score, r.loss

    def precisions(self, name: str, src: Path) -> Iterator[tuple[str, Path, str, str, dict[str, Any]]]:
        """(candidate, dir, runtime, precision, params) for every precision asked for, each built by the
        precision transform a compression job runs (``precision_steps.build_precision``)."""
        for prec in self.spec.precisions:
            if self.out_of_time():
                return
            if prec == "fp32":
                yield f"{name}-fp32", src, "torch", "fp32", {}
                continue
            method, config = CANDIDATE_STEPS[prec]
            recipe = Recipe(precision=Precision.model_validate({"int8_dynamic": None, **config}))
            step = PrecisionStep(method, BASELINE, f"{name}-{prec}")
            if why := cannot_run(recipe, step, src, "cpu"):
                self.trail.append({"candidate": step.variant, "skipped": why})
                continue
            out = self.work / step.variant
            out.mkdir(parents=True, exist_ok=True)
            try:
                made, _notes = build_precision(recipe, step, src, out, self.tokenizer, self.calibration)
            except Exception as exc:  # one failed option must not end the search
                self.trail.append({"candidate": step.variant, "skipped": f"{type(exc).__name__}: {exc}"})
                continue
            yield step.variant, out, made.runtime, made.precision, made.params

    # --- measuring ----------------------------------------------------------------------------
    def cost(self, predictor: Predictor, size_mb: float) -> float:
        """Lower is better: p50 ms, ms per sequence, or MB; measured interleaved with the baseline."""
        if self.spec.target == "size":
            return size_mb
        enc_c = predictor.encode(self.texts, "dynamic")
        enc_b = self.baseline_predictor.encode(self.texts, "dynamic")
        stats = interleaved({"c": model_call(predictor, enc_c), "b": model_call(self.baseline_predictor, enc_b)},
                            warmup=3, runs=self.spec.runs)
        # A ratio against the baseline from the same run survives machine drift.
        return stats["c"].p50 / stats["b"].p50

    def evaluate(self, name: str, path: Path, runtime: str, precision: str, params: int,
                 details: dict[str, Any]) -> dict[str, Any]:
        predictor = load_variant(_draft(runtime, precision, self.base, params), path)
        layers = self.base.num_layers - len(details.get("dropped_layers", [])) if self.base.num_layers else None
        entry: dict[str, Any] = {"candidate": name, "runtime": runtime, "precision": precision,
                                 "parameters": params, "layers": layers, **details}
        # The screen is a cheap pre-filter on 256 sentences: it applies the interval rule only, since a
        # point estimate on so few sentences would reject candidates the full split accepts.
        screen = paired_gate(_predict_all(predictor, self.screen), self.base_screen, self.screen.labels,
                             *self.gate[:2], metric=self.screen.metric, num_labels=self.n_labels)
        entry["screen"] = screen
        if not screen["passes"]:
            entry["verdict"] = "rejected on the held-out subset"
            return entry
        full = paired_gate(_predict_all(predictor, self.dev), self.base_dev, self.dev.labels, *self.gate,
                           metric=self.dev.metric, num_labels=self.n_labels)
        entry["validation"] = full
        if not full["passes"]:
            entry["verdict"] = "rejected on the full validation split"
            return entry
        size_mb = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
        entry["size_mb"] = round(size_mb, 2)
        entry["cost_vs_baseline"] = round(self.cost(predictor, size_mb), 4)
        entry["verdict"] = "passes the gate"
        return entry

    def _percent(self) -> float:
        spent = 1 - (self.deadline - time.monotonic()) / (self.spec.budget_minutes * 60)
        return round(min(99.0, 100 * max(spent, 0.0)), 1)

    def run(self) -> dict[str, Any]:
        for sname, src, params, details in self.structures():
            for cname, path, runtime, precision, qparams in self.precisions(sname, src):
                self.report(f"candidate {cname}", self._percent(), self.best)
                entry = self.evaluate(cname, path, runtime, precision, params, {**details, "quantization": qparams})
                entry["path"] = str(path)
                self.trail.append(entry)
                if entry["verdict"] == "passes the gate" and (
                        self.best is None or entry["cost_vs_baseline"] < self.best["cost_vs_baseline"]):
                    self.best = entry
                if self.out_of_time():
                    break
            if self.out_of_time():
                break
        return {"best": self.best, "trail": self.trail, "threshold": round(self.threshold, 4),
                "stopped": "budget" if time.monotonic() > self.deadline else "menu exhausted"}

    def cleanup(self) -> None:
        self._scratch.close()


def publish_winner(settings: Settings, spec: AutotuneSpec, best: dict[str, Any], job_id: str, splits: Splits
                   ) -> str:
    """Store the winning candidate as ``tuned-<precision>`` with the search in its manifest; its accuracy
    is measured again, on its own runtime, on the test split (reported) and the validation split."""
    store = open_variant_store(settings)
    base = store.manifest(spec.family, BASELINE)
    name = "tuned-" + ("int8" if best["runtime"] == "onnxruntime" else best["precision"])
    with store.staging(spec.family, name) as staged:
        shutil.copytree(Path(best["path"]), staged, dirs_exist_ok=True)
        if best["runtime"] == "torch":
            model = from_pretrained_pruned(AutoModelForSequenceClassification, staged)
            params, layers = model.num_parameters(), model.config.num_hidden_layers
        else:
            params, layers = best["parameters"], best["layers"]
        draft = VariantManifest.model_validate({
            "family": spec.family, "variant": name, "runtime": best["runtime"], "precision": best["precision"],
            "target_device": "cpu", "base_model_id": base.base_model_id, "parent": BASELINE,
            "technique": Technique(name="autotune", params={k: v for k, v in best.items() if k != "path"}),
            "recipe": {"autotune": spec.model_dump(mode="json")}, "labels": base.labels, "num_parameters": params,
            "num_layers": layers, "test_examples": len(splits.test), "validation_examples": len(splits.validation),
            "splits": splits.describe(int(base.recipe.get("data_seed", 0))), "job_id": job_id,
            "dataset": base.dataset, "dataset_sha256": base.dataset_sha256, "task": base.task, "metric": base.metric})
        predictor = load_variant(draft, staged)
        measured = score_splits(predictor, splits)
        del predictor
        store.publish(staged, draft.model_copy(update={
            "test_accuracy": measured["test_metrics"]["accuracy"],
            "validation_accuracy": measured["validation_metrics"]["accuracy"], **measured}))
    return name


def execute_autotune_job(settings: Settings, job_id: str, *, queue: str, worker: str,
                         on_success: FollowUp | None = None) -> dict[str, Any]:
    """Run :class:`Search` for job ``job_id`` through the job life cycle: progress, cancellation,
    publishing the winner, and the trail stored as a report.

    ``on_success(record)`` runs before the record turns ``succeeded`` (the follow-up benchmark)."""
    jobs = open_job_store(settings)

    def report(stage: str, percent: float, best: dict[str, Any] | None) -> None:
        best_text = None if best is None else {k: best.get(k) for k in ("candidate", "cost_vs_baseline")}
        jobs.update(job_id, stage=stage, progress=percent, results={"best_so_far": best_text})

    def body(record: JobRecord) -> JobResult:
        spec = AutotuneSpec.model_validate(record.request["spec"])
        search = Search(settings, spec, report, lambda: jobs.cancel_requested(job_id))
        try:
            outcome = search.run()
            if outcome["best"] is not None:
                outcome["variant"] = publish_winner(settings, spec, outcome["best"], job_id, search.splits)
        finally:
            search.cleanup()
        for entry in [*outcome["trail"], outcome["best"] or {}]:
            entry.pop("path", None)
        run_id = "autotune-" + job_id[:12]
        open_variant_store(settings).save_report(spec.family, run_id, {
            "run_id": run_id, "kind": "autotune", "created_at": utcnow().isoformat(),
            "spec": spec.model_dump(mode="json"), "job_id": job_id, **json.loads(json.dumps(outcome))})
        return JobResult(outcome, [outcome["variant"]] if outcome.get("variant") else [],
                         stage="done" if outcome["best"] else "no candidate passed the gate")

    result = run_job(settings, job_id, body, Run(queue, worker), on_success)
    return {"state": result["state"], "variant": result.get("variant")}
