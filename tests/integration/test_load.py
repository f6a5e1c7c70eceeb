"""Load on a real uvicorn process over loopback: 2,000 predictions from 32 concurrent clients across 3
variants (torch fp32 at two depths and ONNX Runtime INT8), with API keys on. Zero errors allowed; p99 is
printed and written to ``var/logs/load-test.json``."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from slimbert.compression.onnx_int8 import quantize_dynamic_int8
from slimbert.config import Settings
from tests.api.test_api import FAMILY, _publish_variant
from tests.conftest import save_tiny_classifier
from tests.integration.conftest import ROOT, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REQUESTS, CLIENTS = 2000, 32
VARIANTS = ("baseline-fp32", "pruned-fp32", "pruned-int8")
KEY = "load-key-7c1d9e22"
TEXTS = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés .",
         "it 's fine", "an utterly lifeless , joyless affair", "moving and funny , with a great cast ."]


def _publish_variants(settings: Settings, tmp: Path, tiny_model_dir: Path) -> None:
    _publish_variant(settings, tiny_model_dir, "baseline-fp32")
    _publish_variant(settings, save_tiny_classifier(tmp / "shallow", num_layers=1), "pruned-fp32")
    int8 = tmp / "int8"
    int8.mkdir()
    quantize_dynamic_int8(tiny_model_dir, int8)
    _publish_variant(settings, int8, "pruned-int8")
    # _publish_variant writes a torch manifest; the int8 files need the ONNX Runtime one.
    manifest = settings.store_dir / FAMILY / "pruned-int8" / "manifest.json"
    data = json.loads(manifest.read_text())
    data.update(runtime="onnxruntime", precision="int8")
    manifest.write_text(json.dumps(data))


async def _drive(url: str) -> tuple[list[float], list[str], dict[str, int]]:
    latencies: list[float] = []
    errors: list[str] = []
    per_variant = dict.fromkeys(VARIANTS, 0)
    counter = iter(range(REQUESTS))
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30, headers={"X-API-Key": KEY}) as http:
        async def client(seed: int) -> None:
            rng = random.Random(seed)
            for i in counter:
                variant = VARIANTS[i % len(VARIANTS)]
                texts = rng.sample(TEXTS, rng.randint(1, 4))
                start = time.perf_counter()
                try:
                    resp = await http.post("/predict", params={"family": FAMILY, "variant": variant},
                                           json={"texts": texts})
                except httpx.HTTPError as exc:
                    errors.append(f"{variant}: {type(exc).__name__}: {exc}")
                    continue
                latencies.append((time.perf_counter() - start) * 1000)
                body = resp.json()
                if resp.status_code != 200 or len(body.get("predictions", [])) != len(texts) \
                        or body.get("variant") != variant:
                    errors.append(f"{variant}: {resp.status_code} {resp.text[:200]}")
                else:
                    per_variant[variant] += 1

        await asyncio.gather(*(client(seed) for seed in range(CLIENTS)))
    return latencies, errors, per_variant


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def test_32_concurrent_callers_each_variant_no_errors(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(store_dir=tmp_path / "store", redis_url="redis://127.0.0.1:1/0",
                        _env_file=None)  # type: ignore[call-arg]
    _publish_variants(settings, tmp_path, tiny_model_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = settings_env(settings) | {"SLIMBERT_API_KEYS": json.dumps({KEY: "predict"}),
                                    "SLIMBERT_OPEN_PREDICT": "false"}
    log = tmp_path / "uvicorn.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "info"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"uvicorn did not start\n{log.read_text()}"
            time.sleep(0.2)
        for variant in VARIANTS:  # load each once, as a deployment's warm-up would
            resp = httpx.post(f"{url}/predict", params={"family": FAMILY, "variant": variant},
                              json={"text": "warm"}, headers={"X-API-Key": KEY}, timeout=60)
            assert resp.status_code == 200, resp.text
        start = time.perf_counter()
        latencies, errors, per_variant = asyncio.run(_drive(url))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)

    figures: dict[str, Any] = {
        "requests": REQUESTS, "clients": CLIENTS, "variants": per_variant, "errors": len(errors),
        "wall_s": round(wall, 2), "throughput_rps": round(REQUESTS / wall, 1),
        "p50_ms": round(_pct(latencies, 50), 2), "p90_ms": round(_pct(latencies, 90), 2),
        "p99_ms": round(_pct(latencies, 99), 2), "max_ms": round(max(latencies), 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
    }
    print(f"load: {json.dumps(figures)}")
    out = ROOT / "var" / "logs" / "load-test.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")
    assert errors == [], errors[:5]
    assert sum(per_variant.values()) == REQUESTS and all(per_variant.values())
    access = log.read_text()
    assert access.count('"POST /predict?') >= REQUESTS, "uvicorn's access log did not record the calls"
    assert KEY not in access, "the API key reached the access log"
