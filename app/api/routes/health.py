from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import QueueDep, StoreDep, require
from app.schemas import Health, Readiness, WorkerInfo

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "not ready: Redis or the store is down"}})
def readyz(store: StoreDep, queue: QueueDep) -> JSONResponse:
    redis_ok = queue.redis_ok()
    store_ok = store.writable()  # with a bucket: the local cache and the bucket both
    queues = sorted(queue.live_queues()) if redis_ok else []
    body = Readiness(redis=redis_ok, store_writable=store_ok, live_queues=queues, ready=redis_ok and store_ok)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/workers", response_model=list[WorkerInfo], dependencies=[require("predict")])
def workers(queue: QueueDep) -> list[WorkerInfo]:
    return [WorkerInfo.model_validate(w) for w in queue.workers()]
