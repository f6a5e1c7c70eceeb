"""Peak memory: fresh-subprocess RSS increments on CPU, allocator peaks on CUDA."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from slimbert.benchmark import memory
from slimbert.benchmark.memory import (
    METHOD_CUDA,
    METHOD_HWM_RESET,
    PeakMemory,
    cpu_peak_rss_mb,
    cuda_peak_memory_mb,
    measure_fresh_process,
    module_mb,
)

THIS = "tests.unit.test_memory"


# Targets run inside the child process; they must be importable module-level functions.
def allocate_mb(mb: int) -> int:
    """Touch ``mb`` MiB so the pages become resident (zero-filled allocations may not)."""
    block = b"\x01" * (mb * 1024 * 1024)
    return len(block)


def do_nothing() -> None:
    return None


def fail() -> None:
    raise RuntimeError("boom in child")


def test_allocation_shows_up_as_increment() -> None:
    result = measure_fresh_process(f"{THIS}:allocate_mb", {"mb": 50})
    assert isinstance(result, PeakMemory)
    assert 45.0 <= result.peak_mb <= 70.0
    assert result.absolute_peak_mb == pytest.approx(result.baseline_mb + result.peak_mb)
    assert result.device == "cpu"
    if sys.platform.startswith("linux"):
        assert result.method == METHOD_HWM_RESET


def test_idle_child_has_small_increment() -> None:
    result = cpu_peak_rss_mb(f"{THIS}:do_nothing")
    # The baseline includes the imported libraries (torch here), which must not count.
    assert result.baseline_mb > 20.0
    assert 0.0 <= result.peak_mb < 5.0


def test_child_failures_are_reported() -> None:
    with pytest.raises(RuntimeError, match="boom in child"):
        measure_fresh_process(f"{THIS}:fail", {})
    with pytest.raises(ValueError):
        measure_fresh_process("no_colon_here", {})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_peak_without_cuda_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="CUDA"):
        cuda_peak_memory_mb(lambda: None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_counts_a_temporary_tensor() -> None:
    def run() -> None:
        block = torch.ones(64 * 1024 * 1024 // 4, device="cuda")  # 64 MiB of float32
        del block

    result = cuda_peak_memory_mb(run)
    assert result.method == METHOD_CUDA
    assert result.peak_mb == pytest.approx(64.0, abs=2.0)
    assert result.device.startswith("cuda")


def test_child_falls_back_to_ru_maxrss(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(memory, "_reset_high_water_mark", lambda: False)
    assert memory._child_main([f"{THIS}:allocate_mb", json.dumps({"mb": 1})]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads(line.split(" ", 1)[1])
    assert report["method"] == memory.METHOD_MAXRSS
    assert report["absolute_peak_mb"] >= report["baseline_mb"] > 0
    assert report["result"] == 1024 * 1024


def test_module_mb_counts_parameters_and_buffers() -> None:
    from slimbert.benchmark.memory import module_mb

    layer = torch.nn.BatchNorm1d(1024)  # 2 x 1024 float32 parameters, 3 buffers (1024, 1024 and one int64)
    assert module_mb(layer) == pytest.approx((4 * 1024 * 4 + 8) / 2**20)
    assert module_mb(object()) == 0.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_includes_the_weights_like_the_cpu_peak() -> None:
    weights = torch.nn.Linear(2048, 2048).cuda()  # 16 MiB of float32 weights

    def run() -> None:
        weights(torch.ones(8, 2048, device="cuda"))

    result = cuda_peak_memory_mb(run, resident_mb=module_mb(weights))
    assert result.peak_mb >= 16.0 and result.peak_mb == pytest.approx(16.0 + (result.absolute_peak_mb
                                                                              - result.baseline_mb), abs=0.01)
