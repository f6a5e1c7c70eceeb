from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from app.api.deps import JobsDep, QueueDep, SettingsDep, StoreDep, require
from app.schemas import CompressRequest, JobAccepted
from app.services.jobs import cancel_job, submit_autotune, submit_benchmark, submit_compress
from slimbert.benchmark.runner import BenchmarkSpec
from slimbert.jobs import JobRecord
from slimbert.orchestrate.autotune_spec import AutotuneSpec

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("/compress", status_code=202, response_model=JobAccepted, dependencies=[require("admin")])
def compress(
    body: CompressRequest, request: Request, jobs: JobsDep, queue: QueueDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobAccepted:
    record = submit_compress(body, jobs, queue, idempotency_key)
    return JobAccepted(job_id=record.id, status_url=str(request.url_for("get_job", job_id=record.id)),
                       queue=record.queue or "", fallback=record.fallback)


@router.post("/benchmark", status_code=202, response_model=JobAccepted, dependencies=[require("admin")])
def benchmark(body: BenchmarkSpec, request: Request, settings: SettingsDep, jobs: JobsDep, queue: QueueDep
              ) -> JobAccepted:
    record = submit_benchmark(body, settings, jobs, queue)
    return JobAccepted(job_id=record.id, status_url=str(request.url_for("get_job", job_id=record.id)),
                       queue=record.queue or "")


@router.post("/autotune", status_code=202, response_model=JobAccepted, dependencies=[require("admin")])
def autotune(body: AutotuneSpec, request: Request, store: StoreDep, jobs: JobsDep, queue: QueueDep) -> JobAccepted:
    record = submit_autotune(body, store, jobs, queue)
    return JobAccepted(job_id=record.id, status_url=str(request.url_for("get_job", job_id=record.id)),
                       queue=record.queue or "")


@router.get("", response_model=list[JobRecord], dependencies=[require("predict")])
def list_jobs(jobs: JobsDep, limit: int = 50) -> list[JobRecord]:
    return jobs.list(limit=max(1, min(limit, 500)))


@router.get("/{job_id}", response_model=JobRecord, dependencies=[require("predict")])
def get_job(job_id: str, jobs: JobsDep) -> JobRecord:
    return jobs.get(job_id)


@router.delete("/{job_id}", response_model=JobRecord, dependencies=[require("admin")])
def cancel(job_id: str, jobs: JobsDep, queue: QueueDep) -> JobRecord:
    return cancel_job(job_id, jobs, queue)
