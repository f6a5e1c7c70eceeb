"""Run a compression recipe stage by stage, publishing each variant atomically into the store.

Order: load, finetune, evaluate-baseline, sensitivity, prune-layers, prune-heads-ffn, then one stage per
precision variant (``int8-dynamic:pruned-int8``, ...). The structural stages live in
``stages_structure``, the precision ones in ``stages_precision``; this module holds the job plumbing.
"""

from __future__ import annotations

import copy
import logging
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from slimbert.benchmark.environment import library_versions
from slimbert.compression.finetune import finetune
from slimbert.compression.recipe import Recipe
from slimbert.config import Settings
from slimbert.data import SST2_LABELS, TextDataset, load_sst2
from slimbert.errors import JobCancelled
from slimbert.inference.loader import load_variant
from slimbert.jobs import JobStore, StageRecord, utcnow
from slimbert.models import has_trained_head, load_classifier, load_tokenizer, resolve_model
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore

log = logging.getLogger(__name__)

class StageSkipped(Exception):
    """Raised inside an optional stage that finds it cannot run; the stage is recorded as skipped."""


class JobReporter:
    """Writes stage, percentage and stage history into the job record; checks for cancellation."""

    def __init__(self, jobs: JobStore, job_id: str, stage_weights: dict[str, float], queue: str, worker: str):
        self.jobs, self.job_id = jobs, job_id
        total = sum(stage_weights.values()) or 1.0
        self.weights = {k: v / total for k, v in stage_weights.items()}
        self.queue, self.worker = queue, worker
        self.done = 0.0
        self.current: str | None = None
        self._last_write = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        # Cancellation is honoured at stage boundaries, where nothing is half-done.
        self.jobs.raise_if_cancelled(self.job_id)
        self.current = name
        record = StageRecord(name=name, queue=self.queue, worker=self.worker)
        job = self.jobs.get(self.job_id)
        self.jobs.save(job.model_copy(update={"stage": name, "stages": [*job.stages, record]}))
        try:
            yield record
        except BaseException:
            self._finish(record, "failed")
            raise
        self.done += self.weights.get(name, 0.0)
        self._finish(record, "done")

    @contextmanager
    def optional_stage(self, name: str) -> Iterator[StageRecord]:
        """Like :meth:`stage`, but a failure records the stage as skipped with the reason and the job goes on.

        Cancellation, out-of-memory and Celery's soft time limit still end the job.
        """
        with self.stage(name) as record:
            try:
                yield record
            except (JobCancelled, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - any other failure skips this one variant
                if type(exc).__name__ == "SoftTimeLimitExceeded":  # Celery's, named to keep slimbert framework-free
                    raise
                if isinstance(exc, StageSkipped):
                    record.detail["reason"] = str(exc)
                else:
                    log.warning("stage %s failed, skipping it:\n%s", name, traceback.format_exc())
                    record.detail["reason"] = f"failed: {type(exc).__name__}: {exc}"[:1000]
                record.state = "skipped"

    def skip(self, name: str, reason: str) -> None:
        now = utcnow()
        record = StageRecord(name=name, state="skipped", queue=self.queue, worker=self.worker,
                             started_at=now, finished_at=now, detail={"reason": reason})
        job = self.jobs.get(self.job_id)
        self.done += self.weights.get(name, 0.0)
        self.jobs.save(job.model_copy(update={"stages": [*job.stages, record], "progress": 100 * self.done}))

    def progress(self, stage_percent: float) -> None:
        """Progress inside the current stage, written at most twice a second."""
        now = time.monotonic()
        if now - self._last_write < 0.5 and stage_percent < 100:
            return
        self._last_write = now
        weight = self.weights.get(self.current or "", 0.0)
        overall = min(100.0 * (self.done + weight * stage_percent / 100.0), 99.9)
        self.jobs.update(self.job_id, progress=round(overall, 1))

    def _finish(self, record: StageRecord, state: str) -> None:
        # An optional stage that gave up marks its own record skipped; keep that.
        state = "skipped" if record.state == "skipped" and state == "done" else state
        job = self.jobs.get(self.job_id)
        stages = list(job.stages)
        for i in range(len(stages) - 1, -1, -1):
            if stages[i].name == record.name and stages[i].finished_at is None:
                stages[i] = stages[i].model_copy(update={"state": state, "finished_at": utcnow(),
                                                         "detail": record.detail})
                break
        progress = round(min(100.0 * self.done, 99.9), 1)
        self.jobs.save(job.model_copy(update={"stages": stages, "progress": progress}))


@dataclass
class Context:
    """What every stage needs: settings, store, data, and what earlier stages produced."""

    settings: Settings
    store: VariantStore
    job_id: str
    recipe: Recipe
    family: str
    base_path: str
    tokenizer: PreTrainedTokenizerBase
    train: TextDataset
    dev: TextDataset
    device: str = "cpu"
    results: dict[str, Any] = field(default_factory=lambda: {"variants": {}, "skipped": {}})
    # Manifest ``extra`` each variant passes to its descendants (e.g. the sensitivity scores it used).
    lineage: dict[str, dict[str, Any]] = field(default_factory=dict)

    def variant_dir(self, variant: str) -> Path:
        return self.store.variant_dir(self.family, variant)


def make_manifest(ctx: Context, variant: str, parent: str | None, technique: Technique, **fields: Any
                  ) -> VariantManifest:
    """A draft manifest (accuracy unset) carrying the fully resolved recipe."""
    extra = {**ctx.lineage.get(parent or "", {}), **fields.pop("extra", {})}
    return VariantManifest(
        family=ctx.family, variant=variant, base_model_id=ctx.recipe.base_model, parent=parent,
        technique=technique, recipe=ctx.recipe.model_dump(mode="json"), labels=SST2_LABELS,
        dev_accuracy=None, dev_examples=len(ctx.dev), job_id=ctx.job_id,
        library_versions=library_versions(), extra=extra, **fields,
    )


def measure_and_publish(ctx: Context, staged: Path, draft: VariantManifest) -> VariantManifest:
    """Load the staged files through ``load_variant`` (the serving path), measure dev accuracy, publish.

    Accuracy is measured on the runtime that will serve the variant, never copied from its parent.
    """
    start = time.perf_counter()
    device = "gpu" if draft.target_device == "gpu" else "cpu"
    predictor = load_variant(draft, staged, device)
    accuracy = predictor_accuracy(predictor, ctx.dev)
    del predictor
    manifest = ctx.store.publish(staged, draft.model_copy(update={"dev_accuracy": accuracy}))
    ctx.lineage[manifest.variant] = dict(manifest.extra)
    ctx.results["variants"][manifest.variant] = {
        "dev_accuracy": accuracy, "parent": manifest.parent, "technique": manifest.technique.name,
        "runtime": manifest.runtime, "precision": manifest.precision, "size_mb": round(manifest.size_mb, 3),
        "num_parameters": manifest.num_parameters, "num_layers": manifest.num_layers,
        "eval_seconds": round(time.perf_counter() - start, 1),
    }
    return manifest


def publish_torch(ctx: Context, model: PreTrainedModel, variant: str, parent: str | None,
                  technique: Technique, **fields: Any) -> VariantManifest:
    """save_pretrained + tokenizer into staging, then :func:`measure_and_publish`."""
    with ctx.store.staging(ctx.family, variant) as staged:
        model.save_pretrained(staged)
        ctx.tokenizer.save_pretrained(staged)
        draft = make_manifest(ctx, variant, parent, technique, runtime="torch", precision="fp32",
                              num_parameters=sum(p.numel() for p in model.parameters()),
                              num_layers=model.config.num_hidden_layers, **fields)
        return measure_and_publish(ctx, staged, draft)


def predictor_accuracy(predictor: Any, dev: TextDataset, batch_size: int = 64) -> float:
    """Dev accuracy of a predictor from ``load_variant``."""
    correct = 0
    for start in range(0, len(dev), batch_size):
        out = predictor.predict(dev.texts[start : start + batch_size])
        correct += sum(int(p.label_id == y) for p, y in zip(out.predictions, dev.labels[start : start + batch_size],
                                                           strict=True))
    return correct / max(len(dev), 1)


def stage_weights(recipe: Recipe, device: str = "cpu") -> dict[str, float]:
    """Relative cost of each planned stage, for the progress bar."""
    from slimbert.compression.stages_precision import planned_precision

    w: dict[str, float] = {"load": 2, "finetune": 40 if recipe.finetune else 0, "evaluate-baseline": 4,
                           "sensitivity": 8 if recipe.uses_sensitivity() else 0,
                           "prune-layers": 30 if recipe.layer_pruning else 0,
                           "prune-heads-ffn": 40 if recipe.head_ffn_pruning else 0}
    for step in planned_precision(recipe, device):
        w[step.stage] = 15 if step.method == "int8-qat" else 8
    return w


def _job_device(queue: str) -> str:
    return "gpu" if queue == "gpu" and torch.cuda.is_available() else "cpu"


# Precision methods that belong with training on a GPU worker; the rest (INT8 export, calibration,
# QAT's ONNX export) run on the cpu queue, where their runtime serves.
GPU_PHASE_METHODS = frozenset({"fp16-bf16", "int4-nf4"})
Phase = Literal["all", "train", "precision"]


def _load_inputs(settings: Settings, recipe: Recipe) -> tuple[str, PreTrainedTokenizerBase, TextDataset,
                                                               TextDataset]:
    """The base model's path and tokenizer, and the recipe's train and dev subsets."""
    base_path = resolve_model(recipe.base_model, settings)
    train = load_sst2("train", settings.sst2_dir, offline=settings.offline).subset(
        min(recipe.train_examples or settings.max_train_examples, settings.max_train_examples), recipe.data_seed)
    dev = load_sst2("validation", settings.sst2_dir, offline=settings.offline).subset(
        recipe.dev_examples, recipe.data_seed)
    return base_path, load_tokenizer(base_path), train, dev


def run_compress(settings: Settings, job_id: str, recipe: Recipe, *, queue: str, worker: str,
                 phase: Phase = "all") -> dict[str, Any]:
    """Run the stages of ``recipe`` for job ``job_id``; returns the job's results (JSON).

    ``phase`` splits a job between queues: ``train`` runs the structure stages (and half precision and
    NF4) where the job was queued, typically a GPU worker; ``precision`` then runs the INT8 stages on
    the cpu queue, reading every parent back from the store. ``all`` runs everything here.
    """
    from slimbert.compression import stages_structure

    jobs = JobStore(settings.job_dir)
    store = VariantStore(settings.store_dir, min_free_mb=settings.min_free_disk_mb)
    device = _job_device(queue)
    rep = JobReporter(jobs, job_id, stage_weights(recipe, device), queue, worker)
    if phase == "precision":
        return _precision_phase(settings, jobs, store, rep, job_id, recipe, device)

    with rep.stage("load") as st:
        base_path, tokenizer, train, dev = _load_inputs(settings, recipe)
        model = load_classifier(base_path, SST2_LABELS)
        if recipe.layer_pruning is not None:
            # Fail before the long fine-tune when the depth asked for cannot be reached.
            recipe.layer_pruning.count_to_drop(model.config.num_hidden_layers)
        st.detail.update(base_path=base_path, train_examples=len(train), dev_examples=len(dev),
                         train_source=train.source, device=device, fp32_variants=recipe.fp32_variants(),
                         precision_targets=recipe.precision_targets())
    ctx = Context(settings, store, job_id, recipe, recipe.family_name(), base_path, tokenizer, train, dev, device)

    if recipe.finetune is None or has_trained_head(base_path, SST2_LABELS):
        why = "disabled in the recipe" if recipe.finetune is None else "the base model already has a trained SST-2 head"
        rep.skip("finetune", why)
        ctx.results["skipped"]["finetune"] = why
        finetune_params: dict[str, Any] = {"skipped": why}
    else:
        with rep.stage("finetune") as st:
            ft = finetune(model, tokenizer, train, dev, recipe.finetune, progress=rep.progress)
            st.detail.update(dev_accuracy=ft.dev_accuracy, steps=ft.steps, seconds=round(ft.seconds, 1),
                             history=ft.history)
        finetune_params = {**recipe.finetune.model_dump(), "steps": ft.steps, "epochs_run": ft.epochs_run}

    with rep.stage("evaluate-baseline") as st:
        manifest = publish_torch(ctx, model, "baseline-fp32", None, Technique(name="finetune", params=finetune_params),
                                 extra={"encoder_parameters": stages_structure.encoder_parameters(model)})
        st.detail.update(dev_accuracy=manifest.dev_accuracy, size_mb=round(manifest.size_mb, 2))
    teacher = model  # the fine-tuned baseline; every later model is a copy

    scores = None
    if recipe.uses_sensitivity():
        with rep.stage("sensitivity") as st:
            scores = stages_structure.run_sensitivity(ctx, teacher, rep.progress)
            st.detail["scores"] = ctx.results["sensitivity"] = [s.to_json() for s in scores]
    else:
        rep.skip("sensitivity", "disabled in the recipe")

    current, current_name = teacher, "baseline-fp32"
    if recipe.layer_pruning is not None:
        with rep.stage("prune-layers") as st:
            current = copy.deepcopy(teacher)
            st.detail.update(stages_structure.prune_layers(ctx, current, teacher, scores, rep.progress))
        current_name = "pruned-fp32"
    else:
        rep.skip("prune-layers", "disabled in the recipe")

    if recipe.head_ffn_pruning is not None:
        with rep.stage("prune-heads-ffn") as st:
            student = current if current is not teacher else copy.deepcopy(teacher)
            st.detail.update(stages_structure.prune_heads_ffn(ctx, student, current_name, teacher, rep.progress))
        current_name = "heads-fp32"
    else:
        rep.skip("prune-heads-ffn", "disabled in the recipe")
    # The precision stages read every model back from the store.
    del current, teacher, model

    _run_precision(ctx, rep, recipe, device, None if phase == "all" else GPU_PHASE_METHODS)
    jobs.raise_if_cancelled(job_id)
    return ctx.results


def _run_precision(ctx: Context, rep: JobReporter, recipe: Recipe, device: str,
                   methods: frozenset[str] | None) -> None:
    """The precision steps (only ``methods`` when given), each skipped with a reason if it cannot run."""
    from slimbert.compression import stages_precision

    for step in stages_precision.planned_precision(recipe, device):
        if methods is not None and step.method not in methods:
            continue
        reason = stages_precision.cannot_run(ctx, step)
        if reason:
            rep.skip(step.stage, reason)
            ctx.results["skipped"][step.variant] = reason
            continue
        with rep.optional_stage(step.stage) as st:
            st.detail.update(stages_precision.make_precision_variant(ctx, step, rep.progress))
        if st.state == "skipped":
            ctx.results["skipped"][step.variant] = st.detail.get("reason", "")


def _precision_phase(settings: Settings, jobs: JobStore, store: VariantStore, rep: JobReporter, job_id: str,
                     recipe: Recipe, device: str) -> dict[str, Any]:
    """The cpu half of a split job: the data again (cheap), the results so far from the job record."""
    record = jobs.get(job_id)
    rep.done = sum(rep.weights.get(s.name, 0.0) for s in record.stages if s.state in ("done", "skipped"))
    with rep.stage("load-precision") as st:
        base_path, tokenizer, train, dev = _load_inputs(settings, recipe)
        st.detail.update(device=device)
    ctx = Context(settings, store, job_id, recipe, recipe.family_name(), base_path, tokenizer, train, dev, device)
    previous = record.results or {}
    ctx.results.update({k: v for k, v in previous.items() if k not in ("variants", "skipped")})
    ctx.results["variants"].update(previous.get("variants", {}))
    ctx.results["skipped"].update(previous.get("skipped", {}))
    from slimbert.compression.stages_precision import Method

    _run_precision(ctx, rep, recipe, "cpu", frozenset(get_args(Method)) - GPU_PHASE_METHODS)
    jobs.raise_if_cancelled(job_id)
    return ctx.results

