"""The machine: CPU model and flags (VNNI, AMX, bf16), CUDA, threads and library versions. One place, used by all.

Numbers without their environment cannot be compared: an INT8 speed-up depends on VNNI/AMX,
latency on thread count, and both on library versions. Every probe here is guarded, so a missing
file or library yields ``None`` rather than an exception.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")

CPU_FLAGS_OF_INTEREST = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)

# (distribution name, top-level module) for each library whose version we record.
_LIBRARIES = {
    "torch": ("torch", "torch"),
    "transformers": ("transformers", "transformers"),
    "onnxruntime": ("onnxruntime", "onnxruntime"),
    "optimum": ("optimum", "optimum"),
    "optimum_onnx": ("optimum-onnx", "optimum"),
    "bitsandbytes": ("bitsandbytes", "bitsandbytes"),
    "torchao": ("torchao", "torchao"),
    "numpy": ("numpy", "numpy"),
    "slimbert": ("slimbert", "slimbert"),
}


def _safe(probe: Callable[[], T], default: T) -> T:
    try:
        return probe()
    except Exception:  # describing the environment must never fail a benchmark
        logger.debug("environment probe %s failed", getattr(probe, "__name__", probe), exc_info=True)
        return default


def _read_cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str | None, set[str]]:
    """Model name and flag set of the first processor listed."""
    model: str | None = None
    flags: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model is None:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
            if model is not None and flags:
                break
    return model, flags


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (empty when /proc/cpuinfo cannot be read); they cannot change while we run."""
    empty: tuple[str | None, set[str]] = (None, set())
    return frozenset(_safe(_read_cpuinfo, empty)[1])


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def has_vnni(flags: frozenset[str] | set[str] | None = None) -> bool:
    """VNNI multiplies u8 by s8 in one instruction with 32-bit sums; without it int8 weights need 7 bits."""
    return bool({"avx512_vnni", "avx_vnni"} & (cpu_flags() if flags is None else flags))


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 math (AVX512-BF16 or AMX-BF16), so bf16 is worth running on CPU."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def detect_isa() -> str:
    """The ``AutoQuantizationConfig`` preset that fits this CPU: 'avx512_vnni', 'avx2' or 'arm64'."""
    if platform.machine().lower() in {"aarch64", "arm64"}:
        return "arm64"
    if "avx512_vnni" in cpu_flags():
        return "avx512_vnni"
    # Plain AVX-512 or older x86: the avx2 preset (with reduce_range) is the safe choice.
    return "avx2"


def inductor_int8_unavailable() -> str | None:
    """Why the Inductor INT8 runtime cannot run in this process, or None when it can."""
    if not is_x86():
        return f"the Inductor INT8 path lowers to oneDNN's x86 kernels; this machine is {platform.machine()}"
    if _safe(lambda: importlib.util.find_spec("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer"),
             None) is None:
        return "torchao's X86InductorQuantizer is not importable; install torchao"
    return None


def cuda_available() -> bool:
    return _safe(torch.cuda.is_available, False)


def _cpu_section() -> dict[str, Any]:
    empty: tuple[str | None, set[str]] = (None, set())
    model, flags = _safe(_read_cpuinfo, empty)
    affinity = _safe(lambda: len(os.sched_getaffinity(0)), None)
    return {
        "model_name": model or _safe(platform.processor, "") or None,
        "flags": {flag: flag in flags for flag in CPU_FLAGS_OF_INTEREST},
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
    }


def _torch_section() -> dict[str, Any]:
    info: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "interop_threads": _safe(torch.get_num_interop_threads, None),
        "cuda_available": False,
        "cuda_device_name": None,
        "cuda_total_memory_mb": None,
        "cuda_version": torch.version.cuda,
    }
    if _safe(torch.cuda.is_available, False):
        info["cuda_available"] = True
        info["cuda_device_name"] = _safe(lambda: torch.cuda.get_device_name(0), None)
        info["cuda_total_memory_mb"] = _safe(
            lambda: torch.cuda.get_device_properties(0).total_memory / (1024.0 * 1024.0), None
        )
    return info


def library_version(distribution: str, module: str) -> str | None:
    """Installed version of ``distribution``, or None when it is absent or its module cannot be found.

    Reads package metadata and locates the module without executing it: importing bitsandbytes,
    for one, takes seconds and prints warnings on machines without a GPU.
    """
    try:
        if importlib.util.find_spec(module) is None:
            return None
        return importlib.metadata.version(distribution)
    except Exception:  # a broken install reads as "not available"
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries whose behaviour our numbers depend on (None where absent)."""
    return {name: library_version(dist, mod) for name, (dist, mod) in _LIBRARIES.items()}


def describe_environment() -> dict[str, Any]:
    """Machine and software description: CPU, cores, torch threads, CUDA device, library versions.

    Never raises; unknown values are None. Fast apart from importing torch the first time.
    """
    torch_info = _safe(_torch_section, {"threads": None, "cuda_available": False})
    no_cpu: dict[str, Any] = {}
    return {
        "cpu": _safe(_cpu_section, no_cpu),
        "torch_threads": torch_info.get("threads"),
        "torch_interop_threads": torch_info.get("interop_threads"),
        "cuda": {
            "available": torch_info.get("cuda_available", False),
            "device_name": torch_info.get("cuda_device_name"),
            "total_memory_mb": torch_info.get("cuda_total_memory_mb"),
            "cuda_version": torch_info.get("cuda_version"),
        },
        "libraries": library_versions(),
        "python": _safe(platform.python_version, None),
        "platform": _safe(platform.platform, None),
        "machine": _safe(platform.machine, None),
    }


def cpu_label(env: dict[str, Any] | None = None) -> str:
    """"AMD EPYC [avx2,avx512f,...]": the CPU and the flags it has, as every printed figure names it."""
    cpu = (env or describe_environment())["cpu"]
    flags = ",".join(k for k, on in (cpu.get("flags") or {}).items() if on)
    return f"{cpu.get('model_name') or platform.machine()} [{flags}]"


def worker_capabilities() -> dict[str, Any]:
    """Capabilities a worker reports when it starts (served to ``GET /workers``), probed in a child process.

    A Celery prefork parent must never initialise CUDA: the children it forks could not use it then
    (fp16 variants, the GPU benchmark column, GPU predictions). So CUDA, threads and CPU flags are
    probed by ``python -m slimbert.hardware`` in a fresh process, and only its JSON comes back.
    """
    here = {"hostname": socket.gethostname(), "pid": os.getpid(), "platform": platform.platform()}
    try:
        done = subprocess.run([sys.executable, "-m", "slimbert.hardware"], capture_output=True, text=True,
                              timeout=120, check=True)
        probed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        logger.warning("capability probe failed: %s", exc)
        probed = {"probe_error": str(exc)[:300]}
    return {**here, **probed}


if __name__ == "__main__":  # the probe worker_capabilities runs: one JSON line on stdout
    print(json.dumps(describe_environment(), default=str))  # noqa: T201
