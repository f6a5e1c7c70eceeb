"""Live latency: per variant over the last minute, as a server-sent-events stream, and for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from app.api.deps import require
from app.errors import errors
from app.schemas import LatencyStats, NamePath
from app.services.predict import latency_events, latency_of
from app.serving.engine import EngineDep

router = APIRouter(tags=["latency"])


@router.get("/variants/{family}/{variant}/latency", response_model=LatencyStats,
            dependencies=[require("predict")], responses=errors(404, 422))
async def variant_latency(engine: EngineDep, family: NamePath, variant: NamePath) -> LatencyStats:
    """Rolling p50/p95/p99 (total, model and queue ms) and requests/s over the last window (60 s)."""
    return LatencyStats.model_validate(await run_in_threadpool(latency_of, engine, family, variant))


@router.get("/stream/latency", dependencies=[require("predict")], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "one 'latency' event per period: JSON {at, variants: [LatencyStats]}"},
                       **errors(422)})
async def stream_latency(
    request: Request, engine: EngineDep,
    count: int | None = Query(default=None, ge=1, le=100_000, description="stop after this many events"),
) -> StreamingResponse:
    """Server-sent events, one ``latency`` event per second with every loaded variant's stats."""
    events = latency_events(engine, engine.settings.latency_stream_interval_s, count, request.is_disconnected)
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/metrics", include_in_schema=False)
async def metrics(engine: EngineDep) -> Response:
    return Response(engine.latency.prometheus(), media_type=CONTENT_TYPE_LATEST)
