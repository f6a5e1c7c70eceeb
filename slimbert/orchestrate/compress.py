"""Run a compression recipe stage by stage, publishing each variant atomically into the store.

Order: load, finetune, evaluate-baseline, sensitivity, prune-layers, prune-heads-ffn, then one stage per
precision variant (``int8-dynamic:pruned-int8``, ...). The stages themselves (``slimbert.compression``)
transform a model and say what they did; this module runs them in order, publishes what they made and
keeps the job record. :func:`execute_compress_job` is what the Celery task calls.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from slimbert.compression.finetune import Progress, finetune, selected_epoch
from slimbert.compression.heads import count_encoder_parameters
from slimbert.compression.precision_steps import PrecisionStep, build_precision, cannot_run, planned_precision
from slimbert.compression.recipe import Recipe
from slimbert.compression.structure import Made, prune_heads_ffn, prune_layers, sensitivity_scores
from slimbert.config import Settings
from slimbert.data import Splits
from slimbert.hardware import cuda_available
from slimbert.jobs.lifecycle import FollowUp, JobResult, Run, run_job
from slimbert.jobs.store import JobRecord, JobStore, open_job_store
from slimbert.models import classifier_labels, load_classifier, load_tokenizer, resolve_model
from slimbert.orchestrate.publish import (
    Context,
    make_manifest,
    measure_and_publish,
    publish_torch,
    target_device,
)
from slimbert.orchestrate.reporter import JobReporter
from slimbert.records import BASELINE, GPU_PHASE_METHODS, HEADS, METHODS, PRUNED, CompressResults, Method
from slimbert.splits import in_label_order, load_splits
from slimbert.store.bucket import open_variant_store
from slimbert.store.manifest import Technique
from slimbert.store.store import VariantStore

Phase = Literal["all", "train", "precision"]


def stage_weights(recipe: Recipe, device: str = "cpu") -> dict[str, float]:
    """Relative cost of each planned stage, for the progress bar."""
    w: dict[str, float] = {"load": 2, "finetune": 40 if recipe.finetune else 0, "evaluate-baseline": 4,
                           "sensitivity": 8 if recipe.uses_sensitivity() else 0,
                           "prune-layers": 30 if recipe.layer_pruning else 0,
                           "prune-heads-ffn": 40 if recipe.head_ffn_pruning else 0}
    for step in planned_precision(recipe, device):
        w[step.stage] = 15 if step.method == "int8-qat" else 8
    return w


def _job_device(queue: str) -> str:
    return "gpu" if queue == "gpu" and cuda_available() else "cpu"


def _load_inputs(settings: Settings, recipe: Recipe) -> tuple[str, PreTrainedTokenizerBase, Splits, bool]:
    """The base model's path and tokenizer, the recipe's train, validation and test splits (label ids in the
    model's order when it already is a classifier for the dataset's labels), and whether it is one."""
    base_path = resolve_model(recipe.base_model, settings)
    splits = load_splits(settings, dataset=recipe.dataset, seed=recipe.data_seed,
                         validation_examples=recipe.validation_examples, test_examples=recipe.test_examples,
                         train_examples=recipe.train_examples, metric=recipe.metric)
    own = classifier_labels(base_path, splits.label_names)
    if own is not None:
        splits = in_label_order(splits, own)
    return base_path, load_tokenizer(base_path), splits, own is not None


def run_compress(settings: Settings, job_id: str, recipe: Recipe, *, queue: str, worker: str,
                 phase: Phase = "all") -> dict[str, Any]:
    """Run the stages of ``recipe`` for job ``job_id``; returns the job's results (JSON).

    ``phase`` splits a job between queues: ``train`` runs the structure stages (and half precision and
    NF4) where the job was queued, typically a GPU worker; ``precision`` then runs the INT8 stages on
    the cpu queue, reading every parent back from the store. ``all`` runs everything here.
    """
    jobs = open_job_store(settings)
    store = open_variant_store(settings)
    device = _job_device(queue)
    # Training runs where the job was queued: a GPU worker trains, distils and prunes on its GPU.
    train_device = "cuda:0" if device == "gpu" else "cpu"
    rep = JobReporter(jobs, job_id, stage_weights(recipe, device), queue, worker, train_device)
    if phase == "precision":
        return _precision_phase(settings, jobs, store, rep, job_id, recipe, device)

    with rep.stage("load") as st:
        base_path, tokenizer, splits, trained = _load_inputs(settings, recipe)
        # Training reads train; everything that chooses (early stopping, sensitivity) reads validation.
        train, validation = splits.train, splits.validation
        labels = dict(enumerate(splits.label_names))
        model = load_classifier(base_path, labels)
        torch.nn.Module.to(model, train_device)  # teacher and students stay there (transformers' .to types oddly)
        if recipe.layer_pruning is not None:
            # Fail before the long fine-tune when the depth asked for cannot be reached.
            recipe.layer_pruning.count_to_drop(model.config.num_hidden_layers)
        st.detail.update(base_path=base_path, splits=splits.describe(recipe.data_seed),
                         train_source=train.source, device=device, fp32_variants=recipe.fp32_variants(),
                         dataset=splits.dataset, labels=list(splits.label_names), metric=splits.train.metric,
                         precision_targets=recipe.precision_targets())
    ctx = Context(settings, store, job_id, recipe, recipe.family_name(), base_path, tokenizer, splits, device)

    if recipe.finetune is None or trained:
        why = ("disabled in the recipe" if recipe.finetune is None else
               f"the base model already is a classifier for the dataset's labels ({', '.join(labels.values())})")
        rep.skip("finetune", why)
        ctx.results.skipped["finetune"] = why
        finetune_params: dict[str, Any] = {"skipped": why}
    else:
        with rep.stage("finetune") as st:
            ft = finetune(model, tokenizer, train, validation, recipe.finetune, progress=rep.progress)
            st.detail.update(validation_accuracy=ft.dev_accuracy, steps=ft.steps, seconds=round(ft.seconds, 1),
                             history=ft.history)
        finetune_params = {**recipe.finetune.model_dump(), "steps": ft.steps, "epochs_run": ft.epochs_run,
                           "selected": selected_epoch(ft)}

    with rep.stage("evaluate-baseline") as st:
        made = Made(Technique(name="finetune", params=finetune_params),
                    {"encoder_parameters": count_encoder_parameters(model)})
        manifest = publish_torch(ctx, model, BASELINE, None, made)
        st.detail.update(test_accuracy=manifest.test_accuracy, validation_accuracy=manifest.validation_accuracy,
                         test_metrics=manifest.test_metrics, size_mb=round(manifest.size_mb, 2))
    teacher = model  # the fine-tuned baseline; every later model is a copy

    scores = None
    if recipe.uses_sensitivity():
        with rep.stage("sensitivity") as st:
            scores = sensitivity_scores(teacher, tokenizer, validation, recipe.eval_max_length, rep.progress)
            st.detail["scores"] = [s.to_json() for s in scores]
            ctx.results.sensitivity = st.detail["scores"]
    else:
        rep.skip("sensitivity", "disabled in the recipe")

    current, current_name = teacher, BASELINE
    if recipe.layer_pruning is not None:
        with rep.stage("prune-layers") as st:
            current = copy.deepcopy(teacher)
            made = prune_layers(current, teacher, recipe.layer_pruning, scores, tokenizer, train, validation,
                                rep.progress)
            manifest = publish_torch(ctx, current, PRUNED, BASELINE, made)
            st.detail.update({**made.technique.params, "test_accuracy": manifest.test_accuracy,
                              "validation_accuracy": manifest.validation_accuracy,
                              "test_metrics": manifest.test_metrics, **made.detail})
        current_name = PRUNED
    else:
        rep.skip("prune-layers", "disabled in the recipe")

    if recipe.head_ffn_pruning is not None:
        with rep.stage("prune-heads-ffn") as st:
            student = current if current is not teacher else copy.deepcopy(teacher)
            made = prune_heads_ffn(student, teacher, recipe.head_ffn_pruning, tokenizer, train, validation,
                                   rep.progress)
            manifest = publish_torch(ctx, student, HEADS, current_name, made)
            p = made.technique.params
            ctx.results.encoder_parameters = {"before": p["encoder_parameters_before"],
                                                 "after": p["encoder_parameters_after"],
                                                 "reduction": p["encoder_parameter_reduction"]}
            st.detail.update({**p, **made.detail, "test_accuracy": manifest.test_accuracy,
                              "validation_accuracy": manifest.validation_accuracy,
                              "test_metrics": manifest.test_metrics})
        current_name = HEADS
    else:
        rep.skip("prune-heads-ffn", "disabled in the recipe")
    # The precision stages read every model back from the store.
    del current, teacher, model

    _run_precision(ctx, rep, recipe, device, None if phase == "all" else GPU_PHASE_METHODS)
    jobs.raise_if_cancelled(job_id)
    return ctx.results.model_dump(mode="json")


def make_precision_variant(ctx: Context, step: PrecisionStep, progress: Progress | None = None) -> dict[str, Any]:
    """Build, measure and publish one precision variant; returns the stage detail."""
    src = ctx.variant_dir(step.source)
    parent = ctx.store.manifest(ctx.family, step.source)
    with ctx.store.staging(ctx.family, step.variant) as staged:
        made, notes = build_precision(ctx.recipe, step, src, staged, ctx.tokenizer, ctx.splits.train)
        if progress:
            progress(70.0)
        params = {**made.params, **notes, "source": step.source}
        draft = make_manifest(ctx, step.variant, step.source, Technique(name=step.method, params=params),
                              runtime=made.runtime, precision=made.precision, num_parameters=parent.num_parameters,
                              num_layers=parent.num_layers, target_device=target_device(made))
        manifest = measure_and_publish(ctx, staged, draft)
    return {"source": step.source, "variant": step.variant, "runtime": made.runtime, "precision": made.precision,
            "test_accuracy": manifest.test_accuracy, "validation_accuracy": manifest.validation_accuracy,
            "test_metrics": manifest.test_metrics,
            "parent_test_accuracy": parent.test_accuracy,
            "size_mb": round(manifest.size_mb, 3), **notes}


def _run_precision(ctx: Context, rep: JobReporter, recipe: Recipe, device: str,
                   methods: frozenset[Method] | None) -> None:
    """The precision steps (only ``methods`` when given), each skipped with a reason if it cannot run."""
    for step in planned_precision(recipe, device):
        if methods is not None and step.method not in methods:
            continue
        reason = cannot_run(recipe, step, ctx.variant_dir(step.source), ctx.device)
        if reason:
            rep.skip(step.stage, reason)
            ctx.results.skipped[step.variant] = reason
            continue
        # Precision variants are built on the CPU from the stored fp32 files, whichever worker runs them.
        with rep.optional_stage(step.stage, device="cpu") as st:
            st.detail.update(make_precision_variant(ctx, step, rep.progress))
        if st.state == "skipped":
            ctx.results.skipped[step.variant] = st.detail.get("reason", "")


def _precision_phase(settings: Settings, jobs: JobStore, store: VariantStore, rep: JobReporter, job_id: str,
                     recipe: Recipe, device: str) -> dict[str, Any]:
    """The cpu half of a split job: the data again (cheap), the results so far from the job record."""
    record = jobs.get(job_id)
    rep.done = sum(rep.weights.get(s.name, 0.0) for s in record.stages if s.state in ("done", "skipped"))
    with rep.stage("load-precision") as st:
        base_path, tokenizer, splits, _ = _load_inputs(settings, recipe)
        st.detail.update(device=device)
    ctx = Context(settings, store, job_id, recipe, recipe.family_name(), base_path, tokenizer, splits, device)
    # The train phase's results, read back: the cpu half adds its variants to them.
    ctx.results = CompressResults.model_validate({"variants": {}, "skipped": {}, **(record.results or {})})
    _run_precision(ctx, rep, recipe, "cpu", frozenset(METHODS) - GPU_PHASE_METHODS)
    jobs.raise_if_cancelled(job_id)
    return ctx.results.model_dump(mode="json")


def execute_compress_job(settings: Settings, job_id: str, *, queue: str, worker: str,
                         on_success: FollowUp | None = None, phase: Phase = "all") -> dict[str, Any]:
    """Run the compression job ``job_id`` (or one ``phase`` of it) through the job life cycle.

    After the ``train`` phase the job stays running, marked ``awaiting-cpu``: the caller queues the
    ``precision`` phase on the cpu queue, which finishes it.
    """

    def body(record: JobRecord) -> JobResult:
        recipe = Recipe.model_validate(record.request.get("recipe", {}))
        results = run_compress(settings, job_id, recipe, queue=queue, worker=worker, phase=phase)
        variants = sorted(results.get("variants", {}))
        if phase == "train":
            return JobResult(results, variants, handoff={"phase": "awaiting-cpu", "worker": None,
                                                         "stage": "waiting for the cpu queue"})
        return JobResult(results, variants)

    run = Run(queue, worker, resume=phase == "precision", phase=phase,
              expect_phase="awaiting-cpu" if phase == "precision" else None)
    return run_job(settings, job_id, body, run, on_success if phase != "train" else None)
