"""Wall-clock latency measurement: warm-up, device synchronization, percentiles, interleaving.

Every timing here is the latency a caller would see: on CUDA we synchronize the device before
starting the clock (so earlier queued work is not billed to this run) and after the call (so the
asynchronous kernels it launched are), in the manner of optimum-benchmark and nanoGPT's bench.py.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

logger = logging.getLogger(__name__)

ThroughputStatistic = Literal["mean", "p50"]


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated latency samples, all in milliseconds.

    Percentiles use numpy's default linear interpolation; ``std`` is the sample standard
    deviation (ddof=1), 0.0 for a single run.
    """

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    runs: int
    unit: str = "ms"

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Summarize raw per-run latencies (milliseconds); raises ValueError on empty or non-finite input."""
        arr = np.asarray(samples_ms, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError("from_samples needs a non-empty 1-D sequence of latencies in ms")
        if not np.all(np.isfinite(arr)):
            raise ValueError("latency samples must be finite numbers")
        p50, p90, p99 = np.percentile(arr, [50.0, 90.0, 99.0])
        return cls(
            p50=float(p50),
            p90=float(p90),
            p99=float(p99),
            mean=float(arr.mean()),
            std=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            min=float(arr.min()),
            max=float(arr.max()),
            runs=int(arr.size),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)


def _validate_device(device: str) -> str:
    if device == "cpu" or device == "cuda" or device.startswith("cuda:"):
        return device
    raise ValueError(f"device must be 'cpu' or 'cuda' (optionally 'cuda:N'), got {device!r}")


def _synchronizer(device: str) -> Callable[[], None]:
    """Return a no-op for CPU, a device-wide synchronize for CUDA."""
    if device == "cpu":
        return lambda: None
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return lambda: torch.cuda.synchronize(device)


def _validate_counts(warmup: int, runs: int) -> None:
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")


def _timed_call(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Run ``fn`` once and return its wall-clock latency in ms, bracketed by device syncs."""
    sync()
    start = time.perf_counter_ns()
    fn()
    sync()
    return (time.perf_counter_ns() - start) / 1e6


def time_callable(
    fn: Callable[[], object],
    *,
    warmup: int = 10,
    runs: int = 100,
    device: str = "cpu",
) -> LatencyStats:
    """Time ``fn()`` ``runs`` times after ``warmup`` untimed calls and summarize the latencies.

    On CUDA the device is synchronized before and after every timed call, so the figure is the
    end-to-end latency including kernels still in flight when ``fn`` returns.
    """
    _validate_counts(warmup, runs)
    sync = _synchronizer(_validate_device(device))
    for _ in range(warmup):
        fn()
    sync()
    samples = [_timed_call(fn, sync) for _ in range(runs)]
    return LatencyStats.from_samples(samples)


def interleaved(
    benchmarks: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 10,
    runs: int = 100,
    device: str = "cpu",
) -> dict[str, LatencyStats]:
    """Time several callables round-robin (A B C A B C ...) and summarize each.

    Interleaving spreads slow drift of the machine (thermal throttling, a noisy neighbour, CPU
    frequency changes) evenly over all candidates instead of penalising whichever ran last. Every
    callable is warmed up ``warmup`` times, also round-robin, before any timed run.
    """
    if not benchmarks:
        raise ValueError("interleaved needs at least one benchmark")
    _validate_counts(warmup, runs)
    sync = _synchronizer(_validate_device(device))
    names = list(benchmarks)
    for _ in range(warmup):
        for name in names:
            benchmarks[name]()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(runs):
        for name in names:
            samples[name].append(_timed_call(benchmarks[name], sync))
    stats = {name: LatencyStats.from_samples(values) for name, values in samples.items()}
    logger.debug("interleaved p50 ms: %s", {n: round(s.p50, 3) for n, s in stats.items()})
    return stats


def throughput(batch_size: int, stats: LatencyStats, *, statistic: ThroughputStatistic = "mean") -> float:
    """Sequences per second for a batch of ``batch_size`` taking ``stats`` per call.

    The default uses the mean latency because sustained throughput is total sequences over total
    time, which is exactly ``batch_size / mean``; ``statistic='p50'`` gives the typical-call rate.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if statistic == "mean":
        latency_ms = stats.mean
    elif statistic == "p50":
        latency_ms = stats.p50
    else:
        raise ValueError(f"statistic must be 'mean' or 'p50', got {statistic!r}")
    if latency_ms <= 0 or not math.isfinite(latency_ms):
        raise ValueError(f"cannot derive throughput from a latency of {latency_ms} ms")
    return batch_size * 1000.0 / latency_ms
