"""Job progress for a running recipe: the current stage, its percentage and the stage history.

Every stage runs inside :meth:`JobReporter.stage` (or :meth:`optional_stage`, which records a failure
as a skip with its reason), so the job record shows what ran where, for how long, and why not.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from slimbert.errors import JobCancelled, StageSkipped
from slimbert.jobs.store import JobStore, StageRecord, utcnow

log = logging.getLogger(__name__)


class JobReporter:
    """Writes stage, percentage and stage history into the job record; checks for cancellation."""

    def __init__(self, jobs: JobStore, job_id: str, stage_weights: dict[str, float], queue: str, worker: str,
                 device: str = "cpu"):
        self.jobs, self.job_id = jobs, job_id
        self.device = device  # the torch device the stages run on ("cpu", "cuda:0"), named in each record
        total = sum(stage_weights.values()) or 1.0
        self.weights = {k: v / total for k, v in stage_weights.items()}
        self.queue, self.worker = queue, worker
        self.done = 0.0
        self.current: str | None = None
        self._last_write = 0.0

    @contextmanager
    def stage(self, name: str, device: str | None = None) -> Iterator[StageRecord]:
        # Cancellation is honoured at stage boundaries, where nothing is half-done.
        self.jobs.raise_if_cancelled(self.job_id)
        self.current = name
        record = StageRecord(name=name, queue=self.queue, worker=self.worker, device=device or self.device)
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
    def optional_stage(self, name: str, device: str | None = None) -> Iterator[StageRecord]:
        """Like :meth:`stage`, but a failure records the stage as skipped with the reason and the job goes on.

        Cancellation, out-of-memory and Celery's soft time limit still end the job.
        """
        with self.stage(name, device) as record:
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
        record = StageRecord(name=name, state="skipped", queue=self.queue, worker=self.worker, device=self.device,
                             started_at=now, finished_at=now, detail={"reason": reason})
        job = self.jobs.get(self.job_id)
        self.done += self.weights.get(name, 0.0)
        # Rounded and capped: the weights' float sum can pass 1 (100.00000000000004), which the record refuses.
        progress = min(round(100 * self.done, 1), 100.0)
        self.jobs.save(job.model_copy(update={"stages": [*job.stages, record], "progress": progress}))

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
