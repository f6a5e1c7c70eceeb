"""Predictions for variants that need a GPU, run on a worker of the ``gpu`` queue.

``predict_texts`` is the plain function a Celery task wraps (JSON in, JSON out); the API sends the
task by name when it has no CUDA itself. A worker keeps the few variants it served last loaded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from typing import Any

import torch

from slimbert.config import Settings
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Predictor
from slimbert.store.store import VariantStore

# The task name; it belongs with the others in slimbert/tasks.py once the lead moves it there.
_KEEP = 2  # variants a worker keeps loaded

_lock = threading.Lock()
_loaded: OrderedDict[tuple[str, str, str, str], Predictor] = OrderedDict()


def _predictor(settings: Settings, family: str, variant: str) -> Predictor:
    store = VariantStore(settings.store_dir)
    manifest = store.manifest(family, variant)
    device = "gpu" if torch.cuda.is_available() else "cpu"
    # created_at in the key: a republished variant is loaded afresh, never served stale.
    key = (str(settings.store_dir), family, variant, manifest.created_at.isoformat())
    with _lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
        store.verify(manifest)
        predictor = load_variant(manifest, store.variant_dir(family, variant), device,
                                 threads=settings.inference_threads or None)
        _loaded[key] = predictor
        while len(_loaded) > _KEEP:
            _loaded.popitem(last=False)
        return predictor


def predict_texts(settings: Settings, family: str, variant: str, texts: list[str]) -> dict[str, Any]:
    """Predict ``texts`` with a stored variant on this process's best device; the answer is JSON."""
    start = time.perf_counter()
    predictor = _predictor(settings, family, variant)
    out = predictor.predict(texts)
    return {
        "family": family, "variant": variant, "runtime": predictor.runtime, "device": predictor.device,
        "host": socket.gethostname(),
        "predictions": [{"label": p.label, "label_id": p.label_id, "score": p.score, "scores": p.scores}
                        for p in out.predictions],
        "tokenize_ms": out.tokenize_ms, "model_ms": out.model_ms,
        "worker_ms": (time.perf_counter() - start) * 1000,
    }
