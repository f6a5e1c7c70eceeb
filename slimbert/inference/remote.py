"""Predictions for variants that need a GPU, run on a worker of the ``gpu`` queue.

``predict_texts`` is the plain function a Celery task wraps (JSON in, JSON out); the API sends the
task by name when it has no CUDA itself. A worker keeps the few variants it served last loaded.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

from slimbert.config import Settings
from slimbert.data import Text
from slimbert.hardware import cuda_available
from slimbert.inference.cache import PredictorCache
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Predictor
from slimbert.store.bucket import open_variant_store
from slimbert.store.store import VariantStore

_KEEP = 2  # variants a worker keeps loaded


# One cache per store and thread setting in a worker process, built on its first prediction.
# (store, family, variant, manifest time): a republished variant is a new key.
WorkerKey = tuple[str, str, str, str]
_caches: dict[tuple[str, int | None], PredictorCache[WorkerKey]] = {}
# The store of a worker process, built once: with a bucket it holds a client and its connection pool.
_stores: dict[tuple[str, str | None], VariantStore] = {}


def _store_for(settings: Settings) -> VariantStore:
    key = (str(settings.store_dir), settings.store_url)
    if key not in _stores:
        _stores[key] = open_variant_store(settings)
    return _stores[key]


def _cache_for(settings: Settings) -> PredictorCache[WorkerKey]:
    store, threads = _store_for(settings), settings.inference_threads or None
    if (str(settings.store_dir), threads) in _caches:
        return _caches[(str(settings.store_dir), threads)]

    def load(key: WorkerKey) -> Predictor:
        _, family, variant, _created = key
        manifest = store.manifest(family, variant)
        store.verify(manifest)
        return load_variant(manifest, store.variant_dir(family, variant), "gpu" if cuda_available() else "cpu",
                            threads=threads)

    return _caches.setdefault((str(settings.store_dir), threads), PredictorCache(_KEEP, load))


def _predictor(settings: Settings, family: str, variant: str) -> Predictor:
    manifest = _store_for(settings).manifest(family, variant)
    # created_at in the key: a republished variant is loaded afresh, never served stale.
    return _cache_for(settings).get((str(settings.store_dir), family, variant, manifest.created_at.isoformat()))


def predict_texts(settings: Settings, family: str, variant: str, texts: Sequence[Text | list[str]]
                  ) -> dict[str, Any]:
    """Predict ``texts`` (sentences, or pairs: JSON brings them as two-item lists) with a stored variant
    on this process's best device; the answer is JSON."""
    start = time.perf_counter()
    predictor = _predictor(settings, family, variant)
    out = predictor.predict([t if isinstance(t, str) else (t[0], t[1]) for t in texts])
    return {
        "family": family, "variant": variant, "runtime": predictor.runtime, "device": predictor.device,
        "host": socket.gethostname(),
        "predictions": [{"label": p.label, "label_id": p.label_id, "score": p.score, "scores": p.scores}
                        for p in out.predictions],
        "tokenize_ms": out.tokenize_ms, "model_ms": out.model_ms,
        "worker_ms": (time.perf_counter() - start) * 1000,
    }
