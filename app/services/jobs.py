"""Submitting, listing and cancelling jobs."""

from __future__ import annotations

from pydantic import ValidationError

from app.schemas import CompressRequest
from app.services.queue import QueueClient
from slimbert.compression.recipe import build_recipe
from slimbert.errors import InvalidRecipe
from slimbert.jobs import TERMINAL, JobRecord, JobStore, utcnow
from slimbert.tasks import TASK_COMPRESS


def submit_compress(
    request: CompressRequest, jobs: JobStore, queue: QueueClient, idempotency_key: str | None = None
) -> JobRecord:
    """Validate the recipe, write the job record, then enqueue it."""
    if idempotency_key:
        existing = jobs.find_by_idempotency_key(idempotency_key)
        if existing is not None:
            return existing
    try:
        recipe = build_recipe(request.preset, request.recipe)
    except ValidationError as exc:
        fields = [{"field": "recipe." + ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        hint = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise InvalidRecipe("the recipe is invalid", hint=hint) from None
    except ValueError as exc:
        raise InvalidRecipe(str(exc), hint=str(exc)) from None
    queue.require_redis()
    queue_name, fallback = queue.choose_queue(request.device)
    record = JobRecord(
        id=jobs.new_id(), kind="compress", queue=queue_name, fallback=fallback, family=recipe.family_name(),
        request={"preset": request.preset, "device": request.device, "recipe": recipe.model_dump(mode="json")},
        idempotency_key=idempotency_key,
    )
    jobs.save(record)
    try:
        queue.send(TASK_COMPRESS, record.id, queue_name)
    except Exception:
        jobs.update(record.id, state="failed", finished_at=utcnow(), error="could not enqueue: Redis unavailable")
        raise
    if idempotency_key:
        jobs.remember_idempotency_key(idempotency_key, record.id)
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
