"""Latency measurement: percentile summaries, warm-up, interleaving, throughput."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from slimbert.benchmark.latency import LatencyStats, interleaved, throughput, time_callable


def test_stats_match_numpy_for_known_sequence() -> None:
    samples = [float(x) for x in np.random.default_rng(0).permutation(np.arange(1, 101))] + [250.0, 3.5]
    stats = LatencyStats.from_samples(samples)
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    assert (stats.p50, stats.p90, stats.p99) == pytest.approx((p50, p90, p99))
    assert stats.mean == pytest.approx(np.mean(samples))
    assert stats.std == pytest.approx(np.std(samples, ddof=1))
    assert (stats.min, stats.max, stats.runs, stats.unit) == (1.0, 250.0, 102, "ms")


def test_stats_simple_values_and_errors() -> None:
    stats = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0])
    assert stats.p50 == 2.5
    assert stats.p90 == pytest.approx(3.7)  # linear interpolation between 3 and 4
    single = LatencyStats.from_samples([5.0])
    assert (single.p50, single.p99, single.std) == (5.0, 5.0, 0.0)
    assert single.to_dict()["runs"] == 1
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])
    with pytest.raises(ValueError):
        LatencyStats.from_samples([1.0, float("nan")])


def test_time_callable_warms_up_before_timing() -> None:
    calls = 0

    def slow_at_first() -> None:
        nonlocal calls
        calls += 1
        time.sleep(0.05 if calls <= 3 else 0.002)

    stats = time_callable(slow_at_first, warmup=3, runs=5, device="cpu")
    assert calls == 8
    assert stats.runs == 5
    assert 2.0 <= stats.min and stats.max < 40.0  # the 50 ms warm-up calls were not timed


def test_interleaved_runs_round_robin() -> None:
    order: list[str] = []
    benchmarks = {name: (lambda n=name: order.append(n)) for name in "ABC"}
    stats = interleaved(benchmarks, warmup=2, runs=3, device="cpu")
    assert "".join(order) == "ABC" * 5  # 2 warm-up rounds, then 3 timed rounds
    assert set(stats) == {"A", "B", "C"} and all(s.runs == 3 for s in stats.values())


def test_interleaved_times_each_callable_separately() -> None:
    stats = interleaved({"fast": lambda: None, "slow": lambda: time.sleep(0.003)}, warmup=1, runs=5)
    assert stats["slow"].min >= 3.0
    assert stats["fast"].p50 < stats["slow"].p50


def test_argument_validation() -> None:
    with pytest.raises(ValueError):
        time_callable(lambda: None, warmup=0, runs=0)
    with pytest.raises(ValueError):
        time_callable(lambda: None, warmup=0, runs=1, device="tpu")
    with pytest.raises(ValueError):
        interleaved({}, warmup=0, runs=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_request_without_cuda_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="CUDA"):
        time_callable(lambda: None, warmup=0, runs=1, device="cuda")


def test_throughput() -> None:
    stats = LatencyStats.from_samples([2.0, 4.0, 6.0])
    assert throughput(8, stats) == pytest.approx(8 * 1000 / 4.0)
    assert throughput(8, LatencyStats.from_samples([2.0, 2.0, 8.0]), statistic="p50") == pytest.approx(4000.0)
    with pytest.raises(ValueError):
        throughput(0, stats)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_timing_includes_kernel_time() -> None:
    x = torch.randn(2048, 2048, device="cuda")
    small = time_callable(lambda: x[:64, :64] @ x[:64, :64], warmup=3, runs=10, device="cuda")
    big = time_callable(lambda: [x @ x for _ in range(10)], warmup=3, runs=10, device="cuda")
    # Without synchronization both would measure only the (similar) launch overhead.
    assert big.p50 > small.p50
