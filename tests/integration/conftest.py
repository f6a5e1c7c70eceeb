"""Real Redis and real Celery worker processes for the integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from app.services.queue import QueueClient
from slimbert.config import Settings

ROOT = Path(__file__).resolve().parents[2]
# A database of its own, so a developer's running stack on db 0 never sees test messages.
TEST_REDIS_URL = os.environ.get("SLIMBERT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2).flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"Redis does not answer at {TEST_REDIS_URL} ({exc}); run: python scripts/ensure_redis.py")
    return TEST_REDIS_URL


@pytest.fixture
def stack_settings(tmp_path: Path, redis_url: str, tiny_encoder_dir: Path) -> Settings:
    return Settings(
        redis_url=redis_url, store_dir=tmp_path / "store",
        allowed_model_roots=[ROOT, ROOT.parent, tiny_encoder_dir.parent, Path("/tmp")],
        worker_ping_ttl_s=0, worker_ping_timeout_s=1.0, _env_file=None,  # type: ignore[call-arg]
    )


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMBERT_")}
    env.update({
        "SLIMBERT_REDIS_URL": settings.redis_url,
        "SLIMBERT_STORE_DIR": str(settings.store_dir),
        "SLIMBERT_ALLOWED_MODEL_ROOTS": json.dumps([str(p) for p in settings.allowed_model_roots]),
        "PYTHONPATH": str(ROOT),
    })
    if settings.store_url:  # a host sharing a bucket; AWS credentials come from os.environ, as boto3 reads them
        env.update({"SLIMBERT_STORE_URL": settings.store_url,
                    "SLIMBERT_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
                    "SLIMBERT_STORE_REFRESH_S": str(settings.store_refresh_s)})
    return env


class Worker:
    def __init__(self, settings: Settings, queue: str, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queue, "-c", "1",
             "-n", f"{queue}-{os.getpid()}-{time.monotonic_ns()}@%h", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=settings_env(settings), stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, on_fail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{on_fail()}")


@pytest.fixture
def cpu_worker(stack_settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    worker = Worker(stack_settings, "cpu", tmp_path / "worker-cpu.log")
    client = QueueClient(stack_settings)
    wait_for(lambda: "cpu" in client.live_queues() or worker.proc.poll() is not None, 90,
             "the cpu worker to answer", worker.output)
    assert worker.proc.poll() is None, worker.output()
    yield worker
    worker.stop()
