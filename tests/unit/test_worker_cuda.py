"""The prefork parent of a Celery worker never initialises CUDA: its forked children could not use it."""

from __future__ import annotations

from typing import Any

import pytest
import torch


def test_the_worker_parent_probes_capabilities_without_touching_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import celery_app

    calls: list[str] = []

    def touched(name: str) -> Any:
        def call(*_: Any, **__: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"torch.cuda.{name} called in the worker's parent process")
        return call

    # Every way the old handler reached CUDA in the parent: is_available (cuInit), the device name and
    # properties (a context), and lazy init.
    for name in ("is_available", "get_device_name", "get_device_properties", "init", "device_count"):
        monkeypatch.setattr(torch.cuda, name, touched(name))
    monkeypatch.setattr(celery_app, "_capabilities", {})
    celery_app._report_capabilities()
    assert calls == []
    caps = celery_app._capabilities
    # The probe ran in a child process and still reports the device (None here: no GPU on this machine).
    assert "available" in caps["cuda"] and caps["cpu"]["model_name"] and caps["torch_threads"]
    assert caps["started_at"] and caps["pid"] == __import__("os").getpid()
