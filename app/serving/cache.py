"""An LRU of loaded predictors. A variant loads once, even under concurrent first requests."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from slimbert.inference.predictor import Predictor

Key = tuple[str, str]


class PredictorCache:
    def __init__(self, capacity: int, loader: Callable[[Key], Predictor]) -> None:
        self.capacity = capacity
        self.loader = loader
        self._items: OrderedDict[Key, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Key, threading.Lock] = {}

    def get(self, key: Key) -> Predictor:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        # Load outside the cache lock so other variants stay servable meanwhile.
        with key_lock:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
            predictor = self.loader(key)
            with self._lock:
                self._items[key] = predictor
                self._items.move_to_end(key)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
                self._loading.pop(key, None)
            return predictor

    def evict(self, key: Key) -> None:
        with self._lock:
            self._items.pop(key, None)

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._items)
