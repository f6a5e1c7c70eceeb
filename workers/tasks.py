"""Thin task wrappers: they take ids and JSON, call a plain slimbert function, and return JSON."""

from __future__ import annotations

from typing import Any

from celery import Task
from redis.exceptions import ConnectionError as RedisConnectionError

from slimbert.config import get_settings
from slimbert.jobrunner import execute_compress_job
from slimbert.tasks import TASK_COMPRESS
from workers.celery_app import app


@app.task(
    name=TASK_COMPRESS,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    # Only transient broker trouble is retried; a bad recipe fails the job with a hint instead.
    autoretry_for=(RedisConnectionError,),
    retry_backoff=True,
    max_retries=3,
)
def compress(self: Task, job_id: str) -> dict[str, Any]:
    queue = (self.request.delivery_info or {}).get("routing_key") or "unknown"
    return execute_compress_job(get_settings(), job_id, queue=queue, worker=self.request.hostname or "unknown")
