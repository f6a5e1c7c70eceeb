"""Live latency per variant: a rolling window for p50/p95/p99 and requests/s, and Prometheus histograms.

Percentiles interpolate linearly between order statistics (numpy's default), over the requests that
finished within the last ``window_s`` seconds; requests/s is that count divided by ``window_s``
(or by the time since the first request, while the process is younger than the window).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

Key = tuple[str, str]
_MS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, linear interpolation."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class Sample:
    at: float
    total_ms: float
    model_ms: float
    queue_ms: float
    texts: int


class LatencyWindow:
    """Requests of one variant that finished in the last ``window_s`` seconds."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self.started = clock()
        self._samples: deque[Sample] = deque()
        self._lock = threading.Lock()

    def add(self, total_ms: float, model_ms: float = 0.0, queue_ms: float = 0.0, texts: int = 1) -> None:
        with self._lock:
            self._samples.append(Sample(self.clock(), total_ms, model_ms, queue_ms, texts))
            self._trim()

    def _trim(self) -> None:
        horizon = self.clock() - self.window_s
        while self._samples and self._samples[0].at < horizon:
            self._samples.popleft()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._trim()
            samples = list(self._samples)
        span = min(self.window_s, max(self.clock() - self.started, 1e-9))
        total = sorted(s.total_ms for s in samples)
        out: dict[str, Any] = {"window_s": self.window_s, "requests": len(samples),
                               "texts": sum(s.texts for s in samples),
                               "requests_per_s": round(len(samples) / span, 3)}
        for name, values in (("total_ms", total), ("model_ms", sorted(s.model_ms for s in samples)),
                             ("queue_ms", sorted(s.queue_ms for s in samples))):
            out[name] = ({f"p{q}": round(percentile(values, q), 3) for q in (50, 95, 99)} if values
                         else {"p50": None, "p95": None, "p99": None})
        out.update({"p50_ms": out["total_ms"]["p50"], "p95_ms": out["total_ms"]["p95"],
                    "p99_ms": out["total_ms"]["p99"]})
        return out


class LatencyBoard:
    """One window per variant plus the Prometheus metrics of the process (own registry per app)."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[Key, LatencyWindow] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        labels = ["family", "variant"]
        self.latency = Histogram("slimbert_predict_latency_seconds", "POST /predict wall time in the API, by stage",
                                 [*labels, "stage"], buckets=_MS_BUCKETS, registry=self.registry)
        self.batch = Histogram("slimbert_forward_batch_texts", "texts per forward pass", labels,
                               buckets=_BATCH_BUCKETS, registry=self.registry)
        self.requests = Counter("slimbert_predict_requests", "answered POST /predict calls",
                                [*labels, "ran_on"], registry=self.registry)

    def window(self, key: Key) -> LatencyWindow:
        with self._lock:
            if key not in self._windows:
                self._windows[key] = LatencyWindow(self.window_s, self.clock)
            return self._windows[key]

    def record(self, key: Key, *, total_ms: float, model_ms: float, queue_ms: float, texts: int,
               ran_on: str) -> None:
        self.window(key).add(total_ms, model_ms, queue_ms, texts)
        for stage, ms in (("total", total_ms), ("model", model_ms), ("queue", queue_ms)):
            self.latency.labels(*key, stage).observe(ms / 1000)
        self.requests.labels(*key, ran_on).inc()

    def record_batch(self, key: Key, texts: int) -> None:
        self.batch.labels(*key).observe(texts)

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._windows)

    def stats(self, key: Key) -> dict[str, Any]:
        return {"family": key[0], "variant": key[1], **self.window(key).stats()}

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)
