from __future__ import annotations

from pathlib import Path

import pytest

from slimbert.errors import JobCancelled, JobNotFound
from slimbert.jobs import JobRecord, JobStore


def test_records_persist_across_store_instances(tmp_path: Path) -> None:
    first = JobStore(tmp_path)
    rec = first.save(JobRecord(id=first.new_id(), request={"preset": "quick"}))
    first.update(rec.id, state="running", stage="finetune", progress=42.5)
    again = JobStore(tmp_path).get(rec.id)
    assert (again.state, again.stage, again.progress) == ("running", "finetune", 42.5)
    assert [r.id for r in JobStore(tmp_path).list()] == [rec.id]


def test_cancel_marker(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path)
    rec = jobs.save(JobRecord(id=jobs.new_id()))
    jobs.raise_if_cancelled(rec.id)
    jobs.request_cancel(rec.id)
    with pytest.raises(JobCancelled):
        jobs.raise_if_cancelled(rec.id)


def test_idempotency_key_maps_to_one_job(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path)
    rec = jobs.save(JobRecord(id=jobs.new_id()))
    jobs.remember_idempotency_key("retry-1", rec.id)
    found = jobs.find_by_idempotency_key("retry-1")
    assert found is not None and found.id == rec.id
    assert jobs.find_by_idempotency_key("other") is None


@pytest.mark.parametrize("bad", ["../x", "a/b", "x" * 100])
def test_bad_ids_are_not_found(tmp_path: Path, bad: str) -> None:
    with pytest.raises(JobNotFound):
        JobStore(tmp_path).get(bad)
