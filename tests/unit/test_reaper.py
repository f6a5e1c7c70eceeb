"""The reaper's decisions (a plain function of records, live workers and time) and how they are carried out."""

from __future__ import annotations

import errno
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.services.reaper import reap_once
from slimbert.config import Settings
from slimbert.jobs import JobRecord, JobStore, utcnow
from slimbert.jobs.reaper import Sightings, apply, celery_time_limits, plan, task_time_limits
from slimbert.orchestrate import compress as jobrunner
from slimbert.tasks import TASK_AUTOTUNE, TASK_COMPRESS

T0 = datetime(2025, 1, 1, 12, 0, 0).astimezone()


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(store_dir=tmp_path / "store", reaper_grace_s=30, job_max_attempts=3,
                    _env_file=None, **kw)  # type: ignore[call-arg]


def _running(jobs: JobStore, worker: str = "cpu@a", attempts: int = 1, started: datetime = T0,
             kind: str = "compress", **kw: Any) -> JobRecord:
    return jobs.save(JobRecord(id=jobs.new_id(), kind=kind, state="running", worker=worker,  # type: ignore[arg-type]
                               queue="cpu", stage="finetune", attempts=attempts, started_at=started, **kw))


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs")


def test_live_worker_and_grace_period_leave_a_job_alone(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path)
    job = _running(jobs)
    assert plan(jobs, {"cpu@a"}, T0 + timedelta(hours=1), s) == []
    # Missing, but not for longer than the grace period since the job started.
    assert plan(jobs, set(), T0 + timedelta(seconds=29), s) == []
    [action] = plan(jobs, {"cpu@b"}, T0 + timedelta(seconds=31), s)
    assert (action.kind, action.job_id, action.task, action.queue) == ("requeue", job.id, TASK_COMPRESS, "cpu")
    assert "cpu@a" in action.reason and "finetune" in action.reason and "attempt 2 of 3" in action.hint


def test_grace_counts_from_the_last_sighting(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path)
    _running(jobs)
    seen = Sightings(since=T0)
    assert plan(jobs, {"cpu@a"}, T0 + timedelta(minutes=10), s, seen) == []
    assert seen.last_seen["cpu@a"] == T0 + timedelta(minutes=10)
    assert plan(jobs, set(), T0 + timedelta(minutes=10, seconds=20), s, seen) == []
    assert len(plan(jobs, set(), T0 + timedelta(minutes=10, seconds=31), s, seen)) == 1


def test_a_worker_never_seen_gets_a_grace_period_from_when_watching_began(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path)
    _running(jobs, started=T0 - timedelta(hours=2))
    seen = Sightings(since=T0)  # the API just started
    assert plan(jobs, set(), T0 + timedelta(seconds=10), s, seen) == []
    assert len(plan(jobs, set(), T0 + timedelta(seconds=31), s, seen)) == 1


def test_a_worker_restarted_under_the_same_name_lost_its_job(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path)
    job = _running(jobs)
    # The same process still answers: nothing to do, however long the job runs.
    assert plan(jobs, {"cpu@a": T0 - timedelta(hours=1)}, T0 + timedelta(hours=2), s) == []
    # Restarted (a container's restart policy keeps the name) a minute after the job started.
    restarted = {"cpu@a": T0 + timedelta(minutes=1)}
    assert plan(jobs, restarted, T0 + timedelta(minutes=1, seconds=20), s, Sightings(since=T0)) == []
    [action] = plan(jobs, restarted, T0 + timedelta(minutes=1, seconds=31), s, Sightings(since=T0))
    assert (action.kind, action.job_id) == ("requeue", job.id)


def test_after_max_attempts_the_job_fails_with_a_hint(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path)
    job = _running(jobs, attempts=3)
    [action] = plan(jobs, set(), T0 + timedelta(minutes=5), s)
    assert action.kind == "fail" and action.task is None and "3 attempts" in action.reason
    assert "SLIMBERT_JOB_MAX_ATTEMPTS" in action.hint
    apply([action], jobs, send=lambda *a: pytest.fail("nothing is sent"))
    failed = jobs.get(job.id)
    assert failed.state == "failed" and failed.finished_at and failed.hint == action.hint


def test_kinds(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path)
    tune = _running(jobs, kind="autotune")
    bench = _running(jobs, kind="benchmark")
    actions = {a.job_id: a for a in plan(jobs, set(), T0 + timedelta(minutes=5), s)}
    assert actions[tune.id].task == TASK_AUTOTUNE and actions[tune.id].kind == "requeue"
    assert actions[bench.id].kind == "fail" and "submit the benchmark job again" in actions[bench.id].hint


def test_only_running_jobs_are_considered(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path)
    for state in ("queued", "succeeded", "failed", "cancelled"):
        jobs.save(JobRecord(id=jobs.new_id(), state=state, worker="gone@x", started_at=T0))  # type: ignore[arg-type]
    assert plan(jobs, set(), T0 + timedelta(days=1), s) == []


def test_a_job_past_the_hard_time_limit_fails_even_on_a_live_worker(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path, task_soft_time_limit_s=100, task_time_limit_s=200)
    job = _running(jobs)
    assert plan(jobs, {"cpu@a"}, T0 + timedelta(seconds=229), s) == []
    [action] = plan(jobs, {"cpu@a"}, T0 + timedelta(seconds=231), s)
    assert action.kind == "fail" and action.job_id == job.id and "TIME_LIMIT" in action.hint


def test_apply_requeues_by_task_name(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path)
    job = _running(jobs)
    sent: list[tuple[str, str, str]] = []
    done = apply(plan(jobs, set(), T0 + timedelta(minutes=1), s), jobs, send=lambda *a: sent.append(a))
    assert sent == [(TASK_COMPRESS, job.id, "cpu")] and len(done) == 1
    record = jobs.get(job.id)
    assert (record.state, record.worker, record.stage, record.attempts) == ("queued", None, None, 1)
    assert "cpu@a" in (record.error or "")


def test_apply_skips_a_job_that_moved_on_and_rolls_back_when_sending_fails(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path)
    moved, unsent = _running(jobs), _running(jobs)
    actions = plan(jobs, set(), T0 + timedelta(minutes=1), s)
    jobs.update(moved.id, state="succeeded")

    def send(task: str, job_id: str, queue: str) -> None:
        raise ConnectionError("redis went away")

    with pytest.raises(ConnectionError):
        apply(actions, jobs, send)
    assert jobs.get(moved.id).state == "succeeded"
    assert (jobs.get(unsent.id).state, jobs.get(unsent.id).worker) == ("running", "cpu@a")  # retried next round


def test_time_limits_from_settings(tmp_path: Path) -> None:
    s = _settings(tmp_path, task_soft_time_limit_s=50, task_time_limit_s=60)
    assert task_time_limits(s) == {"soft_time_limit": 50, "time_limit": 60}
    assert celery_time_limits(s) == {"task_soft_time_limit": 50, "task_time_limit": 60}
    with pytest.raises(ValidationError, match="greater"):
        _settings(tmp_path, task_soft_time_limit_s=60, task_time_limit_s=60)


class _FakeQueue:
    def __init__(self, live: set[str] | None) -> None:
        self.live, self.sent = live, []  # type: ignore[var-annotated]

    def live_worker_starts(self) -> set[str] | None:
        return self.live

    def send(self, *args: str) -> None:
        self.sent.append(args)


def test_a_blind_round_restarts_the_grace_period(tmp_path: Path, jobs: JobStore) -> None:
    s = _settings(tmp_path)
    _running(jobs, started=utcnow() - timedelta(hours=1))
    seen = Sightings(since=utcnow() - timedelta(hours=1), last_seen={"cpu@a": utcnow() - timedelta(hours=1)})
    assert reap_once(s, jobs, _FakeQueue(None), seen) == []  # type: ignore[arg-type]
    assert seen.last_seen["cpu@a"] > utcnow() - timedelta(seconds=5)
    # Redis is back but the worker has not answered yet: still inside the restarted grace period.
    assert plan(jobs, set(), utcnow(), s, seen) == []


def test_runner_gives_up_after_max_attempts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = _settings(tmp_path)
    jobs = JobStore(s.job_dir)
    job = _running(jobs, attempts=3)
    monkeypatch.setattr(jobrunner, "run_compress", lambda *a, **k: pytest.fail("must not run"))
    assert jobrunner.execute_compress_job(s, job.id, queue="cpu", worker="cpu@b")["state"] == "failed"
    record = jobs.get(job.id)
    assert record.state == "failed" and "3 attempts" in (record.error or "") and record.attempts == 3


class SoftTimeLimitExceeded(Exception):  # stands in for celery.exceptions.SoftTimeLimitExceeded
    pass


@pytest.mark.parametrize(
    ("exc", "error", "hint"),
    [(SoftTimeLimitExceeded(), "time limit", "SLIMBERT_TASK_SOFT_TIME_LIMIT_S"),
     (OSError(errno.ENOSPC, "No space left on device"), "disk is full", "free disk space"),
     (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"), "disk is full",
      "SLIMBERT_MIN_FREE_DISK_MB")],
)
def test_runner_names_time_limits_and_full_disks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 exc: Exception, error: str, hint: str) -> None:
    s = _settings(tmp_path)
    jobs = JobStore(s.job_dir)
    job = jobs.save(JobRecord(id=jobs.new_id(), request={"recipe": {}}))

    def boom(*a: object, **k: object) -> None:
        raise exc

    monkeypatch.setattr(jobrunner, "run_compress", boom)
    assert jobrunner.execute_compress_job(s, job.id, queue="cpu", worker="cpu@a")["state"] == "failed"
    record = jobs.get(job.id)
    assert record.state == "failed" and error in (record.error or "") and hint in (record.hint or "")
