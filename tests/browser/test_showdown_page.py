"""The showdown page in a real browser: headless Chromium loads it from a live uvicorn on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from app.main import create_app
from slimbert.config import Settings
from tests.conftest import BENCH_FAMILY

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def base_url(benchmarked: tuple[Settings, str]) -> Iterator[str]:
    settings, _ = benchmarked
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=90)


def test_page_renders_table_and_charts(base_url: str, tmp_path: Path) -> None:
    url = f"{base_url}/reports/showdown?family={BENCH_FAMILY}&format=html"
    dom = _chromium(["--dump-dom", url], tmp_path).stdout
    assert '<table id="showdown">' in dom
    assert "baseline-fp32" in dom and "pruned-int8" in dom and "no live GPU worker" in dom
    assert dom.count("<svg") >= 3
    shot = tmp_path / "showdown.png"
    _chromium([f"--screenshot={shot}", "--window-size=1400,1800", url], tmp_path)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a blank page compresses far smaller
    keep = Path(__file__).resolve().parents[2] / "var" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "showdown.png")
