"""The contract between ``app/`` and ``workers/``: task names, queues and Celery configuration.

The front end enqueues by name (``send_task``) so it never imports the worker code, and both
sides build their Celery apps from :func:`celery_config` so they cannot disagree.
"""

from __future__ import annotations

from typing import Any

from slimbert.config import Settings

QUEUE_CPU = "cpu"
QUEUE_GPU = "gpu"
QUEUES: tuple[str, ...] = (QUEUE_CPU, QUEUE_GPU)

TASK_COMPRESS = "slimbert.compress"
# The cpu half of a compression job whose training ran on the gpu queue (INT8 export and calibration).
TASK_COMPRESS_PRECISION = "slimbert.compress.precision"
# A benchmark job is a chord: one device task per device, then one aggregate task on cpu.
TASK_BENCHMARK_DEVICE = "slimbert.benchmark.device"
TASK_BENCHMARK_AGGREGATE = "slimbert.benchmark.aggregate"
TASK_AUTOTUNE = "slimbert.autotune"
# GPU variants asked for on an API host without CUDA run here, on the gpu queue.
TASK_PREDICT = "slimbert.predict"

# A custom remote-control command each worker answers with its capabilities and queues.
CONTROL_CAPABILITIES = "slimbert_capabilities"


def capabilities_by_worker(replies: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Worker name -> its capabilities, from the replies to a ``CONTROL_CAPABILITIES`` broadcast
    (Celery answers a list of one-key dicts; a worker that failed the command answers a non-dict)."""
    return {name: caps if isinstance(caps, dict) else {"error": str(caps)}
            for reply in replies or [] for name, caps in reply.items()}


def queues_of(replies: list[dict[str, Any]] | None) -> set[str]:
    """The queues that the workers answering a capabilities broadcast consume."""
    return {q for caps in capabilities_by_worker(replies).values() for q in caps.get("queues", [])}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the API's client app and the workers."""
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": QUEUE_CPU,
        # Long jobs: acknowledge after the work is done, so a killed worker's job is redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "result_expires": 7 * 24 * 3600,
        "worker_hijack_root_logger": False,
    }
