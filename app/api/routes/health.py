from __future__ import annotations

import os
import tempfile
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import QueueDep, StoreDep, require

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(store: StoreDep, queue: QueueDep) -> JSONResponse:
    redis_ok = queue.redis_ok()
    try:
        with tempfile.NamedTemporaryFile(dir=store.root, prefix=".probe-"):
            pass
        store_ok = os.access(store.root, os.W_OK)
    except OSError:
        store_ok = False
    queues = sorted(queue.live_queues()) if redis_ok else []
    body: dict[str, Any] = {"redis": redis_ok, "store_writable": store_ok, "live_queues": queues}
    body["ready"] = redis_ok and store_ok
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/workers", dependencies=[require("predict")])
def workers(queue: QueueDep) -> list[dict[str, Any]]:
    return queue.workers()
