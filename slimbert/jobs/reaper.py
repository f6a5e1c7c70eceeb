"""Finding jobs whose worker is gone, and deciding what to do with them.

With ``acks_late`` Redis hands an unacknowledged message to another worker only after
``visibility_timeout_s`` (hours, so long jobs are not run twice). Until then a job whose worker was
killed would sit in ``running`` forever. The reaper closes that gap: a running job whose worker has not
answered the capabilities broadcast for ``reaper_grace_s`` is sent again by task name (the worker that
takes it counts the attempt), or failed with a hint once it was started ``job_max_attempts`` times.
A job still running long after the hard time limit is failed too: its worker killed the task.

:func:`plan` is a plain function of the job records, the live worker names and the time; the API runs
it in a small loop (``app/services/reaper.py``) and carries the actions out with :func:`apply`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from slimbert.config import Settings
from slimbert.jobs.store import JobRecord, JobStore, utcnow
from slimbert.tasks import QUEUE_CPU, TASK_AUTOTUNE, TASK_COMPRESS, TASK_COMPRESS_PRECISION

log = logging.getLogger(__name__)

# Job kinds that are one task taking the job id, so sending that task again reruns the job. A benchmark
# job is a chord of several tasks: the reaper fails it with a hint rather than rebuilding the chord.
REQUEUE_TASKS: dict[str, str] = {"compress": TASK_COMPRESS, "autotune": TASK_AUTOTUNE}


@dataclass(frozen=True)
class ReaperAction:
    """What to do with one lost job: send ``task`` again on ``queue``, or mark the job failed."""

    kind: Literal["requeue", "fail"]
    job_id: str
    worker: str | None
    reason: str
    hint: str = ""
    task: str | None = None
    queue: str | None = None


@dataclass
class Sightings:
    """When each worker was last seen answering; kept by the caller between rounds.

    ``since`` is when watching began: a worker never seen is counted as missing from then on, so an
    API that just started waits a full grace period before it reaps anything.
    """

    since: datetime = field(default_factory=utcnow)
    last_seen: dict[str, datetime] = field(default_factory=dict)


def task_time_limits(settings: Settings) -> dict[str, int]:
    """Celery's per-task time limits from the settings, as ``@app.task(**task_time_limits(s))`` takes them."""
    return {"soft_time_limit": settings.task_soft_time_limit_s, "time_limit": settings.task_time_limit_s}


def celery_time_limits(settings: Settings) -> dict[str, int]:
    """The same limits as Celery configuration keys, the default of every task of an app."""
    return {f"task_{k}": v for k, v in task_time_limits(settings).items()}


def plan(
    jobs: JobStore, live_workers: Collection[str] | Mapping[str, datetime | None], now: datetime, settings: Settings,
    sightings: Sightings | None = None,
) -> list[ReaperAction]:
    """The actions for every running job whose worker is gone; updates ``sightings`` with ``live_workers``.

    A job is lost when its worker is missing from ``live_workers`` and has been missing for longer than
    ``reaper_grace_s`` (counted from the later of its last sighting and the job's start), or when it has
    run ``reaper_grace_s`` past the hard time limit. Without ``sightings`` a missing worker counts as
    missing since the job started. ``live_workers`` may map each name to when that worker process started:
    a worker restarted under the same name (a container's restart policy) after the job started has lost
    the job too, counted from its restart.
    """
    grace = timedelta(seconds=settings.reaper_grace_s)
    if sightings is not None:
        for name in live_workers:
            sightings.last_seen[name] = now
    actions: list[ReaperAction] = []
    for record in jobs.list(limit=10_000):
        # A job between its gpu and cpu halves has no worker: its message waits in the cpu queue.
        if record.state != "running" or record.phase == "awaiting-cpu":
            continue
        started = record.started_at or record.created_at
        overdue = now - started > timedelta(seconds=settings.task_time_limit_s) + grace
        if overdue:
            actions.append(ReaperAction(
                "fail", record.id, record.worker,
                reason=f"still running {settings.task_time_limit_s} s after it started: the time limit stopped it",
                hint="use a smaller recipe (fewer train examples or epochs) or raise SLIMBERT_TASK_TIME_LIMIT_S "
                     "and SLIMBERT_TASK_SOFT_TIME_LIMIT_S"))
            continue
        restarted = _started(live_workers, record.worker)
        if record.worker in live_workers and (restarted is None or restarted <= started):
            continue
        if restarted is not None and restarted > started:
            missing_since = restarted
        else:
            seen = sightings.last_seen.get(record.worker or "", sightings.since) if sightings else started
            missing_since = max(seen, started)
        if now - missing_since <= grace:
            continue
        actions.append(_lost(record, settings))
    return actions


def _started(live_workers: Collection[str] | Mapping[str, datetime | None], worker: str | None) -> datetime | None:
    if not isinstance(live_workers, Mapping) or worker is None:
        return None
    return live_workers.get(worker)


def _lost(record: JobRecord, settings: Settings) -> ReaperAction:
    worker = record.worker or "unknown"
    reason = f"worker {worker} stopped answering while the job was {record.stage or 'starting'}"
    task = TASK_COMPRESS_PRECISION if record.phase == "precision" else REQUEUE_TASKS.get(record.kind)
    if task is None:
        return ReaperAction("fail", record.id, record.worker, reason=reason,
                            hint=f"submit the {record.kind} job again")
    if record.attempts >= settings.job_max_attempts:
        return ReaperAction(
            "fail", record.id, record.worker,
            reason=f"{reason}; gave up after {record.attempts} attempts",
            hint="a worker died during each attempt: check the worker logs (out of memory?) and try a smaller "
                 "recipe; SLIMBERT_JOB_MAX_ATTEMPTS sets how many attempts a job gets")
    return ReaperAction("requeue", record.id, record.worker, reason=reason, task=task,
                        queue=record.queue or QUEUE_CPU,
                        hint=f"sent again: attempt {record.attempts + 1} of {settings.job_max_attempts}")


def apply(actions: list[ReaperAction], jobs: JobStore, send: Callable[[str, str, str], Any]) -> list[ReaperAction]:
    """Carry out ``actions``; ``send(task, job_id, queue)`` enqueues a task. Returns the actions done.

    Each job is read again first: a job that finished (or was picked up again) since the plan is left alone.
    """
    done: list[ReaperAction] = []
    for action in actions:
        record = jobs.get(action.job_id)
        if record.state != "running" or record.worker != action.worker:
            continue
        if action.kind == "fail":
            jobs.update(action.job_id, state="failed", finished_at=utcnow(), error=action.reason, hint=action.hint)
            log.warning("job %s failed by the reaper: %s", action.job_id, action.reason)
        else:
            assert action.task is not None and action.queue is not None
            # Back to queued first: the worker that takes the new message counts the attempt and starts clean.
            jobs.update(action.job_id, state="queued", worker=None, stage=None, error=action.reason,
                        hint=action.hint)
            try:
                send(action.task, action.job_id, action.queue)
            except Exception:
                jobs.update(action.job_id, state="running", worker=action.worker)  # try again next round
                raise
            log.warning("job %s requeued on %s: %s", action.job_id, action.queue, action.reason)
        done.append(action)
    return done
