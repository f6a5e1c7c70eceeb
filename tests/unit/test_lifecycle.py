"""The one job life cycle: what every job kind gets without writing it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from slimbert.config import Settings
from slimbert.errors import JobCancelled
from slimbert.jobs.lifecycle import JobResult, Run, run_job
from slimbert.jobs.store import JobRecord, JobStore


@pytest.fixture
def env(tmp_path: Path) -> tuple[Settings, JobStore, str]:
    settings = Settings(store_dir=tmp_path / "store", _env_file=None)  # type: ignore[call-arg]
    jobs = JobStore(settings.job_dir)
    record = jobs.save(JobRecord(id=jobs.new_id(), kind="benchmark", results={"kept": 1}))
    return settings, jobs, record.id


def test_a_fan_out_task_counts_its_own_attempts_and_leaves_the_record_to_the_closer(
        env: tuple[Settings, JobStore, str]) -> None:
    settings, jobs, job_id = env
    run = Run("cpu", "w", attempt_key="benchmark-cpu", errors_as_data=True)
    for _ in range(settings.job_max_attempts):
        assert run_job(settings, job_id, lambda r: JobResult(handoff={}), run)["state"] == "running"
    record = jobs.get(job_id)
    assert record.task_attempts == {"benchmark-cpu": settings.job_max_attempts} and record.attempts == 0
    assert record.results == {"kept": 1} and record.state == "running"  # nothing overwritten
    # One more start than allowed: the job fails with the hint, as a compression job would.
    assert run_job(settings, job_id, lambda r: JobResult(), run)["state"] == "failed"
    assert "SLIMBERT_JOB_MAX_ATTEMPTS" in (jobs.get(job_id).hint or "")


def test_errors_come_back_as_data_for_fan_out_tasks_and_end_other_jobs(env: tuple[Settings, JobStore, str]) -> None:
    settings, jobs, job_id = env

    def full(_: JobRecord) -> JobResult:
        raise OSError(errno.ENOSPC, "No space left on device")

    out = run_job(settings, job_id, full, Run("cpu", "w", attempt_key="benchmark-cpu", errors_as_data=True))
    assert "disk is full" in out["error"] and "SLIMBERT_MIN_FREE_DISK_MB" in out["hint"]
    assert jobs.get(job_id).state == "running"  # the aggregate step decides
    assert run_job(settings, job_id, full, Run("cpu", "w"))["state"] == "failed"
    assert "disk is full" in (jobs.get(job_id).error or "")


def test_cancel_and_terminal_states(env: tuple[Settings, JobStore, str]) -> None:
    settings, jobs, job_id = env

    def cancelled(_: JobRecord) -> JobResult:
        raise JobCancelled("stop")

    assert run_job(settings, job_id, cancelled, Run("cpu", "w"))["state"] == "cancelled"
    ran: list[str] = []
    out = run_job(settings, job_id, lambda r: ran.append("again") or JobResult(), Run("cpu", "w"))  # type: ignore[func-returns-value]
    assert out["state"] == "cancelled" and ran == []  # a redelivered message for an ended job does nothing
    assert run_job(settings, "0" * 32, cancelled, Run("cpu", "w")) == {"state": "unknown"}
