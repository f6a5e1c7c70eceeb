from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from starlette.convertors import StringConvertor, register_url_convertor

from app.api.deps import JobsDep, QueueDep, SettingsDep, StoreDep, require
from app.errors import errors
from app.schemas import BenchmarkRequest, CompressRequest, JobAccepted
from app.services.jobs import cancel_job, submit_autotune, submit_benchmark, submit_compress
from slimbert.jobs import JobRecord
from slimbert.orchestrate.autotune_spec import AutotuneSpec

router = APIRouter(prefix="/jobs", tags=["jobs"])
JOB_ID_PATTERN = "^[0-9A-Za-z]{1,64}$"  # JobStore refuses other ids as unknown; the ids it makes are 32 hex digits
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="the id a POST /jobs/... answered")]


class _JobIdConvertor(StringConvertor):
    """Routes /jobs/{job_id} only for what can be an id: the POST-only paths beside it are not ids, so
    GET /jobs/compress answers 405 (Allow: POST), as the OpenAPI document has it (a concrete path wins over
    a templated one), instead of "job compress not found"."""

    regex = "(?!(?:compress|benchmark|autotune)$)[^/]+"


register_url_convertor("job_id", _JobIdConvertor())
_QUEUE_DOWN = {503: "the job queue (Redis) does not answer; nothing was queued"}


@router.post("/compress", status_code=202, response_model=JobAccepted, dependencies=[require("admin")],
             responses=errors(404, 409, 422, 503, notes={
                 404: "the recipe names a stored dataset that does not exist",
                 409: "device gpu with no live GPU worker and SLIMBERT_GPU_FALLBACK_TO_CPU off",
                 422: "the recipe or its follow-up benchmark is invalid, or its base model does not resolve here",
                 **_QUEUE_DOWN}))
def compress(
    body: CompressRequest, request: Request, jobs: JobsDep, queue: QueueDep,
    idempotency_key: Annotated[str | None, Header(max_length=200, description="a retry with the same key answers "
                                                  "the job the first call made")] = None,
) -> JobAccepted:
    record = submit_compress(body, jobs, queue, idempotency_key)
    return JobAccepted(job_id=record.id, status_url=str(request.url_for("get_job", job_id=record.id)),
                       queue=record.queue or "", fallback=record.fallback)


@router.post("/benchmark", status_code=202, response_model=JobAccepted, dependencies=[require("admin")],
             responses=errors(400, 404, 409, 422, 503, notes={
                 400: "the family has no variants, or a variant name is malformed",
                 404: "the store is empty, or a named variant does not exist; the hint lists what does",
                 409: "no live worker for any of the devices", **_QUEUE_DOWN}))
def benchmark(body: BenchmarkRequest, request: Request, settings: SettingsDep, jobs: JobsDep, queue: QueueDep
              ) -> JobAccepted:
    record = submit_benchmark(body, settings, jobs, queue)
    return JobAccepted(job_id=record.id, status_url=str(request.url_for("get_job", job_id=record.id)),
                       queue=record.queue or "")


@router.post("/autotune", status_code=202, response_model=JobAccepted, dependencies=[require("admin")],
             responses=errors(404, 422, 503, notes={404: "the family has no fine-tuned baseline", **_QUEUE_DOWN}))
def autotune(body: AutotuneSpec, request: Request, store: StoreDep, jobs: JobsDep, queue: QueueDep) -> JobAccepted:
    record = submit_autotune(body, store, jobs, queue)
    return JobAccepted(job_id=record.id, status_url=str(request.url_for("get_job", job_id=record.id)),
                       queue=record.queue or "")


@router.get("", response_model=list[JobRecord], dependencies=[require("predict")], responses=errors(422))
def list_jobs(jobs: JobsDep, limit: Annotated[int, Query(ge=1, le=500, description="newest first")] = 50
              ) -> list[JobRecord]:
    return jobs.list(limit=limit)


@router.get("/{job_id:job_id}", response_model=JobRecord, dependencies=[require("predict")], responses=errors(404, 422))
def get_job(job_id: JobId, jobs: JobsDep) -> JobRecord:
    return jobs.get(job_id)


@router.delete("/{job_id:job_id}", response_model=JobRecord, dependencies=[require("admin")],
               responses=errors(404, 422), summary="Cancel a job: at once when queued, else at its next stage boundary")
def cancel(job_id: JobId, jobs: JobsDep, queue: QueueDep) -> JobRecord:
    return cancel_job(job_id, jobs, queue)
