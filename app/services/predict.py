"""Running a prediction: the variant from the serving catalog (cached manifests and default choice),
then its continuous batcher in this process, or a GPU worker for variants that need CUDA when this
process has none."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.schemas import PredictionOut, PredictResponse
from app.serving.engine import ServingEngine, needs_gpu
from slimbert.config import Settings
from slimbert.data import Text
from slimbert.errors import InvalidInput, NoWorkerForDevice
from slimbert.store.manifest import VariantManifest

log = logging.getLogger(__name__)


def check_texts(texts: Sequence[Text], settings: Settings, field: str = "texts") -> None:
    """The per-request limits: how many inputs, and non-blank sentences of at most so many characters
    (each sentence of a pair on its own)."""
    if not texts:
        raise InvalidInput(f"{field} is empty", hint="send at least one text")
    if len(texts) > settings.max_texts_per_request:
        raise InvalidInput(f"{field} has {len(texts)} items", hint=f"send at most {settings.max_texts_per_request}")
    for i, item in enumerate(texts):
        parts = [(f"{field}[{i}]", item)] if isinstance(item, str) else [
            (f"{field}[{i}][{j}]", part) for j, part in enumerate(item)]
        for where, text in parts:
            if not text.strip():
                raise InvalidInput(f"{where} is empty", hint="send non-blank texts")
            if len(text) > settings.max_chars_per_text:
                raise InvalidInput(f"{where} has {len(text)} characters",
                                   hint=f"send at most {settings.max_chars_per_text} characters per text")


async def predict(engine: ServingEngine, texts: Sequence[Text], family: str | None, variant: str | None,
                  field: str = "texts") -> PredictResponse:
    start = time.perf_counter()
    check_texts(texts, engine.settings, field)
    # On the loop: while the catalog's answers are current this is a few stat calls (microseconds); a
    # manifest is read, or the default recomputed from the latest run, only once after the store changed.
    manifest = engine.catalog.choose(family, variant)
    if needs_gpu(manifest) and not engine.cuda:
        return await _predict_remote(engine, manifest, list(texts), start)
    key = engine.serve_version(manifest)
    res = await engine.batcher(key, manifest.runtime).submit(texts)
    total_ms = (time.perf_counter() - start) * 1000
    engine.latency.record(key, total_ms=total_ms, model_ms=res.model_ms, queue_ms=res.queue_ms,
                          texts=len(texts), ran_on="api")
    return PredictResponse(
        family=manifest.family, variant=manifest.variant, runtime=res.runtime, device=res.device,
        predictions=[PredictionOut(**p.__dict__) for p in res.predictions],
        latency_ms=round(total_ms, 3), total_ms=round(total_ms, 3), model_ms=round(res.model_ms, 3),
        tokenize_ms=round(res.tokenize_ms, 3), queue_ms=round(res.queue_ms, 3),
        batch_texts=res.batch_texts, batch_requests=res.batch_requests, ran_on="api",
    )


async def _predict_remote(engine: ServingEngine, manifest: VariantManifest, texts: list[Text],
                          start: float) -> PredictResponse:
    fam, var = manifest.family, manifest.variant
    if not await run_in_threadpool(engine.remote.gpu_worker_live):
        cpu = engine.catalog.cpu_servable(fam)
        raise NoWorkerForDevice(
            f"{fam}/{var} needs a GPU: this API has no CUDA and no live worker consumes the gpu queue",
            hint=f"start a GPU worker, or ask for a variant served on the CPU: {', '.join(cpu) or 'none'}")
    answer = await run_in_threadpool(engine.remote.predict, fam, var, texts)
    total_ms = (time.perf_counter() - start) * 1000
    # Queue time here is everything the worker did not spend in its own call: broker and result trips.
    queue_ms = max(0.0, total_ms - float(answer.get("worker_ms", 0.0)))
    engine.latency.record((fam, var), total_ms=total_ms, model_ms=answer["model_ms"], queue_ms=queue_ms,
                          texts=len(texts), ran_on="gpu-worker")
    return PredictResponse(
        family=fam, variant=var, runtime=answer["runtime"], device=answer["device"],
        predictions=[PredictionOut(**p) for p in answer["predictions"]],
        latency_ms=round(total_ms, 3), total_ms=round(total_ms, 3), model_ms=round(answer["model_ms"], 3),
        tokenize_ms=round(answer["tokenize_ms"], 3), queue_ms=round(queue_ms, 3),
        batch_texts=len(texts), batch_requests=1, ran_on=f"gpu-worker:{answer.get('host', 'unknown')}",
    )


def server_timing(resp: PredictResponse) -> str:
    return (f"queue;dur={resp.queue_ms}, tokenize;dur={resp.tokenize_ms}, model;dur={resp.model_ms}, "
            f"total;dur={resp.total_ms}")


def latency_of(engine: ServingEngine, family: str, variant: str) -> dict[str, Any]:
    manifest = engine.catalog.manifest(family, variant)  # 404 with what exists
    key = (manifest.family, manifest.variant)
    loaded = engine.loaded()
    return {**engine.latency.stats(key), "loaded": key in loaded, **loaded.get(key, {})}


async def latency_events(engine: ServingEngine, interval_s: float, count: int | None,
                         is_disconnected: Any) -> AsyncIterator[str]:
    """Server-sent events: one ``latency`` event per period with every loaded variant's stats."""
    sent = 0
    yield f"retry: {int(interval_s * 1000)}\n\n"
    while count is None or sent < count:
        if await is_disconnected():
            return
        data = json.dumps({"at": time.time(), "variants": engine.snapshot()}, allow_nan=False)
        yield f"id: {sent}\nevent: latency\ndata: {data}\n\n"
        sent += 1
        if count is None or sent < count:
            await asyncio.sleep(interval_s)
