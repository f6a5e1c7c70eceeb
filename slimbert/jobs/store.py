"""Job records, kept as JSON files on disk so they survive a restart of the API or of Redis.

The API creates a record; from then on only the worker running the job writes it. Cancellation
is a separate marker file, so the two writers never race on one file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from slimbert.errors import Conflict, JobCancelled, JobNotFound
from slimbert.records import SHARED_FILE_MODE, JobKind, JobState, StageState


def utcnow() -> datetime:
    return datetime.now(UTC)


class StageRecord(BaseModel):
    name: str
    state: StageState = "running"
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    queue: str | None = None
    worker: str | None = None
    device: str | None = None  # the torch device it ran on: "cpu", or "cuda:0" for training on a GPU worker
    detail: dict[str, Any] = Field(default_factory=dict)


class JobRecord(BaseModel):
    id: str
    kind: JobKind = "compress"
    state: JobState = "queued"
    stage: str | None = None
    progress: float = Field(default=0.0, ge=0.0, le=100.0)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue: str | None = None
    worker: str | None = None
    fallback: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    family: str | None = None
    variants: list[str] = Field(default_factory=list)
    stages: list[StageRecord] = Field(default_factory=list)
    results: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    hint: str | None = None
    attempts: int = 0
    # Starts of each task of a job that fans out (a benchmark's device tasks), keyed by task.
    task_attempts: dict[str, int] = Field(default_factory=dict)
    idempotency_key: str | None = None
    # A compression job split between queues: "train" (gpu), "awaiting-cpu", then "precision" (cpu).
    phase: str | None = None


class JobStore:
    """File-per-job persistence with atomic replace."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def _path(self, job_id: str) -> Path:
        if not job_id.isalnum() or len(job_id) > 64:
            raise JobNotFound(f"job {job_id!r} not found", hint="job ids are the hex strings POST /jobs returns")
        return self.root / f"{job_id}.json"

    def save(self, record: JobRecord) -> JobRecord:
        path = self._path(record.id)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        # mkstemp makes 0600: a worker of another service (or uid) sharing the volume must read and write it.
        os.fchmod(fd, SHARED_FILE_MODE)
        with os.fdopen(fd, "w") as fh:
            fh.write(record.model_dump_json(indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return record

    def get(self, job_id: str) -> JobRecord:
        path = self._path(job_id)
        try:
            return JobRecord.model_validate_json(path.read_text())
        except FileNotFoundError:
            raise JobNotFound(f"job {job_id} not found", hint="GET /jobs lists the jobs") from None

    def list(self, limit: int = 100) -> list[JobRecord]:
        paths = sorted(self.root.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        out = []
        for p in paths[:limit]:
            try:
                out.append(JobRecord.model_validate_json(p.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        record = self.get(job_id)
        record = record.model_copy(update=changes)
        return self.save(record)

    # --- idempotency ----------------------------------------------------------------------------
    def find_by_idempotency_key(self, key: str, request: str | None = None) -> JobRecord | None:
        """The job first submitted with ``key``; a different ``request`` (its fingerprint) with the same key
        is a conflict, never a silent replay of the first job."""
        marker = self.root / "idempotency" / f"{_safe(key)}.json"
        if not marker.is_file():
            return None
        stored = json.loads(marker.read_text())
        if request is not None and stored.get("request", request) != request:
            raise Conflict("this Idempotency-Key was used with a different request",
                           hint=f"send a new key for a new request; the key names job {stored['job_id']}")
        return self.get(stored["job_id"])

    def remember_idempotency_key(self, key: str, job_id: str, request: str | None = None) -> None:
        marker_dir = self.root / "idempotency"
        marker_dir.mkdir(exist_ok=True)
        (marker_dir / f"{_safe(key)}.json").write_text(json.dumps({"job_id": job_id, "request": request}))

    # --- cancellation ---------------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        self._path(job_id).with_suffix(".cancel").touch()

    def cancel_requested(self, job_id: str) -> bool:
        return self._path(job_id).with_suffix(".cancel").exists()

    def raise_if_cancelled(self, job_id: str) -> None:
        if self.cancel_requested(job_id):
            raise JobCancelled(f"job {job_id} was cancelled", hint="submit it again to rerun")


def _safe(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
