"""The serving state of one API process, built once in the lifespan: the catalog of the store, the
predictor cache, one compute thread per forward worker, one batcher per variant, live latency, and the
forwarder to the gpu queue.

Why one thread per forward worker: torch's intra-op pool (OpenMP) keeps a team of threads per calling
thread, and its thread count is a per-thread setting. Forward passes on whatever thread of a pool is
free (or a load on one thread and forwards on another) build several teams that spin against each
other on few cores: measured 2.5x slower than the same forward on one thread. So every torch and ONNX
Runtime call of a variant (load, warm-up, forward) runs on its forward worker's one thread, on which
``torch.set_num_threads`` was called first.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

import torch
from fastapi import Depends, Request

from app.services.queue import QueueClient
from app.serving.batcher import ContinuousBatcher
from app.serving.catalog import Catalog, Version, needs_gpu
from app.serving.latency import Key, LatencyBoard
from app.serving.remote import RemoteForwarder
from slimbert.config import Settings
from slimbert.inference.cache import PredictorCache
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Predictor
from slimbert.store.manifest import VariantManifest
from slimbert.store.store import VariantStore

log = logging.getLogger(__name__)
WARMUP_TEXTS = ["warm-up: a short sentence.", "a second, slightly longer warm-up sentence for padding."]
T = TypeVar("T")
# A loaded variant: (family, variant, the version of its manifest). A republished variant is a new key.
VersionKey = tuple[str, str, Version]


def intra_op_threads(settings: Settings) -> int:
    """Threads per forward pass: the setting, else the cores shared among all the forward workers of
    all the API processes."""
    if settings.inference_threads:
        return settings.inference_threads
    return max(1, (os.cpu_count() or 1) // (settings.serve_forward_workers * settings.api_workers))


class ComputeThread:
    """One thread that runs every torch and ONNX Runtime call of the variants assigned to it."""

    def __init__(self, index: int, threads: int) -> None:
        self.index = index
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"compute-{index}",
                                           initializer=torch.set_num_threads, initargs=(threads,))

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def call(self, fn: Callable[[], T]) -> T:
        """Blocking, from any thread but this one (tests, the benchmark)."""
        return self.executor.submit(fn).result()


class ServingEngine:
    def __init__(self, settings: Settings, store: VariantStore, queue: QueueClient) -> None:
        self.settings = settings
        self.store = store
        self.catalog = Catalog(store)
        self.threads = intra_op_threads(settings)
        self.cuda = torch.cuda.is_available()
        self.compute = [ComputeThread(i, self.threads) for i in range(settings.serve_forward_workers)]
        self._next_home = itertools.cycle(self.compute)
        self._home: dict[Key, ComputeThread] = {}
        self.cache: PredictorCache[VersionKey] = PredictorCache(
            settings.predictor_cache_size, self._load, max_bytes=settings.predictor_cache_max_mb * 1_000_000,
            size_of=self._size_of)
        self._serving: dict[Key, Version] = {}  # the version each variant's batcher serves now
        self.latency = LatencyBoard(settings.latency_window_s)
        self.remote = RemoteForwarder(queue, settings.remote_predict_timeout_s)
        self._batchers: dict[Key, ContinuousBatcher] = {}

    def device_for(self, manifest: VariantManifest) -> str:
        return "gpu" if needs_gpu(manifest) and self.cuda else "cpu"

    def home(self, key: Key) -> ComputeThread:
        """The compute thread of a variant: assigned round-robin on first use, then fixed."""
        if key not in self._home:
            self._home[key] = next(self._next_home)
        return self._home[key]

    def _size_of(self, vkey: VersionKey) -> int:
        return self.catalog.manifest(vkey[0], vkey[1]).size_bytes

    def _load(self, vkey: VersionKey) -> Predictor:
        """Runs on the variant's compute thread (called by the cache from the batch's call)."""
        family, variant, _ = vkey
        manifest = self.store.manifest(family, variant)
        self.store.verify(manifest)
        predictor = load_variant(manifest, self.store.variant_dir(family, variant), self.device_for(manifest),
                                 threads=self.threads, ort_spinning=self.settings.ort_allow_spinning)
        if self.settings.serve_warmup:
            predictor.predict(WARMUP_TEXTS)
        log.info("loaded %s/%s (%s on %s)", family, variant, predictor.runtime, predictor.device)
        return predictor

    def serve_version(self, manifest: VariantManifest) -> Key:
        """Point the variant at the manifest's version; a republished variant's old predictor is
        released from the cache, and the next batch loads the new one."""
        key = (manifest.family, manifest.variant)
        version = self.catalog.version(*key)
        old = self._serving.get(key)
        if old != version:
            self._serving[key] = version
            if old is not None:
                self.cache.discard((*key, old))
                log.info("%s/%s was republished: reloading it", *key)
        return key

    def predictor(self, key: Key) -> Predictor:
        """The loaded predictor of the version served now; call it on the variant's compute thread."""
        version = self._serving.get(key) or self.catalog.version(*key)
        return self.cache.get((*key, version))

    def batcher(self, key: Key, runtime: str) -> ContinuousBatcher:
        """The variant's batcher, made on first use inside the event loop."""
        if key not in self._batchers:
            unbatched = runtime in self.settings.serve_unbatched_runtimes
            self._batchers[key] = ContinuousBatcher(
                lambda: self.predictor(key), self.home(key).run,
                max_batch=1 if unbatched else self.settings.serve_max_batch,
                max_batch_tokens=self.settings.serve_max_batch_tokens,
                max_wait_ms=self.settings.serve_max_wait_ms,
                on_batch=lambda n: self.latency.record_batch(key, n))
        return self._batchers[key]

    def batch_sizes(self, key: Key) -> list[int]:
        return list(self._batchers[key].batch_sizes) if key in self._batchers else []

    def loaded(self) -> dict[Key, dict[str, Any]]:
        """Cache stats of the loaded variants, by (family, variant)."""
        return {(f, v): info for (f, v, _), info in self.cache.info().items()}

    def snapshot(self) -> list[dict[str, Any]]:
        """Stats of every loaded variant and of every variant served in this process."""
        loaded = self.loaded()
        keys = list(dict.fromkeys([*loaded, *self.latency.keys()]))
        return [{**self.latency.stats(k), "loaded": k in loaded, **loaded.get(k, {})} for k in sorted(keys)]

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        for thread in self.compute:
            thread.executor.shutdown(wait=False, cancel_futures=True)


async def get_engine(request: Request) -> ServingEngine:  # async: no thread-pool hop (app/api/deps.py)
    engine: ServingEngine = request.app.state.engine
    return engine


EngineDep = Annotated[ServingEngine, Depends(get_engine)]
