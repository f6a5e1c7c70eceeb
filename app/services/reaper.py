"""The API's reaper loop: every ``reaper_interval_s`` one round of :mod:`slimbert.reaper`.

The lifespan starts it with ``start_reaper(app)`` once ``app.state`` holds the settings, the job store
and the queue client, and stops it with ``await stop_reaper(app)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid

import redis
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app.services.queue import QueueClient
from slimbert.config import Settings
from slimbert.jobs import JobStore, utcnow
from slimbert.jobs.reaper import ReaperAction, Sightings, apply, plan

log = logging.getLogger(__name__)

# With several API processes on one Redis, one of them reaps in each round.
LOCK_KEY = "slimbert:reaper:lock"


def _take_round(settings: Settings) -> bool:
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    ttl_ms = max(1000, int(settings.reaper_interval_s * 900))
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
        return bool(client.set(LOCK_KEY, token, nx=True, px=ttl_ms))
    except redis.RedisError:
        return False


def reap_once(settings: Settings, jobs: JobStore, queue: QueueClient, sightings: Sightings) -> list[ReaperAction]:
    """One round: ask who is alive, plan, act. Nothing happens while the workers cannot be asked."""
    live = queue.live_worker_starts()
    now = utcnow()
    if live is None:
        # Redis is down: nobody can answer, and nothing could be requeued. Count the blind spell as
        # seen, so workers get a full grace period to reconnect once Redis is back.
        sightings.since = now
        sightings.last_seen = dict.fromkeys(sightings.last_seen, now)
        return []
    if not _take_round(settings):
        return []
    return apply(plan(jobs, live, now, settings, sightings), jobs, queue.send)


async def _loop(settings: Settings, jobs: JobStore, queue: QueueClient) -> None:
    sightings = Sightings()
    while True:
        await asyncio.sleep(settings.reaper_interval_s)
        try:
            await run_in_threadpool(reap_once, settings, jobs, queue, sightings)
        except Exception:  # a failed round must not end the loop
            log.exception("reaper round failed")


def start_reaper(app: FastAPI) -> None:
    """Start the loop in the running event loop (once; ``reaper_interval_s = 0`` turns it off)."""
    settings: Settings = app.state.settings
    if settings.reaper_interval_s <= 0 or getattr(app.state, "reaper", None) is not None:
        return
    app.state.reaper = asyncio.create_task(_loop(settings, app.state.jobs, app.state.queue), name="slimbert-reaper")


async def stop_reaper(app: FastAPI) -> None:
    task: asyncio.Task[None] | None = getattr(app.state, "reaper", None)
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    app.state.reaper = None
