"""The API launcher adds SLIMBERT_API_WORKERS to uvicorn's arguments, and the processes share the cores."""

from __future__ import annotations

import os

import pytest

from app.serve import uvicorn_args
from app.serving.engine import intra_op_threads
from slimbert.config import Settings


def test_workers_come_from_the_settings_unless_given() -> None:
    base = ["--factory", "app.main:create_app", "--port", "8000"]
    assert uvicorn_args(base, 3) == [*base, "--workers", "3"]
    assert uvicorn_args([*base, "--workers", "2"], 3) == [*base, "--workers", "2"]
    assert uvicorn_args([*base, "--workers=2"], 3) == [*base, "--workers=2"]


def test_intra_op_threads_are_shared_among_processes_and_forward_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    def threads(**kw: int) -> int:
        return intra_op_threads(Settings(_env_file=None, **kw))  # type: ignore[call-arg, arg-type]
    assert threads() == 8
    assert threads(api_workers=2) == 4
    assert threads(api_workers=2, serve_forward_workers=2) == 2
    assert threads(api_workers=16) == 1
    assert threads(api_workers=2, inference_threads=3) == 3
