"""Autotune: search the compression menu for the fastest CPU variant that passes an accuracy gate.

Cheap candidates first: every precision/runtime of the unpruned baseline needs no training; then
sensitivity-ranked depths, each re-fine-tuned with and without distillation, each in every
precision. A candidate is screened on a held-out subset of the dev split, then measured on the
whole split; the gate decision uses a confidence interval on the paired accuracy difference, not a
point estimate. The search stops at its budget with the best candidate found so far.
"""

from __future__ import annotations

import copy
import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from slimbert.benchmark.latency import interleaved
from slimbert.benchmark.runner import model_call
from slimbert.benchmark.stats import paired_difference, wilson_interval
from slimbert.compression.distill import DistillationSchedule
from slimbert.compression.finetune import FinetuneConfig, finetune
from slimbert.compression.inductor_int8 import quantize_inductor_int8
from slimbert.compression.inductor_int8 import unavailable_reason as inductor_unavailable
from slimbert.compression.layers import drop_layers, from_pretrained_pruned
from slimbert.compression.onnx_int8 import quantize_dynamic_int8
from slimbert.compression.precision import cpu_supports_bf16, quantize_static_int8, to_half
from slimbert.compression.sensitivity import choose_layers_to_drop, layer_sensitivity
from slimbert.config import Settings
from slimbert.data import TextDataset, load_sst2
from slimbert.inference.bucketing import classify_all
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Predictor
from slimbert.store.manifest import NAME_PATTERN, Technique, VariantManifest
from slimbert.store.store import VariantStore

log = logging.getLogger(__name__)

PrecisionChoice = Literal["fp32", "bf16", "int8", "int8-optimized", "int8-per-channel", "int8-static",
                          "int8-inductor"]
PRECISIONS: tuple[PrecisionChoice, ...] = ("fp32", "bf16", "int8", "int8-optimized", "int8-per-channel", "int8-static",
                                           "int8-inductor")
# Train sentences that calibrate static INT8 ranges (never dev sentences: the gate measures on those).
CALIBRATION_SAMPLES = 128


class AutotuneSpec(BaseModel):
    """POST /jobs/autotune: a fine-tuned family, a gate, a target and a budget."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(pattern=NAME_PATTERN)
    gate_kind: Literal["relative", "absolute"] = "relative"
    gate: float = Field(default=0.99, gt=0, le=1.5, description="fraction of baseline, or an accuracy")
    require_point: bool = Field(
        default=False, description="also require the measured accuracy itself to reach the gate's threshold")
    target: Literal["latency", "throughput", "size"] = "latency"
    batch_size: int = Field(default=1, ge=1, le=256)
    budget_minutes: float = Field(default=20, gt=0, le=24 * 60)
    max_drop: int = Field(default=2, ge=0, le=24, description="deepest cut, in encoder layers")
    min_drop: int = Field(default=1, ge=1, le=24, description="shallowest cut to train (the uncut baseline is "
                                                             "always tried: it costs no training)")
    distill: list[bool] = Field(default=[True, False], min_length=1)
    precisions: list[PrecisionChoice] = Field(default=list(PRECISIONS), min_length=1)
    screen_examples: int = Field(default=256, ge=32, le=872, description="held-out dev subset for screening")
    train_examples: int = Field(default=4000, ge=32, le=67_349)
    refinetune: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig(epochs=1, learning_rate=1e-4))
    runs: int = Field(default=30, ge=3, le=1000)

    @field_validator("min_drop")
    @classmethod
    def _drops_in_order(cls, min_drop: int, info: ValidationInfo) -> int:
        # A field validator (max_drop is declared first) so the 422 names min_drop itself.
        max_drop = info.data.get("max_drop")
        if max_drop and min_drop > max_drop:
            raise ValueError(f"min_drop ({min_drop}) is above max_drop ({max_drop}): set min_drop to at most "
                             f"{max_drop}, or raise max_drop")
        return min_drop


def paired_gate(cand: list[int], base: list[int], labels: list[int], gate: float,
                kind: Literal["relative", "absolute"] = "relative", require_point: bool = False) -> dict[str, Any]:
    """Gate on the paired accuracy difference: pass unless the candidate is significantly (one-sided
    95%) below the threshold (``gate`` times the baseline's accuracy on the same sentences, or an
    absolute accuracy). Pairing on the same sentences gives a far tighter interval than comparing
    two independent Wilson intervals. ``require_point`` adds a second condition, for a user who must
    not ship a variant that measured below the bar (say, a peer's accuracy): the accuracy itself
    reaches the threshold."""
    n = len(labels)
    acc_c = sum(int(p == y) for p, y in zip(cand, labels, strict=True)) / n
    acc_b = sum(int(p == y) for p, y in zip(base, labels, strict=True)) / n
    threshold = gate * acc_b if kind == "relative" else gate
    mean, half = paired_difference(cand, base, labels)
    upper = acc_c + half
    lo, hi = wilson_interval(round(acc_c * n), n)
    return {"accuracy": round(acc_c, 4), "baseline_accuracy": round(acc_b, 4), "ci95": [round(lo, 4), round(hi, 4)],
            "difference": round(mean, 4), "difference_upper95": round(mean + half, 4),
            "threshold": round(threshold, 4),
            "passes": upper >= threshold and (not require_point or acc_c >= threshold),
            "rule": "passes unless accuracy + one-sided 95% paired margin < threshold"
                    + (", and accuracy >= threshold" if require_point else "")}


def _draft(runtime: str, precision: str, base: VariantManifest, params: int) -> VariantManifest:
    return VariantManifest(
        family=base.family, variant="candidate", runtime=runtime, precision=precision,  # type: ignore[arg-type]
        base_model_id=base.base_model_id, technique=Technique(name="autotune-candidate"),
        labels=base.labels, num_parameters=params)


def _predict_all(predictor: Predictor, data: TextDataset) -> list[int]:
    return classify_all(predictor, data.texts, batch_size=32, bucket=True).label_ids


class _OutOfBudget(Exception):
    """Raised from the training progress hook when the search's budget is spent."""


class Search:
    """One autotune run; ``report`` is called with (stage text, percent, best so far)."""

    def __init__(self, settings: Settings, spec: AutotuneSpec,
                 report: Callable[[str, float, dict[str, Any] | None], None], should_stop: Callable[[], bool]) -> None:
        self.settings, self.spec, self.report, self.should_stop = settings, spec, report, should_stop
        self.store = VariantStore(settings.store_dir)
        self.base = self.store.manifest(spec.family, "baseline-fp32")
        self.base_dir = self.store.variant_dir(spec.family, "baseline-fp32")
        dev = load_sst2("validation", settings.sst2_dir, offline=settings.offline)
        self.screen = dev.subset(spec.screen_examples, seed=1)
        self.dev = dev
        self.deadline = time.monotonic() + spec.budget_minutes * 60
        self.trail: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        # Candidates live under the store's staging area: same disk, and cleaned after a crash.
        staging = settings.store_dir / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="autotune-", dir=staging))
        baseline = load_variant(self.base, self.base_dir)
        self.base_screen = _predict_all(baseline, self.screen)
        self.base_dev = _predict_all(baseline, self.dev)
        base_acc = sum(int(p == y) for p, y in zip(self.base_dev, dev.labels, strict=True)) / len(dev)
        self.threshold = spec.gate * base_acc if spec.gate_kind == "relative" else spec.gate
        self.gate = (spec.gate, spec.gate_kind, spec.require_point)
        self.calibration = load_sst2("train", settings.sst2_dir, offline=settings.offline).subset(
            CALIBRATION_SAMPLES, seed=3).texts
        self.texts = [dev.texts[i % len(dev)] for i in range(spec.batch_size)]
        self.baseline_predictor = baseline

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline or self.should_stop()

    # --- candidates ---------------------------------------------------------------------------
    def structures(self) -> Iterator[tuple[str, Path, int, dict[str, Any]]]:
        """(name, fp32 checkpoint dir, parameters, params): baseline first, then deeper cuts."""
        yield "drop0", self.base_dir, self.base.num_parameters, {"dropped_layers": []}
        if self.spec.max_drop == 0:
            return
        tokenizer = self.baseline_predictor.tokenizer  # type: ignore[attr-defined]
        teacher = self.baseline_predictor.model  # type: ignore[attr-defined]
        scores = layer_sensitivity(teacher, lambda m: self._acc_loss(m))
        train = load_sst2("train", self.settings.sst2_dir, offline=self.settings.offline).subset(
            self.spec.train_examples, seed=7)
        layers = teacher.config.num_hidden_layers
        for drop in range(self.spec.min_drop, min(self.spec.max_drop, layers - 1) + 1):
            dropped = choose_layers_to_drop(layers, drop, "sensitivity", scores)
            for distill in self.spec.distill:
                if self.out_of_time():
                    return
                name = f"drop{drop}{'-kd' if distill else ''}"
                self.report(f"training {name}", self._percent(), self.best)
                student = drop_layers(copy.deepcopy(teacher), dropped)
                loss_fn = _kd_loss(teacher) if distill else None
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

    def _acc_loss(self, model: Any) -> tuple[float, float]:
        from slimbert.compression.finetune import evaluate

        r = evaluate(model, self.baseline_predictor.tokenizer, self.screen)  # type: ignore[attr-defined]
        return r.accuracy, r.loss

    def precisions(self, name: str, src: Path) -> Iterator[tuple[str, Path, str, str, dict[str, Any]]]:
        """(candidate, dir, runtime, precision, params) for every precision asked for."""
        for prec in self.spec.precisions:
            if self.out_of_time():
                return
            out = self.work / f"{name}-{prec}"
            if prec == "fp32":
                yield f"{name}-fp32", src, "torch", "fp32", {}
                continue
            if prec == "bf16" and not cpu_supports_bf16():
                self.trail.append({"candidate": f"{name}-bf16", "skipped": "this CPU has no bf16 (AMX/AVX512-BF16)"})
                continue
            if prec == "int8-inductor" and (why := inductor_unavailable()):
                self.trail.append({"candidate": f"{name}-{prec}", "skipped": why})
                continue
            out.mkdir(parents=True, exist_ok=True)
            try:
                if prec == "bf16":
                    made = to_half(src, out, "bf16")
                    yield f"{name}-bf16", out, "torch", "bf16", made.params
                    continue
                if prec == "int8-static":
                    made = quantize_static_int8(src, out, self.calibration)
                elif prec == "int8-inductor":
                    made = quantize_inductor_int8(src, out, self.calibration)
                    yield f"{name}-{prec}", out, made.runtime, made.precision, made.params
                    continue
                else:
                    made = quantize_dynamic_int8(src, out, per_channel=True if prec == "int8-per-channel" else None,
                                                 optimize=prec == "int8-optimized")
            except Exception as exc:  # one failed option must not end the search
                self.trail.append({"candidate": f"{name}-{prec}", "skipped": f"{type(exc).__name__}: {exc}"})
                continue
            yield f"{name}-{prec}", out, "onnxruntime", "int8", made.params

    # --- measuring ----------------------------------------------------------------------------
    def cost(self, predictor: Predictor, size_mb: float) -> float:
        """Lower is better: p50 ms, ms per sequence, or MB; measured interleaved with the baseline."""
        if self.spec.target == "size":
            return size_mb
        enc_c = _enc(predictor, self.texts)
        enc_b = _enc(self.baseline_predictor, self.texts)
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
                             *self.gate[:2])
        entry["screen"] = screen
        if not screen["passes"]:
            entry["verdict"] = "rejected on the held-out subset"
            return entry
        full = paired_gate(_predict_all(predictor, self.dev), self.base_dev, self.dev.labels, *self.gate)
        entry["dev"] = full
        if not full["passes"]:
            entry["verdict"] = "rejected on the full dev split"
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
        shutil.rmtree(self.work, ignore_errors=True)


def _enc(predictor: Predictor, texts: list[str]) -> dict[str, Any]:
    from slimbert.benchmark.runner import _inputs

    return _inputs(predictor, texts, "dynamic")


def _kd_loss(teacher: Any) -> Callable[[Any, dict[str, Any], int, int], Any]:
    import torch

    schedule = DistillationSchedule()

    def loss(model: Any, batch: dict[str, Any], step: int, total: int) -> Any:
        with torch.no_grad():
            t_logits = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
        s_logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return schedule.loss(s_logits, t_logits, batch["labels"], step, total)

    return loss


def publish_winner(settings: Settings, spec: AutotuneSpec, best: dict[str, Any], job_id: str) -> str:
    """Store the winning candidate as ``tuned-<precision>`` with the search in its manifest."""
    store = VariantStore(settings.store_dir, min_free_mb=settings.min_free_disk_mb)
    base = store.manifest(spec.family, "baseline-fp32")
    name = "tuned-" + ("int8" if best["runtime"] == "onnxruntime" else best["precision"])
    src = Path(best["path"])
    with store.staging(spec.family, name) as staged:
        shutil.copytree(src, staged, dirs_exist_ok=True)
        if best["runtime"] == "torch":
            model = from_pretrained_pruned(__import__("transformers").AutoModelForSequenceClassification, staged)
            params, layers = model.num_parameters(), model.config.num_hidden_layers
        else:
            params, layers = best["parameters"], best["layers"]
        store.publish(staged, VariantManifest(
            family=spec.family, variant=name, runtime=best["runtime"], precision=best["precision"],
            target_device="cpu", base_model_id=base.base_model_id, parent="baseline-fp32",
            technique=Technique(name="autotune", params={k: v for k, v in best.items() if k != "path"}),
            recipe={"autotune": spec.model_dump(mode="json")}, labels=base.labels, num_parameters=params,
            num_layers=layers, dev_accuracy=best["dev"]["accuracy"], dev_examples=872, job_id=job_id))
    return name


def execute_autotune_job(settings: Settings, job_id: str, *, queue: str, worker: str,
                         on_success: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The job life cycle around :class:`Search`: progress, cancellation, publishing, the trail.

    ``on_success(record)`` runs before the record turns ``succeeded`` (the follow-up benchmark)."""
    import json

    from slimbert.jobs import TERMINAL, JobStore, utcnow

    jobs = JobStore(settings.job_dir)
    record = jobs.get(job_id)
    if record.state in TERMINAL:
        return {"state": record.state}
    if record.attempts >= settings.job_max_attempts:
        jobs.update(job_id, state="failed", finished_at=utcnow(), error=f"gave up after {record.attempts} attempts",
                    hint="the worker died during each attempt; check its log (out of memory?) and resubmit")
        return {"state": "failed"}
    spec = AutotuneSpec.model_validate(record.request["spec"])
    jobs.update(job_id, state="running", started_at=utcnow(), queue=queue, worker=worker, attempts=record.attempts + 1)

    def report(stage: str, percent: float, best: dict[str, Any] | None) -> None:
        best_text = None if best is None else {k: best.get(k) for k in ("candidate", "cost_vs_baseline")}
        jobs.update(job_id, stage=stage, progress=percent, results={"best_so_far": best_text})

    search = None
    try:
        search = Search(settings, spec, report, lambda: jobs.cancel_requested(job_id))
        outcome = search.run()
        if outcome["best"] is not None:
            outcome["variant"] = publish_winner(settings, spec, outcome["best"], job_id)
        for entry in outcome["trail"]:
            entry.pop("path", None)
        if outcome["best"]:
            outcome["best"].pop("path", None)
        store = VariantStore(settings.store_dir)
        run_id = "autotune-" + job_id[:12]
        store.save_report(spec.family, run_id, {"run_id": run_id, "kind": "autotune", "created_at":
                                                utcnow().isoformat(), "spec": spec.model_dump(mode="json"),
                                                "job_id": job_id, **json.loads(json.dumps(outcome))})
    except Exception as exc:
        log.exception("autotune %s failed", job_id)
        detail = getattr(exc, "detail", str(exc))
        jobs.update(job_id, state="failed", finished_at=utcnow(), error=detail,
                    hint=getattr(exc, "hint", "") or "see the worker log")
        return {"state": "failed"}
    finally:
        if search is not None:
            search.cleanup()
    state = "cancelled" if jobs.cancel_requested(job_id) else "succeeded"
    variants = [outcome["variant"]] if outcome.get("variant") else []
    if state == "succeeded" and variants and on_success is not None:
        outcome.update(on_success(jobs.update(job_id, results=outcome, variants=variants)))
    jobs.update(job_id, state=state, finished_at=utcnow(), progress=100.0, results=outcome, variants=variants,
                stage="done" if outcome["best"] else "no candidate passed the gate")
    return {"state": state, "variant": outcome.get("variant")}
