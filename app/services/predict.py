"""Choosing a variant and running a prediction: through the variant's micro-batcher in this process,
or on a GPU worker for variants that need CUDA when this process has none."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.schemas import PredictionOut, PredictResponse
from app.serving.engine import ServingEngine, needs_gpu
from slimbert.config import Settings
from slimbert.errors import InvalidInput, NoWorkerForDevice, VariantNotFound
from slimbert.records import BASELINE, PRUNED, BenchmarkRun
from slimbert.report.showdown import build_showdown
from slimbert.store.manifest import VariantManifest
from slimbert.store.store import VariantStore

log = logging.getLogger(__name__)

# Without a named variant and without a benchmark run, serve the first of these that the family has:
# the smallest, fastest CPU form first. With a run, the showdown's CPU recommendation wins.
DEFAULT_ORDER = ("pruned-int8", "baseline-int8", PRUNED, BASELINE)


def recommended_cpu_variant(store: VariantStore, family: str) -> str | None:
    """The showdown's CPU pick from the family's latest benchmark run, or None without one."""
    raw = store.latest_report(family)
    if raw is None:
        return None
    try:
        run = BenchmarkRun.model_validate(raw)
        return build_showdown(family, store.manifests(family), run).recommendations.cpu.variant
    except Exception as exc:  # a malformed run must not take serving down: fall back to the order
        log.warning("showdown of %s failed, using the fallback order: %s", family, exc)
        return None


def choose_variant(store: VariantStore, family: str | None, variant: str | None) -> VariantManifest:
    fam = family or store.newest_family()
    if variant:
        return store.manifest(fam, variant)  # 404 with the list of what exists
    manifests = {m.variant: m for m in store.manifests(fam)}
    if not manifests:
        raise VariantNotFound(f"family {fam} has no variants", hint="run POST /jobs/compress")
    recommended = recommended_cpu_variant(store, fam)
    if recommended in manifests:
        return manifests[recommended]
    for name in DEFAULT_ORDER:
        if name in manifests:
            return manifests[name]
    # Last resort: alphabetical, variants the CPU can serve first.
    return min(manifests.values(), key=lambda m: (needs_gpu(m), m.variant))


def check_texts(texts: list[str], settings: Settings) -> None:
    if not texts:
        raise InvalidInput("texts is empty", hint="send at least one text")
    if len(texts) > settings.max_texts_per_request:
        raise InvalidInput(f"texts has {len(texts)} items", hint=f"send at most {settings.max_texts_per_request}")
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput(f"texts[{i}] is empty", hint="send non-blank texts")
        if len(text) > settings.max_chars_per_text:
            raise InvalidInput(f"texts[{i}] has {len(text)} characters",
                               hint=f"send at most {settings.max_chars_per_text} characters per text")


def _cpu_servable(store: VariantStore, family: str) -> list[str]:
    return [m.variant for m in store.manifests(family) if not needs_gpu(m)]


async def predict(engine: ServingEngine, texts: list[str], family: str | None, variant: str | None) -> PredictResponse:
    start = time.perf_counter()
    check_texts(texts, engine.settings)
    # Store reads touch the disk: keep them off the event loop.
    manifest = await run_in_threadpool(choose_variant, engine.store, family, variant)
    key = (manifest.family, manifest.variant)
    if needs_gpu(manifest) and not engine.cuda:
        return await _predict_remote(engine, manifest, texts, start)
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


async def _predict_remote(engine: ServingEngine, manifest: VariantManifest, texts: list[str],
                          start: float) -> PredictResponse:
    fam, var = manifest.family, manifest.variant
    if not await run_in_threadpool(engine.remote.gpu_worker_live):
        cpu = await run_in_threadpool(_cpu_servable, engine.store, fam)
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
    manifest = engine.store.manifest(family, variant)  # 404 with what exists
    key = (manifest.family, manifest.variant)
    loaded = engine.cache.info()
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
