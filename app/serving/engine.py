"""The serving state of one API process, built once in the lifespan: predictor cache, one micro-batcher
per variant, the shared forward thread pool, live latency, and the forwarder to the gpu queue."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import torch
from fastapi import Depends, Request

from app.services.queue import QueueClient
from app.serving.batcher import MicroBatcher
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


def intra_op_threads(settings: Settings) -> int:
    """Threads per forward pass: the setting, else the cores shared among the concurrent forwards."""
    if settings.inference_threads:
        return settings.inference_threads
    return max(1, (os.cpu_count() or 1) // settings.serve_forward_workers)


def needs_gpu(manifest: VariantManifest) -> bool:
    return manifest.target_device == "gpu" or manifest.precision == "fp16"


class ServingEngine:
    def __init__(self, settings: Settings, store: VariantStore, queue: QueueClient) -> None:
        self.settings = settings
        self.store = store
        self.threads = intra_op_threads(settings)
        self.cuda = torch.cuda.is_available()
        # torch's intra-op pool is process-wide; ONNX Runtime gets the same number per session.
        torch.set_num_threads(self.threads)
        self.forward_pool = ThreadPoolExecutor(settings.serve_forward_workers, thread_name_prefix="forward")
        # Loads run apart from forwards, so loading one variant never stalls the others.
        self.load_pool = ThreadPoolExecutor(2, thread_name_prefix="load")
        self.cache = PredictorCache(settings.predictor_cache_size, self._load,
                                    max_bytes=settings.predictor_cache_max_mb * 1_000_000, size_of=self._size_of)
        self.latency = LatencyBoard(settings.latency_window_s)
        self.remote = RemoteForwarder(queue, settings.remote_predict_timeout_s)
        self._batchers: dict[Key, MicroBatcher] = {}

    def device_for(self, manifest: VariantManifest) -> str:
        return "gpu" if needs_gpu(manifest) and self.cuda else "cpu"

    def _size_of(self, key: Key) -> int:
        return self.store.manifest(*key).size_bytes

    def _load(self, key: Key) -> Predictor:
        manifest = self.store.manifest(*key)
        self.store.verify(manifest)
        predictor = load_variant(manifest, self.store.variant_dir(*key), self.device_for(manifest),
                                 threads=self.threads, ort_spinning=self.settings.ort_allow_spinning)
        if self.settings.serve_warmup:
            predictor.predict(WARMUP_TEXTS)
        log.info("loaded %s/%s (%s on %s)", *key, predictor.runtime, predictor.device)
        return predictor

    def batcher(self, key: Key, runtime: str) -> MicroBatcher:
        """The variant's batcher, made on first use inside the event loop."""
        if key not in self._batchers:
            unbatched = runtime in self.settings.serve_unbatched_runtimes
            self._batchers[key] = MicroBatcher(
                lambda: self.cache.get(key), self.forward_pool,
                max_batch=1 if unbatched else self.settings.serve_max_batch,
                max_wait_ms=self.settings.serve_max_wait_ms, load_executor=self.load_pool,
                on_batch=lambda n: self.latency.record_batch(key, n))
        return self._batchers[key]

    def batch_sizes(self, key: Key) -> list[int]:
        return list(self._batchers[key].batch_sizes) if key in self._batchers else []

    def snapshot(self) -> list[dict[str, Any]]:
        """Stats of every loaded variant and of every variant served in this process."""
        loaded = self.cache.info()
        keys = list(dict.fromkeys([*loaded, *self.latency.keys()]))
        return [{**self.latency.stats(k), "loaded": k in loaded, **loaded.get(k, {})} for k in sorted(keys)]

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self.forward_pool.shutdown(wait=False, cancel_futures=True)
        self.load_pool.shutdown(wait=False, cancel_futures=True)


def get_engine(request: Request) -> ServingEngine:
    engine: ServingEngine = request.app.state.engine
    return engine


EngineDep = Annotated[ServingEngine, Depends(get_engine)]
