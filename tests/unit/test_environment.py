"""Environment description: content, speed, and never raising."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from slimbert import hardware as environment
from slimbert.hardware import CPU_FLAGS_OF_INTEREST, describe_environment, library_version


def test_describes_this_machine() -> None:
    env = describe_environment()
    assert env["cpu"]["logical_cores"] == os.cpu_count()
    assert set(env["cpu"]["flags"]) == set(CPU_FLAGS_OF_INTEREST)
    assert all(isinstance(v, bool) for v in env["cpu"]["flags"].values())
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["cuda"]["available"] == torch.cuda.is_available()
    assert env["libraries"]["torch"] == torch.__version__
    assert set(env["libraries"]) >= {"torch", "transformers", "onnxruntime", "optimum", "bitsandbytes"}
    assert env["python"] and env["platform"]
    json.dumps(env)  # stored beside results, so it must serialize


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo")
def test_cpu_model_read_from_proc() -> None:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model_lines = [line for line in lines if line.startswith("model name")]
    if model_lines:
        assert describe_environment()["cpu"]["model_name"] == model_lines[0].split(":", 1)[1].strip()


def test_cpuinfo_parsing(tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text(
        "processor\t: 0\nmodel name\t: Fake Xeon 9000\nflags\t\t: fpu avx2 avx512f amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    model, flags = environment._read_cpuinfo(str(fake))
    assert model == "Fake Xeon 9000"
    assert {"avx2", "avx512f", "amx_tile"} <= flags and "avx512_vnni" not in flags


def test_fast() -> None:
    describe_environment()  # first call may pay for imports
    start = time.perf_counter()
    describe_environment()
    assert time.perf_counter() - start < 1.0


def test_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("no /proc here")

    monkeypatch.setattr(environment, "_read_cpuinfo", broken)
    monkeypatch.setattr(torch, "get_num_threads", broken)
    monkeypatch.setattr(environment.platform, "platform", broken)
    env = describe_environment()
    assert env["cpu"]["flags"] == {flag: False for flag in CPU_FLAGS_OF_INTEREST}
    assert env["torch_threads"] is None
    assert env["platform"] is None


def test_missing_library_is_none() -> None:
    assert library_version("surely-not-installed-dist", "surely_not_installed_module") is None
    assert library_version("numpy", "numpy") is not None


def test_cpu_label_names_the_model_and_only_the_flags_present() -> None:
    env = {"cpu": {"model_name": "Some CPU", "flags": {"avx2": True, "avx512_vnni": False, "amx_int8": True}}}
    assert environment.cpu_label(env) == "Some CPU [avx2,amx_int8]"
