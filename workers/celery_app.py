"""The Celery app of the workers: broker, backend, queues, late acks, prefetch 1.

Start a CPU worker with ``celery -A workers.celery_app worker -Q cpu`` and a GPU worker with
``celery -A workers.celery_app worker -Q gpu -c 1``.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: threads that finish a parallel region sleep instead of spinning. A worker shares
# its host with the API and other processes, and spinning threads there made a MiniLM training step 2.9x
# slower when the other core was busy (5.6 against 1.9 s, measured with both policies on one loaded 2-core
# host: benchmarks/bench_omp_wait_policy.py). On a quiet host the cost is a thread wake-up per parallel region,
# small beside a training step's matmuls (not measured yet). An operator's OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.signals import worker_init
from celery.worker.control import control_command
from kombu import Queue

from slimbert.config import get_settings
from slimbert.datasets import open_dataset_store
from slimbert.hardware import worker_capabilities
from slimbert.jobs.reaper import celery_time_limits
from slimbert.store.bucket import open_variant_store
from slimbert.tasks import CONTROL_CAPABILITIES, QUEUES, celery_config

log = logging.getLogger(__name__)

settings = get_settings()
app = Celery("slimbert", include=["workers.tasks"])
app.conf.update(celery_config(settings))
# Every task gets the soft and hard time limits of the settings (a task may still set its own).
app.conf.update(celery_time_limits(settings))
# When Redis goes away mid-job, let the job run on: its record is on disk, and the message Redis keeps
# (append-only) comes back after the visibility timeout to a job already finished, which skips it.
# Celery 6 flips this default to cancelling the job, which would throw away hours of training.
app.conf.worker_cancel_long_running_tasks_on_connection_loss = False
app.conf.task_queues = [Queue(name) for name in QUEUES]

_capabilities: dict[str, Any] = {}


@worker_init.connect
def _report_capabilities(**_: Any) -> None:
    """Probe the hardware once when the worker starts; the control command below serves it."""
    _capabilities.update(worker_capabilities())
    # The reaper tells a restarted worker (same name, new process) from the one that ran a job by this.
    _capabilities["started_at"] = datetime.now(UTC).isoformat()
    log.info("worker capabilities: %s", _capabilities)
    # Staging left by jobs that died with their worker: anything older than a task may live is debris.
    removed = open_variant_store(settings).clean_staging(older_than_s=settings.task_time_limit_s)
    removed += open_dataset_store(settings).clean_staging(older_than_s=settings.task_time_limit_s)
    if removed:
        log.info("removed %d stale staging directories", removed)


@control_command(name=CONTROL_CAPABILITIES)
def slimbert_capabilities(state: Any) -> dict[str, Any]:
    queues = [q.name for q in state.consumer.task_consumer.queues]
    return {**(_capabilities or worker_capabilities()), "queues": queues}
