"""Run a compression recipe stage by stage, publishing each variant atomically into the store."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from slimbert.compression.finetune import evaluate, finetune
from slimbert.compression.recipe import Recipe
from slimbert.config import Settings
from slimbert.data import SST2_LABELS, TextDataset, load_sst2
from slimbert.inference.loader import load_variant
from slimbert.jobs import JobStore, StageRecord, utcnow
from slimbert.models import has_trained_head, load_classifier, load_tokenizer, resolve_model
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore

log = logging.getLogger(__name__)

_VERSIONED = ("torch", "transformers", "onnxruntime", "optimum-onnx", "optimum", "bitsandbytes", "slimbert")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class JobReporter:
    """Writes stage, percentage and stage history into the job record; checks for cancellation."""

    def __init__(self, jobs: JobStore, job_id: str, stage_weights: dict[str, float], queue: str, worker: str):
        self.jobs, self.job_id = jobs, job_id
        total = sum(stage_weights.values())
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

    def skip(self, name: str, reason: str) -> None:
        record = StageRecord(name=name, state="skipped", queue=self.queue, worker=self.worker,
                             finished_at=utcnow(), detail={"reason": reason})
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
        job = self.jobs.get(self.job_id)
        stages = [s for s in job.stages]
        for i in range(len(stages) - 1, -1, -1):
            if stages[i].name == record.name and stages[i].finished_at is None:
                stages[i] = stages[i].model_copy(update={"state": state, "finished_at": utcnow(),
                                                         "detail": record.detail})
                break
        progress = round(min(100.0 * self.done, 99.9), 1)
        self.jobs.save(job.model_copy(update={"stages": stages, "progress": progress}))


@dataclass
class Context:
    settings: Settings
    store: VariantStore
    jobs: JobStore
    job_id: str
    recipe: Recipe
    family: str
    base_path: str
    tokenizer: PreTrainedTokenizerBase
    train: TextDataset
    dev: TextDataset


def _publish_torch(ctx: Context, model: PreTrainedModel, variant: str, parent: str | None,
                   technique: Technique, accuracy: float) -> VariantManifest:
    with ctx.store.staging(ctx.family, variant) as staged:
        model.save_pretrained(staged)
        ctx.tokenizer.save_pretrained(staged)
        manifest = _manifest(ctx, variant, parent, technique, accuracy, runtime="torch", precision="fp32",
                             num_parameters=sum(p.numel() for p in model.parameters()),
                             num_layers=model.config.num_hidden_layers)
        return ctx.store.publish(staged, manifest)


def _manifest(ctx: Context, variant: str, parent: str | None, technique: Technique, accuracy: float | None,
              **fields: Any) -> VariantManifest:
    return VariantManifest(
        family=ctx.family, variant=variant, base_model_id=ctx.recipe.base_model, parent=parent,
        technique=technique, recipe=ctx.recipe.model_dump(mode="json"), labels=SST2_LABELS,
        dev_accuracy=accuracy, dev_examples=len(ctx.dev), job_id=ctx.job_id,
        library_versions=library_versions(), **fields,
    )


def run_compress(settings: Settings, job_id: str, recipe: Recipe, *, queue: str, worker: str) -> dict[str, Any]:
    """Run every stage of ``recipe`` for job ``job_id``; returns the job's results (JSON)."""
    from slimbert.compression.layers import drop_layers
    from slimbert.compression.onnx_int8 import quantize_dynamic_int8
    from slimbert.compression.sensitivity import choose_layers_to_drop, layer_sensitivity

    jobs = JobStore(settings.job_dir)
    store = VariantStore(settings.store_dir, min_free_mb=settings.min_free_disk_mb)
    pruning = recipe.layer_pruning
    weights: dict[str, float] = {"load": 2, "finetune": 40, "evaluate-baseline": 4, "sensitivity": 8 if pruning else 0,
               "prune-layers": 30 if pruning else 0, "int8-dynamic": 10 if recipe.int8_dynamic else 0}
    rep = JobReporter(jobs, job_id, weights, queue, worker)
    results: dict[str, Any] = {"variants": {}}

    with rep.stage("load") as st:
        base_path = resolve_model(recipe.base_model, settings)
        tokenizer = load_tokenizer(base_path)
        train = load_sst2("train", settings.sst2_dir, offline=settings.offline).subset(
            min(recipe.train_examples or settings.max_train_examples, settings.max_train_examples), recipe.data_seed)
        dev = load_sst2("validation", settings.sst2_dir, offline=settings.offline).subset(
            recipe.dev_examples, recipe.data_seed)
        model = load_classifier(base_path, SST2_LABELS)
        st.detail.update(base_path=base_path, train_examples=len(train), dev_examples=len(dev),
                         train_source=train.source)
    ctx = Context(settings, store, jobs, job_id, recipe, recipe.family_name(), base_path, tokenizer, train, dev)

    if recipe.finetune is None or has_trained_head(base_path, SST2_LABELS):
        why = "disabled in the recipe" if recipe.finetune is None else "the base model already has a trained SST-2 head"
        rep.skip("finetune", why)
    else:
        with rep.stage("finetune") as st:
            ft = finetune(model, tokenizer, train, dev, recipe.finetune, progress=rep.progress)
            st.detail.update(dev_accuracy=ft.dev_accuracy, steps=ft.steps, seconds=round(ft.seconds, 1),
                             history=ft.history)

    with rep.stage("evaluate-baseline") as st:
        base_eval = evaluate(model, tokenizer, dev, max_length=recipe.eval_max_length)
        _publish_torch(ctx, model, "baseline-fp32", None,
                       Technique(name="finetune", params=(recipe.finetune.model_dump() if recipe.finetune else {})),
                       base_eval.accuracy)
        results["variants"]["baseline-fp32"] = {"dev_accuracy": base_eval.accuracy}
        st.detail.update(dev_accuracy=base_eval.accuracy, dev_loss=base_eval.loss)

    source_variant = "baseline-fp32"
    if pruning is not None:
        num_layers = model.config.num_hidden_layers
        scores = None
        if pruning.strategy == "sensitivity":
            with rep.stage("sensitivity") as st:
                scores = layer_sensitivity(
                    model, lambda m: _acc_loss(m, tokenizer, dev, recipe.eval_max_length), progress=rep.progress)
                st.detail["scores"] = [s.to_json() for s in scores]
                results["sensitivity"] = st.detail["scores"]
        else:
            rep.skip("sensitivity", f"strategy {pruning.strategy!r} does not use it")
        with rep.stage("prune-layers") as st:
            dropped = choose_layers_to_drop(num_layers, pruning.drop, pruning.strategy, scores)
            drop_layers(model, dropped)
            refit = finetune(model, tokenizer, train, dev, pruning.refinetune, progress=rep.progress)
            pruned_eval = evaluate(model, tokenizer, dev, max_length=recipe.eval_max_length)
            params = {"dropped_layers": dropped, "strategy": pruning.strategy, "layers_before": num_layers,
                      "layers_after": model.config.num_hidden_layers, "refinetune": pruning.refinetune.model_dump()}
            _publish_torch(ctx, model, "pruned-fp32", "baseline-fp32",
                           Technique(name="layer-pruning", params=params), pruned_eval.accuracy)
            results["variants"]["pruned-fp32"] = {"dev_accuracy": pruned_eval.accuracy}
            st.detail.update(params, dev_accuracy=pruned_eval.accuracy, refinetune_seconds=round(refit.seconds, 1))
        source_variant = "pruned-fp32"

    if recipe.int8_dynamic is not None:
        int8_name = "pruned-int8" if source_variant == "pruned-fp32" else "baseline-int8"
        with rep.stage("int8-dynamic") as st:
            src = store.variant_dir(ctx.family, source_variant)
            with store.staging(ctx.family, int8_name) as staged:
                made = quantize_dynamic_int8(src, staged, per_channel=recipe.int8_dynamic.per_channel,
                                             isa=recipe.int8_dynamic.isa)
                draft = _manifest(ctx, int8_name, source_variant, Technique(name="int8-dynamic", params=made.params),
                                  None, runtime="onnxruntime", precision="int8",
                                  num_parameters=store.manifest(ctx.family, source_variant).num_parameters,
                                  num_layers=model.config.num_hidden_layers, target_device="cpu")
                # Measure accuracy on the runtime that will serve it: it can differ from torch's.
                acc = _predictor_accuracy(load_variant(draft, staged), dev)
                manifest = store.publish(staged, draft.model_copy(update={"dev_accuracy": acc}))
            results["variants"][int8_name] = {"dev_accuracy": acc}
            st.detail.update(made.params, dev_accuracy=acc, size_mb=round(manifest.size_mb, 2))

    jobs.raise_if_cancelled(job_id)
    return results


def _acc_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dev: TextDataset,
              max_length: int) -> tuple[float, float]:
    result = evaluate(model, tokenizer, dev, max_length=max_length)
    return result.accuracy, result.loss


def _predictor_accuracy(predictor: Any, dev: TextDataset, batch_size: int = 64) -> float:
    correct = 0
    for start in range(0, len(dev), batch_size):
        out = predictor.predict(dev.texts[start : start + batch_size])
        correct += sum(int(p.label_id == y) for p, y in zip(out.predictions, dev.labels[start : start + batch_size],
                                                           strict=True))
    return correct / max(len(dev), 1)

