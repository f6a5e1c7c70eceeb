"""The API's side of Celery: a client app that enqueues by task name and asks who is listening."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

import redis
from celery import Celery, chord

from slimbert.config import Settings
from slimbert.errors import NoWorkerForDevice, QueueUnavailable
from slimbert.tasks import (
    CONTROL_CAPABILITIES,
    QUEUE_CPU,
    QUEUE_GPU,
    TASK_BENCHMARK_AGGREGATE,
    TASK_BENCHMARK_DEVICE,
    capabilities_by_worker,
    celery_config,
)

log = logging.getLogger(__name__)


class QueueClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = Celery("slimbert-api")
        self.celery.conf.update(celery_config(settings))
        self._lock = threading.Lock()
        self._workers: list[dict[str, Any]] = []
        self._workers_at = -1e9

    def require_redis(self) -> None:
        if not self.redis_ok():
            raise QueueUnavailable("the job queue (Redis) does not answer",
                                   hint=f"start Redis at {self.settings.redis_url} and retry; nothing was queued")

    def redis_ok(self) -> bool:
        try:
            client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
            return bool(client.ping())
        except redis.RedisError:
            return False

    def workers(self, *, fresh: bool = False) -> list[dict[str, Any]]:
        """Live workers with their capabilities and queues, cached for ``worker_ping_ttl_s``."""
        with self._lock:
            if not fresh and time.monotonic() - self._workers_at < self.settings.worker_ping_ttl_s:
                return self._workers
            if not self.redis_ok():  # a broadcast to a dead broker would hang in connection retries
                self._workers, self._workers_at = [], time.monotonic()
                return self._workers
            try:
                replies = self.celery.control.broadcast(
                    CONTROL_CAPABILITIES, reply=True, timeout=self.settings.worker_ping_timeout_s
                ) or []
            except Exception as exc:  # kombu raises OperationalError and friends when Redis is down
                log.warning("worker ping failed: %s", exc)
                replies = []
            workers = [{"name": name, **caps} for name, caps in capabilities_by_worker(replies).items()]
            self._workers, self._workers_at = sorted(workers, key=lambda w: w["name"]), time.monotonic()
            return self._workers

    def live_worker_starts(self) -> dict[str, datetime | None] | None:
        """The workers that answer a fresh broadcast now, each with when its process started (None if it
        does not say); None when that cannot be known."""
        if not self.redis_ok():
            return None
        try:
            replies = self.celery.control.broadcast(
                CONTROL_CAPABILITIES, reply=True, timeout=self.settings.worker_ping_timeout_s) or []
        except Exception as exc:  # a failed broadcast says nothing about the workers
            log.warning("worker ping failed: %s", exc)
            return None
        return {name: _when(caps.get("started_at")) for name, caps in capabilities_by_worker(replies).items()}

    def live_queues(self) -> set[str]:
        return {q for w in self.workers() for q in w.get("queues", [])}

    def choose_queue(self, device: str) -> tuple[str, str | None]:
        """The queue for work that prefers ``device`` ('auto' and 'gpu' prefer the GPU), and why."""
        if device == "cpu":
            return QUEUE_CPU, None
        if QUEUE_GPU in self.live_queues():
            return QUEUE_GPU, None
        reason = "no live worker consumes the gpu queue"
        if not self.settings.gpu_fallback_to_cpu:
            raise NoWorkerForDevice(reason, hint="start a GPU worker, submit with device=cpu, or set "
                                    "SLIMBERT_GPU_FALLBACK_TO_CPU=true")
        return QUEUE_CPU, f"{reason}; ran on cpu (SLIMBERT_GPU_FALLBACK_TO_CPU=true)"

    def send(self, task_name: str, job_id: str, queue: str) -> None:
        self.require_redis()
        # The job id doubles as the task id, so a cancel can revoke exactly this message.
        self.celery.send_task(task_name, args=[job_id], queue=queue, task_id=job_id)

    def send_benchmark(self, job_id: str, devices: list[str]) -> None:
        """One task per device on that device's queue, then the aggregate on cpu (a chord)."""
        header = [self.celery.signature(TASK_BENCHMARK_DEVICE, args=[job_id, d], queue=d) for d in devices]
        chord(header)(self.celery.signature(TASK_BENCHMARK_AGGREGATE, args=[job_id], queue=QUEUE_CPU))

    def revoke(self, job_id: str) -> None:
        try:
            self.celery.control.revoke(job_id)
        except Exception as exc:  # revoke is best effort: the worker also checks the cancel marker
            log.warning("revoke of %s failed: %s", job_id, exc)


def _when(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
