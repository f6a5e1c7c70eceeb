"""Job records, kept as JSON files on disk (or objects in the store's bucket) so they survive a restart
of the API or of Redis.

The API creates a record; from then on only the worker running the job writes it. Cancellation
is a separate marker, so the two writers never race on one file.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from slimbert.config import Settings
from slimbert.errors import Conflict, JobCancelled, JobNotFound
from slimbert.records import JobKind, JobState, StageState
from slimbert.store.blobs import Blobs, LocalBlobs
from slimbert.store.bucket import open_bucket

IDEMPOTENCY = "idempotency"  # Idempotency-Key markers: sha256 of the key -> the job it first made


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
    """One JSON object per job, replaced whole: files in a directory, or objects in a bucket."""

    def __init__(self, root: Path | str | Blobs) -> None:
        self.blobs: Blobs = LocalBlobs(Path(root)) if isinstance(root, Path | str) else root
        # Records by key with the ETag they were read at: the reaper lists every job often, and in a bucket
        # each read is a request, so a record that did not change (every finished job) is read once.
        self._listed: dict[str, tuple[str, JobRecord]] = {}

    def new_id(self) -> str:
        return uuid.uuid4().hex

    @staticmethod
    def _key(job_id: str, suffix: str = ".json") -> str:
        if not job_id.isalnum() or len(job_id) > 64:
            raise JobNotFound(f"job {job_id!r} not found", hint="job ids are the hex strings POST /jobs returns")
        return f"{job_id}{suffix}"

    def save(self, record: JobRecord) -> JobRecord:
        self.blobs.put(self._key(record.id), record.model_dump_json(indent=2).encode())
        return record

    def get(self, job_id: str) -> JobRecord:
        raw = self.blobs.get(self._key(job_id))
        if raw is None:
            raise JobNotFound(f"job {job_id} not found", hint="GET /jobs lists the jobs")
        return JobRecord.model_validate_json(raw)

    def list(self, limit: int = 100) -> list[JobRecord]:
        """The most recently written records first."""
        found = [b for b in self.blobs.list() if "/" not in b.key and b.key.endswith(".json")]
        found.sort(key=lambda b: (b.modified, b.key), reverse=True)
        out = []
        for blob in found[:limit]:
            seen = self._listed.get(blob.key)
            if seen is not None and seen[0] == blob.etag:
                out.append(seen[1].model_copy())  # a copy: a caller may change its own
                continue
            try:
                raw = self.blobs.get(blob.key)
                if raw is not None:
                    record = JobRecord.model_validate_json(raw)
                    self._listed[blob.key] = (blob.etag, record)
                    out.append(record)
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
        raw = self.blobs.get(f"{IDEMPOTENCY}/{_safe(key)}.json")
        if raw is None:
            return None
        stored = json.loads(raw)
        if request is not None and stored.get("request", request) != request:
            raise Conflict("this Idempotency-Key was used with a different request",
                           hint=f"send a new key for a new request; the key names job {stored['job_id']}")
        return self.get(stored["job_id"])

    def remember_idempotency_key(self, key: str, job_id: str, request: str | None = None) -> None:
        self.blobs.put(f"{IDEMPOTENCY}/{_safe(key)}.json", json.dumps({"job_id": job_id, "request": request}).encode())

    # --- cancellation ---------------------------------------------------------------------------
    # A marker of its own: the API writes it while the worker keeps writing the record, so the two
    # writers never replace each other's object.
    def request_cancel(self, job_id: str) -> None:
        self.blobs.put(self._key(job_id, ".cancel"), b"")

    def cancel_requested(self, job_id: str) -> bool:
        return self.blobs.exists(self._key(job_id, ".cancel"))

    def raise_if_cancelled(self, job_id: str) -> None:
        if self.cancel_requested(job_id):
            raise JobCancelled(f"job {job_id} was cancelled", hint="submit it again to rerun")


def open_job_store(settings: Settings) -> JobStore:
    """The one way to the job records: ``jobs_dir``, or ``jobs/`` in the bucket when a store URL is set."""
    bucket = open_bucket(settings)
    return JobStore(settings.job_dir if bucket is None else bucket.child("jobs"))


def _safe(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
