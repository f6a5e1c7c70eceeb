"""The one LRU of loaded predictors (the API's and the GPU worker's), bounded by count and by memory.
A variant loads once, even under concurrent first requests.

Memory is *estimated* by the variant's size on disk (``manifest.size_bytes``): it is known before
loading, deterministic, and close to the resident weights for fp32/fp16 torch and ONNX INT8 (the
runtimes map the weights about 1:1). The RSS growth measured around each load is recorded too, for
information only: with concurrent loads and allocator caching it is too noisy to bound on.
The most recently used variant always stays, even when it alone exceeds the budget.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psutil

from slimbert.inference.predictor import Predictor

# (family, variant) in the API; the worker adds the store and the manifest time, so a republished
# variant is a new key and loads afresh.
Key = TypeVar("Key", bound=Hashable)


@dataclass
class Entry:
    predictor: Predictor
    size_bytes: int
    rss_growth_bytes: int
    load_ms: float
    loaded_at: float = field(default_factory=time.time)


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


class PredictorCache(Generic[Key]):
    def __init__(
        self,
        capacity: int,
        loader: Callable[[Key], Predictor],
        *,
        max_bytes: int | None = None,
        size_of: Callable[[Key], int] | None = None,
    ) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.loader = loader
        self.size_of = size_of or (lambda _key: 0)
        self.loads = 0
        self.evictions: list[Key] = []
        self._items: OrderedDict[Key, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Key, threading.Lock] = {}

    def get(self, key: Key) -> Predictor:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key].predictor
            key_lock = self._loading.setdefault(key, threading.Lock())
        # Load outside the cache lock so other variants stay servable meanwhile.
        with key_lock:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key].predictor
            size = self.size_of(key)
            rss0, start = _rss(), time.perf_counter()
            predictor = self.loader(key)
            entry = Entry(predictor, size, max(0, _rss() - rss0), (time.perf_counter() - start) * 1000)
            with self._lock:
                self.loads += 1
                self._items[key] = entry
                self._items.move_to_end(key)
                self._shrink()
                self._loading.pop(key, None)
            return predictor

    def _shrink(self) -> None:
        while len(self._items) > 1 and (
            len(self._items) > self.capacity
            or (self.max_bytes is not None and sum(e.size_bytes for e in self._items.values()) > self.max_bytes)
        ):
            old, _ = self._items.popitem(last=False)
            self.evictions.append(old)

    def discard(self, key: Key) -> bool:
        """Release a loaded predictor (a republished variant's old version); True if it was loaded."""
        with self._lock:
            return self._items.pop(key, None) is not None

    def keys(self) -> list[Key]:
        """Loaded variants, least recently used first."""
        with self._lock:
            return list(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def info(self) -> dict[Key, dict[str, Any]]:
        with self._lock:
            return {
                key: {"memory_mb_estimate": round(e.size_bytes / 1e6, 2),
                      "rss_growth_mb": round(e.rss_growth_bytes / 1e6, 2),
                      "load_ms": round(e.load_ms, 1), "loaded_at": e.loaded_at,
                      "runtime": e.predictor.runtime, "device": e.predictor.device}
                for key, e in self._items.items()
            }

    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.size_bytes for e in self._items.values())
