"""The life cycle of a job record around the work itself: running, succeeded, failed, cancelled.

Celery tasks call these plain functions, so tests can run a job without a queue.
"""

from __future__ import annotations

import errno
import logging
import traceback
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from slimbert.compression.pipeline import Phase, run_compress
from slimbert.compression.recipe import Recipe
from slimbert.config import Settings
from slimbert.errors import JobCancelled, JobNotFound, SlimBertError
from slimbert.jobs import TERMINAL, JobRecord, JobStore, utcnow

log = logging.getLogger(__name__)


def execute_compress_job(
    settings: Settings, job_id: str, *, queue: str, worker: str,
    on_success: Callable[[JobRecord], dict[str, Any]] | None = None, phase: Phase = "all",
) -> dict[str, Any]:
    """Run the compression job ``job_id`` (or one ``phase`` of it) and record the outcome.

    ``on_success(record)`` runs after the work and before the record turns ``succeeded``; what
    it returns joins the results, so a follow-up (the benchmark) is visible the moment the job is.
    After the ``train`` phase the job stays running, marked ``awaiting-cpu``: the caller queues the
    ``precision`` phase on the cpu queue, which finishes it.
    """
    jobs = JobStore(settings.job_dir)
    try:
        record = jobs.get(job_id)
    except JobNotFound:
        # The record was deleted while its message waited in Redis: nothing to run or report.
        log.warning("job %s has no record; dropping its message", job_id)
        return {"state": "unknown"}
    if record.state in TERMINAL:
        # A redelivered message for a job that already ended (or was cancelled while queued).
        log.info("job %s is already %s; nothing to do", job_id, record.state)
        return {"state": record.state}
    if phase == "precision" and record.phase != "awaiting-cpu":
        log.info("job %s is not waiting for its precision phase (phase %s); nothing to do", job_id, record.phase)
        return {"state": record.state}
    if phase != "precision" and record.attempts >= settings.job_max_attempts:
        # Started that often and never finished: each run killed its worker (out of memory, or a crash).
        # Redelivery alone would try forever, so stop here.
        _finish(jobs, job_id, "failed", error=f"gave up after {record.attempts} attempts: the worker died "
                f"during each one (last on {record.worker or 'an unknown worker'})",
                hint="check the worker logs (out of memory?) and resubmit with a smaller recipe; "
                "SLIMBERT_JOB_MAX_ATTEMPTS sets how many attempts a job gets")
        return {"state": "failed"}
    if phase == "precision":  # the second half: keep the stages and results of the first
        jobs.save(record.model_copy(update={"phase": "precision", "queue": queue, "worker": worker}))
    else:
        jobs.save(record.model_copy(update={
            "state": "running", "started_at": utcnow(), "queue": queue, "worker": worker, "phase": phase,
            "attempts": record.attempts + 1, "stages": [], "progress": 0.0, "error": None, "hint": None,
        }))
    try:
        recipe = Recipe.model_validate(record.request.get("recipe", {}))
        results = run_compress(settings, job_id, recipe, queue=queue, worker=worker, phase=phase)
    except JobCancelled:
        _finish(jobs, job_id, "cancelled", error="cancelled by request")
        return {"state": "cancelled"}
    except (SlimBertError, ValidationError, ValueError) as exc:
        detail = exc.detail if isinstance(exc, SlimBertError) else str(exc)
        hint = exc.hint if isinstance(exc, SlimBertError) else "check the recipe's values"
        log.warning("job %s failed: %s", job_id, detail)
        _finish(jobs, job_id, "failed", error=detail, hint=hint)
        return {"state": "failed", "error": detail}
    except MemoryError:
        _finish(jobs, job_id, "failed", error="out of memory",
                hint="use fewer train examples, a smaller batch_size or a shorter max_length")
        return {"state": "failed", "error": "out of memory"}
    except Exception as exc:  # anything else is a bug: keep the trace in the log, not in the record
        if type(exc).__name__ == "SoftTimeLimitExceeded":  # Celery's soft time limit (no celery import here)
            _finish(jobs, job_id, "failed", error=f"stopped by the time limit during stage {jobs.get(job_id).stage}",
                    hint="use a smaller recipe (fewer train examples or epochs) or raise "
                    "SLIMBERT_TASK_SOFT_TIME_LIMIT_S and SLIMBERT_TASK_TIME_LIMIT_S")
            return {"state": "failed", "error": "time limit"}
        if _disk_full(exc):
            # Staging was removed on the way out, so the space the job took is free again.
            _finish(jobs, job_id, "failed", error=f"the disk is full while writing: {type(exc).__name__}: {exc}"[:500],
                    hint="free disk space where SLIMBERT_STORE_DIR lies, or raise SLIMBERT_MIN_FREE_DISK_MB so "
                    "jobs are refused before they start writing")
            return {"state": "failed", "error": "disk full"}
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        _finish(jobs, job_id, "failed", error=f"internal error: {type(exc).__name__}: {exc}",
                hint="see the worker log; resubmit once the cause is fixed")
        raise
    variants = sorted(results.get("variants", {}))
    if phase == "train":
        jobs.update(job_id, phase="awaiting-cpu", stage="waiting for the cpu queue", results=results,
                    variants=variants, worker=None)
        return {"state": "running", "phase": "awaiting-cpu"}
    if on_success is not None:
        results.update(on_success(jobs.update(job_id, results=results, variants=variants)))
    _finish(jobs, job_id, "succeeded", results=results, variants=variants)
    return {"state": "succeeded", **results}


def _finish(jobs: JobStore, job_id: str, state: str, **changes: Any) -> JobRecord:
    progress = 100.0 if state == "succeeded" else jobs.get(job_id).progress
    return jobs.update(job_id, state=state, finished_at=utcnow(), progress=progress, **changes)


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC, raised as OSError by Python or wrapped in their own errors by safetensors, torch and onnx."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or "StorageFull" in text or (
        exc.__cause__ is not None and _disk_full(exc.__cause__))
