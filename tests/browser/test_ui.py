"""The serving page in headless Chromium, driven over the Chrome DevTools protocol: load the page, type
a sentence, submit, check the answer and the latency shown, take a screenshot.

CI needs Chromium: ``apt-get update && apt-get install -y chromium``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.main import create_app
from slimbert.config import Settings
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium is not installed; run: apt-get update && apt-get install -y chromium")
websockets_sync = pytest.importorskip("websockets.sync.client")

FAMILY = "tiny-sst2"
SENTENCE = "a gorgeous , witty , seductive movie ."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path, tiny_model_dir: Path) -> Iterator[str]:
    settings = Settings(store_dir=tmp_path / "store", redis_url="redis://127.0.0.1:1/0",
                        worker_ping_timeout_s=0.2, latency_stream_interval_s=0.25,
                        _env_file=None)  # type: ignore[call-arg]
    store = VariantStore(settings.store_dir)
    with store.staging(FAMILY, "baseline-fp32") as staged:
        shutil.copytree(tiny_model_dir, staged, dirs_exist_ok=True)
        store.publish(staged, VariantManifest(
            family=FAMILY, variant="baseline-fp32", runtime="torch", precision="fp32", base_model_id="tiny",
            technique=Technique(name="random-init"), labels={0: "negative", 1: "positive"}, num_parameters=1))
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                       timeout_graceful_shutdown=2))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


class Page:
    """The smallest CDP client: one page target, request/response by id, events ignored."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websockets_sync.connect(ws_url, max_size=None, open_timeout=10)
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self._id:
                assert "error" not in msg, msg
                return msg["result"]  # type: ignore[no-any-return]

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}: {self.js('document.body.innerText')}")


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1100,800", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "chromium.log").open("wb"), start_new_session=True)
    yield proc, profile
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes]) -> int:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        assert proc.poll() is None, "Chromium exited at start"
        assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
        time.sleep(0.1)
    return int(port_file.read_text().split()[0])


def test_page_types_submits_and_shows_answer_and_latency(
    server: str, chromium: tuple[subprocess.Popen[bytes], Path], tmp_path: Path,
) -> None:
    proc, profile = chromium
    port = _devtools_port(profile, proc)
    targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
    page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
    page.call("Page.enable")
    page.call("Page.navigate", url=f"{server}/ui")
    page.wait_for("document.readyState === 'complete' && document.getElementById('variant').options.length > 1")
    page.js(f"document.getElementById('variant').value = '{FAMILY}/baseline-fp32'")

    page.js("document.getElementById('text').focus()")
    page.call("Input.insertText", text=SENTENCE)  # typed, as a keyboard would
    assert page.js("document.getElementById('text').value") == SENTENCE
    box = page.js("(() => { const r = document.getElementById('submit').getBoundingClientRect();"
                  " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    for kind in ("mousePressed", "mouseReleased"):
        page.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    page.wait_for("document.body.dataset.answered === '1'")
    label = page.js("document.getElementById('answer-label').textContent")
    score = float(page.js("document.getElementById('answer-score').textContent"))
    total_ms = float(page.js("document.getElementById('total-ms').textContent"))
    expected = httpx.post(f"{server}/predict", params={"family": FAMILY, "variant": "baseline-fp32"},
                          json={"text": SENTENCE}, timeout=30).json()["predictions"][0]
    assert label == expected["label"] and score == pytest.approx(expected["score"], abs=1e-4)
    assert total_ms > 0
    # the live table, fed by the SSE stream, shows the variant with its latency
    row = f"document.querySelector('tr[data-variant=\"{FAMILY}/baseline-fp32\"]')"
    page.wait_for(f"{row} && Number({row}.querySelector('.count').textContent) >= 1")
    p50 = float(page.js(f"{row}.querySelector('.p50').textContent"))
    assert p50 > 0
    assert page.js("document.getElementById('stream-status').textContent") == "live"

    shot = tmp_path / "ui.png"
    shot.write_bytes(base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"]))
    assert shot.stat().st_size > 5000
    print(f"screenshot: {shot}")
    page.ws.close()
