"""The one place a job's variants enter the store: staged files, measured on their own runtime, published.

Accuracy is measured by loading the staged files through ``load_variant`` (the serving path), never
copied from a parent. Compression stages and autotune both publish through here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from slimbert.compression.onnx_int8 import PrecisionResult
from slimbert.compression.recipe import Recipe
from slimbert.compression.structure import Made
from slimbert.config import Settings
from slimbert.data import Splits
from slimbert.hardware import library_versions
from slimbert.inference.bucketing import predict_label_ids
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Predictor
from slimbert.metrics import all_metrics, interval
from slimbert.records import CPU_ONLY_RUNTIMES, CompressResults, TargetDevice, VariantResult
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore


@dataclass
class Context:
    """What every stage of one job needs: settings, store, data, and what earlier stages produced."""

    settings: Settings
    store: VariantStore
    job_id: str
    recipe: Recipe
    family: str
    base_path: str
    tokenizer: PreTrainedTokenizerBase
    splits: Splits  # train trains, validation selects, test reports
    device: str = "cpu"
    results: CompressResults = field(default_factory=lambda: CompressResults(variants={}, skipped={}))
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
        technique=technique, recipe=ctx.recipe.model_dump(mode="json"), labels=dict(enumerate(ctx.splits.label_names)),
        test_accuracy=None, test_examples=len(ctx.splits.test), validation_examples=len(ctx.splits.validation),
        splits=ctx.splits.describe(ctx.recipe.data_seed), job_id=ctx.job_id,
        dataset=ctx.recipe.dataset, dataset_sha256=ctx.splits.sha256, task=ctx.splits.task,
        metric=ctx.splits.test.metric,
        library_versions=library_versions(), extra=extra, **fields,
    )


def score_splits(predictor: Predictor, splits: Splits) -> dict[str, Any]:
    """Every metric on test and validation, and the primary metric's 95% interval on test: the manifest's
    fields, measured through ``predictor`` (the variant as it is served)."""
    n = len(splits.label_names)
    test_preds = predict_label_ids(predictor, splits.test.inputs)
    lo, hi = interval(splits.test.metric, test_preds, splits.test.labels, n)
    return {"test_metrics": all_metrics(test_preds, splits.test.labels, n),
            "validation_metrics": all_metrics(predict_label_ids(predictor, splits.validation.inputs),
                                              splits.validation.labels, n),
            "test_metric_ci95": (round(lo, 4), round(hi, 4))}


def measure_and_publish(ctx: Context, staged: Path, draft: VariantManifest) -> VariantManifest:
    """Load the staged files as they will be served, measure accuracy on them, publish; record the result.

    Validation accuracy is what later choices (recommendations, gates) read; test accuracy is what is
    reported, and nothing chooses on it.
    """
    start = time.perf_counter()
    device = "gpu" if draft.target_device == "gpu" else "cpu"
    predictor = load_variant(draft, staged, device)
    measured = score_splits(predictor, ctx.splits)
    del predictor
    test, validation = measured["test_metrics"]["accuracy"], measured["validation_metrics"]["accuracy"]
    manifest = ctx.store.publish(staged, draft.model_copy(update={
        "test_accuracy": test, "validation_accuracy": validation, **measured}))
    ctx.lineage[manifest.variant] = dict(manifest.extra)
    ctx.results.variants[manifest.variant] = VariantResult(
        test_accuracy=test, validation_accuracy=validation, test_metrics=measured["test_metrics"],
        validation_metrics=measured["validation_metrics"],
        parent=manifest.parent, technique=manifest.technique.name,
        runtime=manifest.runtime, precision=manifest.precision, size_mb=round(manifest.size_mb, 3),
        num_parameters=manifest.num_parameters, num_layers=manifest.num_layers,
        eval_seconds=round(time.perf_counter() - start, 1),
    )
    return manifest


def publish_torch(ctx: Context, model: PreTrainedModel, variant: str, parent: str | None, made: Made
                  ) -> VariantManifest:
    """save_pretrained + tokenizer into staging, then :func:`measure_and_publish`."""
    with ctx.store.staging(ctx.family, variant) as staged:
        model.save_pretrained(staged)
        ctx.tokenizer.save_pretrained(staged)
        draft = make_manifest(ctx, variant, parent, made.technique, runtime="torch", precision="fp32",
                              num_parameters=sum(p.numel() for p in model.parameters()),
                              num_layers=model.config.num_hidden_layers, extra=made.extra)
        return measure_and_publish(ctx, staged, draft)


def target_device(made: PrecisionResult) -> TargetDevice:
    """Where a precision variant serves: fp16 on a GPU, ONNX Runtime and Inductor programs on a CPU."""
    if made.precision == "fp16":
        return "gpu"
    return "cpu" if made.runtime in CPU_ONLY_RUNTIMES else "any"
