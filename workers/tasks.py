"""Thin task wrappers: they take ids and JSON, call a plain slimbert function, and return JSON."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, chord
from redis.exceptions import ConnectionError as RedisConnectionError

from slimbert.benchmark.runner import BenchmarkSpec
from slimbert.config import get_settings
from slimbert.inference.remote import predict_texts
from slimbert.jobs import JobRecord, open_job_store
from slimbert.orchestrate.autotune import execute_autotune_job
from slimbert.orchestrate.benchmark import aggregate_benchmark, execute_benchmark_device, plan_benchmark
from slimbert.orchestrate.compress import execute_compress_job
from slimbert.tasks import (
    CONTROL_CAPABILITIES,
    QUEUE_CPU,
    QUEUE_GPU,
    TASK_AUTOTUNE,
    TASK_BENCHMARK_AGGREGATE,
    TASK_BENCHMARK_DEVICE,
    TASK_COMPRESS,
    TASK_COMPRESS_PRECISION,
    TASK_PREDICT,
    queues_of,
)
from workers.celery_app import app

log = logging.getLogger(__name__)

# Only transient broker trouble is retried; a bad recipe fails the job with a hint instead.
_RETRY: dict[str, Any] = {"autoretry_for": (RedisConnectionError,), "retry_backoff": True, "max_retries": 3}


def _where(task: Task) -> tuple[str, str]:
    queue = (task.request.delivery_info or {}).get("routing_key") or "unknown"
    return queue, task.request.hostname or "unknown"


def send_benchmark(job_id: str, devices: list[str]) -> None:
    """Fan out one task per device, then aggregate on cpu (a chord)."""
    header = [app.signature(TASK_BENCHMARK_DEVICE, args=[job_id, d], queue=d) for d in devices]
    chord(header)(app.signature(TASK_BENCHMARK_AGGREGATE, args=[job_id], queue=QUEUE_CPU))


def _follow_up_benchmark(record: JobRecord, own_queue: str) -> dict[str, Any]:
    """Every compression (and autotune) job ends with a benchmark of its family, so the showdown's
    latest run covers every variant (unless the request turned it off with ``"benchmark": null``)."""
    overrides = record.request.get("benchmark", {})
    if overrides is None or not record.variants:
        return {}
    settings = get_settings()
    try:
        replies = app.control.broadcast(CONTROL_CAPABILITIES, reply=True, timeout=1.0) or []
        live = queues_of(replies)
        spec = BenchmarkSpec(family=record.family or "", **overrides)
        bench_id, devices = plan_benchmark(settings, spec, live | {own_queue}, open_job_store(settings),
                                           parent_job=record.id)
        send_benchmark(bench_id, devices)
    except Exception as exc:  # the compression itself succeeded; say why no benchmark followed
        log.warning("no follow-up benchmark for job %s: %s", record.id, exc)
        return {"benchmark_error": str(exc)}
    return {"benchmark_job_id": bench_id}


@app.task(name=TASK_COMPRESS, bind=True, acks_late=True, reject_on_worker_lost=True, **_RETRY)
def compress(self: Task, job_id: str) -> dict[str, Any]:
    queue, worker = _where(self)
    if queue != QUEUE_GPU:
        return execute_compress_job(get_settings(), job_id, queue=queue, worker=worker,
                                    on_success=lambda record: _follow_up_benchmark(record, queue))
    # On the gpu queue: train here, then hand the INT8 stages to the cpu queue (a two-step chain).
    result = execute_compress_job(get_settings(), job_id, queue=queue, worker=worker, phase="train")
    if result.get("phase") == "awaiting-cpu":
        app.send_task(TASK_COMPRESS_PRECISION, args=[job_id], queue=QUEUE_CPU)
    return result


@app.task(name=TASK_COMPRESS_PRECISION, bind=True, acks_late=True, reject_on_worker_lost=True, **_RETRY)
def compress_precision(self: Task, job_id: str) -> dict[str, Any]:
    queue, worker = _where(self)
    return execute_compress_job(get_settings(), job_id, queue=queue, worker=worker, phase="precision",
                                on_success=lambda record: _follow_up_benchmark(record, queue))


@app.task(name=TASK_AUTOTUNE, bind=True, acks_late=True, reject_on_worker_lost=True, **_RETRY)
def autotune(self: Task, job_id: str) -> dict[str, Any]:
    queue, worker = _where(self)
    return execute_autotune_job(get_settings(), job_id, queue=queue, worker=worker,
                                on_success=lambda record: _follow_up_benchmark(record, queue))


@app.task(name=TASK_PREDICT, acks_late=True)
def predict(family: str, variant: str, texts: list[str]) -> dict[str, Any]:
    return predict_texts(get_settings(), family, variant, texts)


@app.task(name=TASK_BENCHMARK_DEVICE, bind=True, acks_late=True, reject_on_worker_lost=True, **_RETRY)
def benchmark_device(self: Task, job_id: str, device: str) -> dict[str, Any]:
    queue, worker = _where(self)
    return execute_benchmark_device(get_settings(), job_id, device, queue=queue, worker=worker)


@app.task(name=TASK_BENCHMARK_AGGREGATE, acks_late=True, reject_on_worker_lost=True, **_RETRY)
def benchmark_aggregate(results: list[dict[str, Any]], job_id: str) -> dict[str, Any]:
    return aggregate_benchmark(get_settings(), job_id, results)
