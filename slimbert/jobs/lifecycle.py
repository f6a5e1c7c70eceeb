"""One life cycle for every job kind: admission, attempts, terminal states, cancel, limits and hints.

A job kind supplies only its body: a plain function from the job record to a :class:`JobResult`.
Compression, benchmark and autotune all run through :func:`run_job`, so a redelivered message, a
worker killed mid-job, a cancel, Celery's time limit, a full disk or an out-of-memory error end
every kind of job the same way, with a hint that says what to change.
"""

from __future__ import annotations

import errno
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from slimbert.config import Settings
from slimbert.errors import JobCancelled, JobNotFound, SlimBertError
from slimbert.jobs.store import JobRecord, JobStore, open_job_store, utcnow
from slimbert.records import TERMINAL

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a body hands back: its results, the variants it published, and how the job goes on."""

    results: dict[str, Any] = field(default_factory=dict)
    variants: list[str] = field(default_factory=list)
    stage: str | None = None  # the record's last stage text; None keeps what the body wrote
    # The job continues in another task (the cpu half of a split job): these record updates, and the
    # job stays running.
    handoff: dict[str, Any] | None = None
    # The body ran but the job failed (a benchmark where every device failed): (error, hint).
    failure: tuple[str, str] | None = None


Body = Callable[[JobRecord], JobResult]
FollowUp = Callable[[JobRecord], dict[str, Any]]


@dataclass(frozen=True)
class Run:
    """How this task takes part in its job."""

    queue: str
    worker: str
    # Continue a job another task started (its stages and results stay; no new attempt): the cpu half of
    # a split compression job, or a benchmark's aggregate step.
    resume: bool = False
    expect_phase: str | None = None  # run only when the record's phase is this (a redelivered handoff)
    phase: str | None = None  # written to the record as the job's phase
    # Count starts per task instead of per job, for jobs that fan out (one task per device).
    attempt_key: str | None = None
    # A failure is returned as data ({"error", "hint"}) and the job stays running, for a fan-out task whose
    # siblings' results must still be stored; the task that closes the job decides.
    errors_as_data: bool = False


def run_job(settings: Settings, job_id: str, body: Body, run: Run, on_success: FollowUp | None = None
            ) -> dict[str, Any]:
    """Run ``body`` for job ``job_id`` and record the outcome; returns a JSON summary for the task.

    ``on_success(record)`` runs after the body and before the record turns ``succeeded``; what it
    returns joins the results, so a follow-up (the benchmark) is visible the moment the job is.
    """
    jobs = open_job_store(settings)
    try:
        record = jobs.get(job_id)
    except JobNotFound:
        # The record was deleted while its message waited in Redis: nothing to run or report.
        log.warning("job %s has no record; dropping its message", job_id)
        return {"state": "unknown"}
    if record.state in TERMINAL:
        # A redelivered message for a job that already ended (or was cancelled while queued).
        log.info("job %s is already %s; nothing to do", job_id, record.state)
        return {"state": record.state, "error": f"job already {record.state}"}
    if run.expect_phase is not None and record.phase != run.expect_phase:
        log.info("job %s is not at phase %s (phase %s); nothing to do", job_id, run.expect_phase, record.phase)
        return {"state": record.state}
    if not run.resume and _attempts(record, run) >= settings.job_max_attempts:
        # Started that often and never finished: each run killed its worker (out of memory, or a crash).
        # Redelivery alone would try forever, so stop here.
        _finish(jobs, job_id, "failed", error=f"gave up after {_attempts(record, run)} attempts: the worker died "
                f"during each one (last on {record.worker or 'an unknown worker'})",
                hint="check the worker logs (out of memory?) and resubmit with a smaller recipe; "
                "SLIMBERT_JOB_MAX_ATTEMPTS sets how many attempts a job gets")
        return {"state": "failed", "error": "too many attempts"}
    record = jobs.save(_started(record, run))
    try:
        outcome = body(record)
    except Exception as exc:  # every failure is classified once, here
        error, hint, state, bug = classify(exc, jobs.get(job_id).stage)
        if bug:
            log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        else:
            log.warning("job %s %s: %s", job_id, state, error)
        if run.errors_as_data and state == "failed":
            return {"error": error, "hint": hint}
        _finish(jobs, job_id, state, error=error, hint=hint)
        if bug and not run.errors_as_data:
            raise
        return {"state": state, "error": error}
    return _conclude(jobs, job_id, outcome, on_success)


def _attempts(record: JobRecord, run: Run) -> int:
    return record.attempts if run.attempt_key is None else record.task_attempts.get(run.attempt_key, 0)


def _started(record: JobRecord, run: Run) -> JobRecord:
    where: dict[str, Any] = {"queue": run.queue, "worker": run.worker}
    if run.phase is not None:
        where["phase"] = run.phase
    if run.resume:
        return record.model_copy(update=where)
    if run.attempt_key is not None:  # one task of several: the job's stages belong to all of them
        counts = {**record.task_attempts, run.attempt_key: record.task_attempts.get(run.attempt_key, 0) + 1}
        return record.model_copy(update={**where, "state": "running", "task_attempts": counts,
                                         "started_at": record.started_at or utcnow()})
    return record.model_copy(update={**where, "state": "running", "started_at": utcnow(),
                                     "attempts": record.attempts + 1, "stages": [], "progress": 0.0,
                                     "error": None, "hint": None})


def _conclude(jobs: JobStore, job_id: str, outcome: JobResult, on_success: FollowUp | None) -> dict[str, Any]:
    results = outcome.results
    changes: dict[str, Any] = {"variants": outcome.variants}
    if outcome.stage is not None:
        changes["stage"] = outcome.stage
    if outcome.handoff is not None:
        # A fan-out task (a benchmark device) hands nothing to the record: the task that closes the job
        # stores its result. The train half of a split job leaves its results and variants for the cpu half.
        if results or outcome.variants:
            changes.update(results=results)
        else:
            changes.pop("variants")
        jobs.update(job_id, **changes, **outcome.handoff)
        return {"state": "running", **outcome.handoff}
    if outcome.failure is not None:
        _finish(jobs, job_id, "failed", error=outcome.failure[0], hint=outcome.failure[1], results=results, **changes)
        return {"state": "failed", "error": outcome.failure[0]}
    if jobs.cancel_requested(job_id):
        _finish(jobs, job_id, "cancelled", error="cancelled by request", results=results, **changes)
        return {"state": "cancelled"}
    if on_success is not None and outcome.variants:
        results = {**results, **on_success(jobs.update(job_id, results=results, **changes))}
    _finish(jobs, job_id, "succeeded", results=results, **changes)
    return {"state": "succeeded", **results}


def classify(exc: BaseException, stage: str | None) -> tuple[str, str, str, bool]:
    """(error, hint, terminal state, is-a-bug) for an exception that ended a job body."""
    if isinstance(exc, JobCancelled):
        return "cancelled by request", "submit it again to rerun", "cancelled", False
    if isinstance(exc, SlimBertError):
        return exc.detail, exc.hint or "see the worker log", "failed", False
    if isinstance(exc, ValidationError | ValueError):
        return str(exc), "check the recipe's values", "failed", False
    if isinstance(exc, MemoryError):
        return ("out of memory", "use fewer train examples, a smaller batch_size or a shorter max_length",
                "failed", False)
    if type(exc).__name__ == "SoftTimeLimitExceeded":  # Celery's soft time limit (no celery import here)
        return (f"stopped by the time limit during stage {stage}",
                "use a smaller recipe (fewer train examples or epochs) or raise SLIMBERT_TASK_SOFT_TIME_LIMIT_S "
                "and SLIMBERT_TASK_TIME_LIMIT_S", "failed", False)
    if disk_full(exc):
        # Staging was removed on the way out, so the space the job took is free again.
        return (f"the disk is full while writing: {type(exc).__name__}: {exc}"[:500],
                "free disk space where SLIMBERT_STORE_DIR lies, or raise SLIMBERT_MIN_FREE_DISK_MB so jobs are "
                "refused before they start writing", "failed", False)
    return (f"internal error: {type(exc).__name__}: {exc}", "see the worker log; resubmit once the cause is fixed",
            "failed", True)


def _finish(jobs: JobStore, job_id: str, state: str, **changes: Any) -> JobRecord:
    progress = 100.0 if state == "succeeded" else jobs.get(job_id).progress
    return jobs.update(job_id, state=state, finished_at=utcnow(), progress=progress, **changes)


def disk_full(exc: BaseException) -> bool:
    """ENOSPC, raised as OSError by Python or wrapped in their own errors by safetensors, torch and onnx."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or "StorageFull" in text or (
        exc.__cause__ is not None and disk_full(exc.__cause__))
