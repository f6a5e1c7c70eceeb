"""Submitting, listing and cancelling jobs."""

from __future__ import annotations

import hashlib
import json

from pydantic import ValidationError

from app.schemas import FOLLOW_UP_BENCHMARK, CompressRequest
from app.services.queue import QueueClient
from slimbert.benchmark.runner import BenchmarkSpec
from slimbert.compression.presets import build_recipe
from slimbert.config import Settings
from slimbert.errors import InvalidRecipe, QueueUnavailable
from slimbert.jobs import TERMINAL, JobRecord, JobStore, utcnow
from slimbert.models import resolve_model
from slimbert.orchestrate.autotune_spec import AutotuneSpec
from slimbert.orchestrate.benchmark import plan_benchmark
from slimbert.records import BASELINE
from slimbert.splits import check_recipe_data
from slimbert.store.store import VariantStore
from slimbert.tasks import QUEUE_CPU, TASK_AUTOTUNE, TASK_COMPRESS


def submit_compress(
    request: CompressRequest, jobs: JobStore, queue: QueueClient, idempotency_key: str | None = None
) -> JobRecord:
    """Validate the recipe, write the job record, then enqueue it."""
    # Validated before the key is looked up: an invalid body is a 422 even under a known key.
    try:
        recipe = build_recipe(request.preset, request.recipe)
    except ValidationError as exc:
        raise InvalidRecipe("the recipe is invalid", hint=_fields_hint(exc, "recipe")) from None
    except ValueError as exc:
        raise InvalidRecipe(str(exc), hint=str(exc)) from None
    fingerprint = hashlib.sha256(json.dumps(request.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    if idempotency_key:
        existing = jobs.find_by_idempotency_key(idempotency_key, fingerprint)
        if existing is not None:
            return existing
    if request.benchmark is not None:
        _validate_benchmark_options(request.benchmark, recipe.family_name())
    # The worker resolves the model again; refusing here means a bad path or an unknown hub id is a 422
    # now, not a failed job later. A path outside SLIMBERT_ALLOWED_MODEL_ROOTS is refused either way.
    base_path = resolve_model(recipe.base_model, queue.settings)
    check_recipe_data(queue.settings, dataset=recipe.dataset, metric=recipe.metric, base_path=base_path)
    queue.require_redis()
    queue_name, fallback = queue.choose_queue(request.device)
    record = JobRecord(
        id=jobs.new_id(), kind="compress", queue=queue_name, fallback=fallback, family=recipe.family_name(),
        request={"preset": request.preset, "device": request.device, "recipe": recipe.model_dump(mode="json"),
                 "benchmark": request.benchmark},
        idempotency_key=idempotency_key,
    )
    jobs.save(record)
    try:
        queue.send(TASK_COMPRESS, record.id, queue_name)
    except Exception as exc:
        jobs.update(record.id, state="failed", finished_at=utcnow(), error="could not enqueue: Redis unavailable")
        raise QueueUnavailable(f"the job queue (Redis) failed while enqueueing: {type(exc).__name__}",
                               hint="retry once Redis answers; this job was recorded as failed") from None
    if idempotency_key:
        jobs.remember_idempotency_key(idempotency_key, record.id, fingerprint)
    return record


def _validate_benchmark_options(options: dict[str, object], family: str) -> None:
    if {"family", "variants"} & set(options):
        raise InvalidRecipe("benchmark options cannot name family or variants",
                            hint="the follow-up benchmark measures the variants this job makes")
    try:
        BenchmarkSpec.model_validate({**options, "family": family})
    except ValidationError as exc:
        raise InvalidRecipe("the benchmark options are invalid", hint=_fields_hint(exc, "benchmark")) from None


def _fields_hint(exc: ValidationError, prefix: str) -> str:
    return "; ".join(f"{prefix}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def submit_benchmark(spec: BenchmarkSpec, settings: Settings, jobs: JobStore, queue: QueueClient) -> JobRecord:
    """Plan the fan-out (one task per live device), write the record, send the chord."""
    queue.require_redis()
    job_id, devices = plan_benchmark(settings, spec, queue.live_queues(), jobs)
    queue.send_benchmark(job_id, devices)
    return jobs.get(job_id)


def submit_autotune(spec: AutotuneSpec, store: VariantStore, jobs: JobStore, queue: QueueClient) -> JobRecord:
    """The search runs on the cpu queue: its target is CPU serving."""
    store.manifest(spec.family, BASELINE)  # 404 naming what exists when the family is not fine-tuned
    queue.require_redis()
    record = JobRecord(id=jobs.new_id(), kind="autotune", queue=QUEUE_CPU, family=spec.family,
                       request={"spec": spec.model_dump(mode="json"), "benchmark": dict(FOLLOW_UP_BENCHMARK)})
    jobs.save(record)
    queue.send(TASK_AUTOTUNE, record.id, QUEUE_CPU)
    return record


def cancel_job(job_id: str, jobs: JobStore, queue: QueueClient) -> JobRecord:
    """Ask the job to stop at its next stage boundary; a queued job is cancelled at once."""
    record = jobs.get(job_id)
    if record.state in TERMINAL:
        return record
    jobs.request_cancel(job_id)
    if record.state == "queued":
        queue.revoke(job_id)
        return jobs.update(job_id, state="cancelled", finished_at=utcnow(), error="cancelled by request")
    return record
