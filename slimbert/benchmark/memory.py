"""Peak memory of running a variant: CPU RSS in a fresh subprocess, CUDA allocator peaks.

CPU peak RSS is measured in a *fresh* child process because RSS is per process and sticky: a
parent that has already loaded other variants (or run the test suite) carries their pages, and
the allocator rarely returns freed memory to the OS. The child imports the target's module
(torch, transformers, ...), reads its baseline, calls the target once, reads its peak, and prints
one JSON line that the parent parses. The reported ``peak_mb`` is the increment over the baseline,
so interpreter and library import costs, identical for every variant, cancel out.
"""
from __future__ import annotations

import gc
import importlib
import json
import logging
import resource
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

_MARKER = "SLIMBERT_PEAK_MEMORY "
_MIB = 1024.0 * 1024.0

METHOD_HWM_RESET = (
    "Linux VmHWM after resetting it via /proc/self/clear_refs right after imports, "
    "minus VmRSS at that moment"
)
METHOD_MAXRSS = (
    "ru_maxrss after the run minus ru_maxrss right after imports (high-water marks; "
    "underestimates when an import transiently used more than the run adds)"
)
METHOD_CUDA = ("the variant's own tensors on the GPU plus torch.cuda.max_memory_allocated during one batch above "
               "memory_allocated before it")
# The one definition both devices follow (the showdown's footnote): what the variant holds while it runs one
# batch at the largest batch size, its weights included. CPU: a fresh process's RSS peak above its RSS after
# imports (weights, activations, the runtime's arenas); GPU: the variant's own tensors plus the batch's peak
# allocations above them (the other variants loaded in the same process are not counted).
PEAK_MEMORY_DEFINITION = ("peak memory = weights plus one batch at the largest batch size, per variant; CPU: "
                          "RSS peak of a fresh process above its RSS after imports; GPU: the variant's tensors "
                          "plus the CUDA allocator's peak during the batch")


@dataclass(frozen=True)
class PeakMemory:
    """Peak memory of one measured run, in MiB.

    ``peak_mb`` is the headline figure: the increment of the peak over ``baseline_mb``.
    ``absolute_peak_mb`` is the raw high-water mark; ``method`` says how both were obtained.
    """

    peak_mb: float
    baseline_mb: float
    absolute_peak_mb: float
    method: str
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)


def _proc_status_kb(field: str) -> int | None:
    """Read a ``VmRSS``/``VmHWM`` style line (kB) from /proc/self/status; None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _maxrss_mb() -> float:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return value / _MIB if sys.platform == "darwin" else value / 1024.0


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter to the current RSS (Linux >= 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _proc_status_kb("VmHWM") is not None


def _resolve(target: str) -> Callable[..., Any]:
    _validate_target(target)
    module_name, _, func_name = target.partition(":")
    func = importlib.import_module(module_name)
    for part in func_name.split("."):
        func = getattr(func, part)
    if not callable(func):
        raise TypeError(f"{target!r} is not callable")
    return func


def _child_main(argv: list[str]) -> int:
    """Child side: ``argv = [target, kwargs_json]``. Prints one marker line of JSON on stdout."""
    target, kwargs = argv[0], json.loads(argv[1])
    func = _resolve(target)  # imports happen here, before the baseline
    gc.collect()
    if _reset_high_water_mark():
        baseline_kb = _proc_status_kb("VmRSS") or 0
        baseline = baseline_kb / 1024.0
        method = METHOD_HWM_RESET
    else:
        baseline = _maxrss_mb()
        method = METHOD_MAXRSS
    result = func(**kwargs)
    if method == METHOD_HWM_RESET:
        peak = (_proc_status_kb("VmHWM") or 0) / 1024.0
    else:
        peak = _maxrss_mb()
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        result = None
    report = {"baseline_mb": baseline, "absolute_peak_mb": peak, "method": method, "result": result}
    sys.stdout.write(_MARKER + json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


def measure_fresh_process(
    target: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    timeout_s: float = 600.0,
    python: str | None = None,
) -> PeakMemory:
    """Peak RSS increment of calling ``target(**kwargs)`` once in a fresh Python subprocess.

    ``target`` is an importable ``'module:function'``; ``kwargs`` must be JSON-serializable. The
    child sees the parent's ``sys.path``, so anything importable here is importable there.
    Raises RuntimeError with the child's stderr tail when it fails or times out.
    """
    _validate_target(target)
    payload = json.dumps(dict(kwargs or {}))
    bootstrap = (
        "import sys, json; "
        "sys.path[:0] = [p for p in json.loads(sys.argv[1]) if p not in sys.path]; "
        "from slimbert.benchmark.memory import _child_main; "
        "sys.exit(_child_main(sys.argv[2:]))"
    )
    cmd = [python or sys.executable, "-c", bootstrap, json.dumps(sys.path), target, payload]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"memory probe for {target!r} timed out after {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-15:]
        raise RuntimeError(f"memory probe for {target!r} exited with {proc.returncode}:\n" + "\n".join(tail))
    reports = [line[len(_MARKER):] for line in proc.stdout.splitlines() if line.startswith(_MARKER)]
    if not reports:
        raise RuntimeError(f"memory probe for {target!r} printed no report")
    report = json.loads(reports[-1])
    baseline = float(report["baseline_mb"])
    absolute = float(report["absolute_peak_mb"])
    result = PeakMemory(
        peak_mb=max(0.0, absolute - baseline),
        baseline_mb=baseline,
        absolute_peak_mb=absolute,
        method=str(report["method"]),
        device="cpu",
    )
    logger.info("peak RSS of %s: +%.1f MiB over %.1f MiB baseline", target, result.peak_mb, baseline)
    return result


def _validate_target(target: str) -> None:
    module_name, sep, func_name = target.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")


def cpu_peak_rss_mb(
    target: str, kwargs: Mapping[str, Any] | None = None, *, timeout_s: float = 600.0
) -> PeakMemory:
    """CPU peak-memory figure for the showdown; see :func:`measure_fresh_process`."""
    return measure_fresh_process(target, kwargs, timeout_s=timeout_s)


def module_mb(module: object) -> float:
    """MiB of a torch module's parameters and buffers (0 for anything that is not a module)."""
    if not isinstance(module, torch.nn.Module):
        return 0.0
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / _MIB


def cuda_peak_memory_mb(fn: Callable[[], object], device: str | int = "cuda", resident_mb: float = 0.0
                        ) -> PeakMemory:
    """``resident_mb`` (the variant's own tensors on the device, its weights) plus the peak CUDA memory
    allocated while ``fn()`` runs above what was allocated before: the same quantity as the CPU's fresh-process
    peak, weights included (see ``PEAK_MEMORY_DEFINITION``).

    Counts the caching allocator's allocated bytes (``max_memory_allocated``), not reserved
    blocks or the CUDA context, so it is comparable across variants in one process.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_peak_memory_mb needs CUDA, which is not available")
    torch.cuda.synchronize(device)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device) / _MIB
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / _MIB
    return PeakMemory(
        peak_mb=resident_mb + max(0.0, peak - baseline),
        baseline_mb=baseline,
        absolute_peak_mb=peak,
        method=METHOD_CUDA,
        device=str(torch.device(device) if isinstance(device, str) else torch.device("cuda", device)),
    )
