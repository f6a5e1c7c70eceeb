"""Serving at the speed of the model: SlimBERT's POST /predict against a plain FastAPI + transformers
pipeline server on the same folder, and against the in-process predictor (a measurement, not a test).

Starts, on loopback, SlimBERT's API (``python -m app.serve``, uvicorn, on the store's family) and the
peer (``benchmarks/peer_server.py``, ``pipeline("text-classification")`` on the family's
``baseline-fp32`` folder). Drives both with ``wrk`` (an external load generator; Debian: ``apt-get
install -y wrk``) and a Lua script that posts one SST-2 dev sentence per request, cycling through
``--texts`` of them. Rounds are interleaved (peer, SlimBERT pruned-int8, SlimBERT baseline-fp32, repeat)
at each client count, after a warm-up of each. Each round ends, with the servers idle, with the
in-process predictor on the same texts as the API loads it (``load_variant``, the API's thread count,
in the main thread): after a 1-client round, p50 of ``predict`` at batch 1 over every text, once each
(tokenization included, as in the API's figure); after a 32-client round, batched throughput (batches
of 32 in the order sent, and sorted by length). So served and in-process figures drift together.
``--api-workers 1,2`` also serves pruned-int8 from servers with that many API processes. wrk shares
the cores with the servers: the figures are for the whole box, as a colocated load generator sees it.

    .venv/bin/python benchmarks/bench_serving.py --duration 10 --rounds 2 [--family F] [--soak 600] \
        [--write-doc docs/PERFORMANCE.md]

``--soak 600`` adds the 10-minute run at the largest client count (after the rounds, same server): its
non-2xx count and the API's resident memory before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import torch

from slimbert.config import Settings
from slimbert.hardware import cpu_label, describe_environment
from slimbert.inference.bucketing import classify_all
from slimbert.inference.loader import load_variant
from slimbert.report.results import write_section
from slimbert.store.bucket import open_variant_store
from slimbert.store.store import VariantStore

ROOT = Path(__file__).resolve().parents[1]
INT8, FP32 = "pruned-int8", "baseline-fp32"
ROUTE = "FastAPI route (fast path off)"
MAKE_ONE = "./run.sh up --exit-when-done --preset quick"
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {%s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKJSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, \\"p99_us\\": %%d, "
    .. "\\"non2xx\\": %%d, \\"socket_errors\\": %%d}\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def sst2_texts(settings: Settings, n: int) -> list[str]:
    dev = (settings.sst2_dir or Path()) / "dev.tsv"
    if not dev.is_file():
        raise SystemExit(f"SST-2 dev not found at {dev}: set SLIMBERT_SST2_DIR")
    return [line.split("\t")[0] for line in dev.read_text().splitlines()[1:] if line.strip()][:n]


def pick_family(store: VariantStore, family: str | None) -> str:
    families = [family] if family else store.families()
    for fam in families:
        names = {m.variant for m in store.manifests(fam)}
        if {INT8, FP32} <= names:
            return fam
    raise SystemExit(f"no family with {INT8} and {FP32} in {store.root}; make one with `{MAKE_ONE}` "
                     "(or point SLIMBERT_STORE_DIR / --store at a store that has one)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"{cmd[2]} did not start: {log.read_text()[-2000:]}")


def slimbert_server(store_dir: Path, api_workers: int, threads: int, tmp: Path, fast_path: bool = True
                    ) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    # Only what this benchmark sets: every other setting at its default, whatever this shell exports.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMBERT_")}
    env.update({"SLIMBERT_STORE_DIR": str(store_dir), "SLIMBERT_REDIS_URL": "redis://127.0.0.1:1/0",
                "SLIMBERT_REAPER_INTERVAL_S": "0", "SLIMBERT_API_WORKERS": str(api_workers),
                "SLIMBERT_INFERENCE_THREADS": str(threads), "SLIMBERT_SERVE_FAST_PATH": str(fast_path).lower(),
                "PYTHONPATH": str(ROOT)})
    cmd = [sys.executable, "-m", "app.serve", "--factory", "app.main:create_app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log"]
    return start(cmd, env, tmp / f"slimbert-{api_workers}{'' if fast_path else '-route'}.log", port), port


def peer_server(model_dir: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMBERT_")}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "peer_server.py"), str(model_dir), "--port", str(port)]
    return start(cmd, env, tmp / "peer.log", port), port


def wrk(url: str, lua: Path, clients: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(lua), url],
                         capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    raw = json.loads(line.removeprefix("WRKJSON "))
    return {"rps": raw["requests"] / (raw["duration_us"] / 1e6), "p50": raw["p50_us"] / 1000,
            "p99": raw["p99_us"] / 1000, "non2xx": raw["non2xx"] + raw["socket_errors"], "requests": raw["requests"]}


class InProcess:
    """The predictor alone, in this (main) thread, on the same texts, loaded as the API loads it. It is
    measured inside every round, between the served targets, so drift in the machine's speed between runs
    hits both sides of a comparison alike."""

    def __init__(self, store: VariantStore, family: str, variant: str, texts: list[str], threads: int) -> None:
        manifest = store.manifest(family, variant)
        self.predictor = load_variant(manifest, store.variant_dir(family, variant), threads=threads)
        self.texts = texts
        for t in texts[:20]:
            self.predictor.predict([t])
        classify_all(self.predictor, texts[:64], batch_size=32, bucket=False)  # warm the batch-32 shapes
        self.rounds: dict[str, list[float]] = {"p50": [], "batched_rps": [], "sorted_rps": []}

    def batch_one(self) -> None:
        """p50 of ``predict`` at batch 1 over every text (wrk cycles through all of them: the first 50 are
        shorter, median 20 tokens against 24), tokenization included as in the API's figure."""
        times = []
        for t in self.texts:
            start = time.perf_counter()
            self.predictor.predict([t])
            times.append((time.perf_counter() - start) * 1000)
        self.rounds["p50"].append(float(np.percentile(times, 50)))

    def batched(self) -> None:
        """Texts/s in batches of 32, in the order sent and sorted by length."""
        sent = classify_all(self.predictor, self.texts, batch_size=32, bucket=False)
        ordered = classify_all(self.predictor, self.texts, batch_size=32, bucket=True)
        self.rounds["batched_rps"].append(len(self.texts) / sent.seconds)
        self.rounds["sorted_rps"].append(len(self.texts) / ordered.seconds)

    def measure(self, clients: int) -> None:
        if clients == 1:
            self.batch_one()
        else:
            self.batched()

    def summary(self) -> dict[str, Any]:
        """Medians over rounds; a figure not measured in any round (no such client count) is measured now."""
        if not self.rounds["p50"]:
            self.batch_one()
        if not self.rounds["batched_rps"]:
            self.batched()
        out: dict[str, Any] = {k: float(statistics.median(v)) for k, v in self.rounds.items()}
        out.update({f"{k}_range": (min(v), max(v)) for k, v in self.rounds.items()})
        return out


def tokenize_where(store: VariantStore, family: str, variant: str, texts: list[str], threads: int
                   ) -> dict[str, float]:
    """Where tokenization goes: on the compute thread before each forward (serial, as served), or on
    another thread while the previous batch's forward runs (pipelined); batches of 32, texts/s."""
    pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(threads,))
    manifest = store.manifest(family, variant)
    p = pool.submit(load_variant, manifest, store.variant_dir(family, variant), threads=threads).result()
    batches = [texts[i: i + 32] for i in range(0, len(texts), 32)]
    pool.submit(lambda: [p.predict(b) for b in batches[:2]]).result()
    serial, piped = [], []
    for _ in range(2):
        start = time.perf_counter()
        pool.submit(lambda: [p.predict(b) for b in batches]).result()
        serial.append(time.perf_counter() - start)
        start = time.perf_counter()
        enc = p.encode(batches[0])
        for k in range(len(batches)):
            fut = pool.submit(p.forward, enc)
            if k + 1 < len(batches):
                enc = p.encode(batches[k + 1])
            fut.result()
        piped.append(time.perf_counter() - start)
    pool.shutdown()
    return {"serial_rps": len(texts) / min(serial), "pipelined_rps": len(texts) / min(piped)}


def med(rows: list[dict[str, float]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def spread(rows: list[dict[str, float]], key: str, fmt: str = ".1f") -> str:
    vals = [r[key] for r in rows]
    return f"{statistics.median(vals):{fmt}} ({min(vals):{fmt}}-{max(vals):{fmt}})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=None, help="a models_store (default: SLIMBERT_STORE_DIR)")
    ap.add_argument("--family", default=None, help="default: the newest family with pruned-int8 and baseline-fp32")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per round and target")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", default="1,32", help="comma-separated client counts")
    ap.add_argument("--texts", type=int, default=500, help="SST-2 dev sentences cycled through")
    ap.add_argument("--api-workers", default="1", help="comma-separated API process counts for pruned-int8")
    ap.add_argument("--threads", type=int, default=0,
                    help="SLIMBERT_INFERENCE_THREADS of the servers and the in-process threads (0: the API's default)")
    ap.add_argument("--fast-path-ab", action="store_true",
                    help="also serve pruned-int8 from a server with SLIMBERT_SERVE_FAST_PATH=false (every request "
                         "through the FastAPI route), interleaved in the same rounds")
    ap.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                    help="then one long run of pruned-int8 at the largest client count (600: the 10-minute run)")
    ap.add_argument("--write-doc", type=Path, default=None, metavar="FILE", help="e.g. docs/PERFORMANCE.md")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: on Debian or Ubuntu, `apt-get install -y wrk`")

    settings = Settings()
    store = VariantStore(args.store) if args.store else open_variant_store(settings)
    family = pick_family(store, args.family)
    texts = sst2_texts(settings, args.texts)
    clients = [int(c) for c in args.clients.split(",")]
    workers = [int(w) for w in args.api_workers.split(",")]
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    soak: dict[str, float] = {}
    threads = args.threads or cores  # what the API gives one forward worker in one process
    torch.set_num_threads(threads)
    local_runs = {v: InProcess(store, family, v, texts, threads) for v in (INT8, FP32)}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        lua = tmp / "post.lua"
        lua.write_text(LUA % ", ".join(f"[==[{json.dumps({'text': t})}]==]" for t in texts))
        servers = {1: slimbert_server(store.root, 1, args.threads, tmp)}
        extra: list[tuple[subprocess.Popen[bytes], int]] = []
        peer = peer_server(store.variant_dir(family, FP32), tmp)
        base = {w: f"http://127.0.0.1:{port}/predict?family={family}&variant=" for w, (_, port) in servers.items()}
        targets = {"peer (pipeline, baseline-fp32)": f"http://127.0.0.1:{peer[1]}/predict",
                   f"slimbert {INT8}": base[1] + INT8, f"slimbert {FP32}": base[1] + FP32}
        if args.fast_path_ab:
            route = slimbert_server(store.root, 1, args.threads, tmp, fast_path=False)
            extra.append(route)
            targets[f"slimbert {INT8}, {ROUTE}"] = (
                f"http://127.0.0.1:{route[1]}/predict?family={family}&variant={INT8}")
        try:
            for url in targets.values():  # load and warm every variant outside the timed rounds
                wrk(url, lua, 4, 3)
            for c in clients:
                for r in range(args.rounds):
                    for name, url in targets.items():
                        row = wrk(url, lua, c, args.duration)
                        results.setdefault((name, c), []).append(row)
                        print(f"{c:3d} clients round {r + 1} {name:32s} {row['rps']:7.1f} req/s  p50 {row['p50']:6.1f} "
                              f"ms  p99 {row['p99']:6.1f} ms  non-2xx {row['non2xx']:.0f}", flush=True)
                    for v, ref in local_runs.items():  # the servers idle meanwhile
                        ref.measure(c)
                        print(f"{c:3d} clients round {r + 1} in process {v:20s} "
                              + (f"p50 {ref.rounds['p50'][-1]:6.2f} ms" if c == 1 else
                                 f"{ref.rounds['batched_rps'][-1]:7.1f} texts/s as sent, "
                                 f"{ref.rounds['sorted_rps'][-1]:7.1f} sorted"), flush=True)
            if args.soak:
                soak = soak_run(servers[1][0], targets[f"slimbert {INT8}"], lua, max(clients), args.soak)
            for w in workers:
                if w == 1:
                    continue
                servers[w] = slimbert_server(store.root, w, args.threads, tmp)
                url = f"http://127.0.0.1:{servers[w][1]}/predict?family={family}&variant={INT8}"
                wrk(url, lua, 8, 4)
                for c in clients:
                    for r in range(args.rounds):
                        row = wrk(url, lua, c, args.duration)
                        results.setdefault((f"slimbert {INT8}, {w} API processes", c), []).append(row)
                        print(f"{c:3d} clients round {r + 1} {w} API processes {row['rps']:7.1f} req/s  p50 "
                              f"{row['p50']:6.1f} ms  p99 {row['p99']:6.1f} ms", flush=True)
        finally:
            for proc, _ in [*servers.values(), *extra, peer]:
                proc.terminate()
                proc.wait(timeout=30)
    local = {v: ref.summary() for v, ref in local_runs.items()}
    del local_runs  # their ONNX Runtime and torch thread pools must not idle beside the next measurement
    local[INT8].update(tokenize_where(store, family, INT8, texts, threads))
    env = describe_environment()
    report(args, family, clients, workers, results, local, env, cores, threads, load_before, soak)


def rss_mb(proc: subprocess.Popen[bytes]) -> float:
    """Resident memory of a server and its children (uvicorn's workers), MB."""
    root = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1e6


def soak_run(proc: subprocess.Popen[bytes], url: str, lua: Path, clients: int, seconds: float) -> dict[str, float]:
    """One long run: every answer must be a 2xx, and memory must not climb."""
    before = rss_mb(proc)
    row = wrk(url, lua, clients, seconds)
    row.update(seconds=seconds, clients=clients, rss_before=before, rss_after=rss_mb(proc))
    print(f"soak {seconds:g} s at {clients} clients: {row['requests']:.0f} requests, {row['rps']:.1f} req/s, "
          f"p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms, non-2xx {row['non2xx']:.0f}, "
          f"RSS {before:.0f} -> {row['rss_after']:.0f} MB", flush=True)
    return row


def report(args: argparse.Namespace, family: str, clients: list[int], workers: list[int],
           results: dict[tuple[str, int], list[dict[str, float]]], local: dict[str, dict[str, Any]],
           env: dict[str, Any], cores: int, threads: int, load_before: float,
           soak: dict[str, float] | None = None) -> None:
    peer_name = "peer (pipeline, baseline-fp32)"
    command = ".venv/bin/python benchmarks/bench_serving.py " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("--write-doc") and a != str(args.write_doc)).strip()
    head = (f"CPU {cpu_label(env)}, {cores} cores, torch {torch.__version__} and onnxruntime "
            f"{env['libraries'].get('onnxruntime')}; intra-op threads: {threads} in process and in a 1-process API "
            f"({'set by --threads' if args.threads else 'the default, cores // API processes'}), 1 forward worker; "
            f"family `{family}`; {args.texts} SST-2 dev sentences, one per request; wrk -t1, "
            f"{args.duration:g} s per round and target, {args.rounds} interleaved rounds, median (min-max) over "
            f"rounds; 1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
            f"{dt.date.today().isoformat()}.")
    lines = [f"Command: `{command}`", "", head, "",
             "| target | clients | req/s | p50 ms | p99 ms | non-2xx |", "| --- | --- | --- | --- | --- | --- |"]
    for (name, c), rows in results.items():
        lines.append(f"| {name} | {c} | {spread(rows, 'rps')} | {spread(rows, 'p50', '.2f')} | "
                     f"{spread(rows, 'p99', '.2f')} | {sum(r['non2xx'] for r in rows):.0f} |")
    for c in clients:
        fast, route = results.get((f"slimbert {INT8}", c)), results.get((f"slimbert {INT8}, {ROUTE}", c))
        if fast and route:
            lines += ["", f"Fast path against the FastAPI route, {INT8}, {c} client(s), same rounds: p50 "
                      f"{med(fast, 'p50'):.2f} against {med(route, 'p50'):.2f} ms, {med(fast, 'rps'):.1f} against "
                      f"{med(route, 'rps'):.1f} req/s ({med(fast, 'rps') / med(route, 'rps'):.2f}x)."]
    lines += ["", "In process, the same texts, as the API loads each variant, in the main thread, measured in every "
              "round right after the served targets (the servers idle), median (min-max) over rounds:", "",
              "| variant | predict p50 at batch 1, ms | batches of 32 as sent, texts/s | sorted by length, texts/s |",
              "| --- | --- | --- | --- |"]

    def cell(m: dict[str, Any], key: str, fmt: str) -> str:
        lo, hi = m[f"{key}_range"]
        return f"{m[key]:{fmt}} ({lo:{fmt}}-{hi:{fmt}})"

    for v, m in local.items():
        lines.append(f"| {v} | {cell(m, 'p50', '.2f')} | {cell(m, 'batched_rps', '.1f')} | "
                     f"{cell(m, 'sorted_rps', '.1f')} |")
    if soak:
        lines += ["", f"Long run, {INT8}, {soak['clients']:.0f} clients, {soak['seconds']:g} s (after the rounds, "
                  f"on the same server): {soak['requests']:.0f} requests, {soak['rps']:.1f} req/s, p50 "
                  f"{soak['p50']:.2f} ms, p99 {soak['p99']:.2f} ms, non-2xx and socket errors {soak['non2xx']:.0f}; "
                  f"API resident memory {soak['rss_before']:.0f} MB before, {soak['rss_after']:.0f} MB after."]
    m = local[INT8]
    lines += ["", f"Tokenization, {INT8}, batches of 32 as sent on a compute thread (best of 2 passes): tokenized "
              f"on that thread before each forward {m['serial_rps']:.1f} texts/s; tokenized on another thread "
              f"while the previous forward runs {m['pipelined_rps']:.1f} texts/s."]
    lines += ["", "Targets (2-core machine):", ""]
    lines += [f"- {t}" for t in targets(results, local, clients, peer_name, soak)]
    text = "\n".join(lines)
    print("\n" + text)
    if args.write_doc:
        label = "bench-serving" if workers == [1] else "bench-serving-processes"  # the sweep has its own
        write_section(args.write_doc, label, text)
        print(f"\nwrote the {label} section of {args.write_doc}")


def targets(results: dict[tuple[str, int], list[dict[str, float]]], local: dict[str, dict[str, Any]],
            clients: list[int], peer_name: str, soak: dict[str, float] | None = None) -> list[str]:
    out = []

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    lo, hi = min(clients), max(clients)
    for v in (INT8, FP32):
        rows = results.get((f"slimbert {v}", lo))
        if rows and lo == 1:
            served, ref = med(rows, "p50"), local[v]["p50"]
            out.append(f"1 client, {v}: p50 {served:.2f} ms <= in-process {ref:.2f} + 1 ms: "
                       f"{verdict(served <= ref + 1)}")
    int8_lo, peer_lo = results.get((f"slimbert {INT8}", lo)), results.get((peer_name, lo))
    if int8_lo and peer_lo and lo == 1:
        ratio = med(int8_lo, "rps") / med(peer_lo, "rps")
        out.append(f"1 client, {INT8} >= 2.5x the peer's rate: {ratio:.2f}x: {verdict(ratio >= 2.5)}")
    int8_hi, peer_hi = results.get((f"slimbert {INT8}", hi)), results.get((peer_name, hi))
    if int8_hi and peer_hi and hi > 1:
        rps = med(int8_hi, "rps")
        for label, key in (("batches of 32 as sent", "batched_rps"), ("sorted by length", "sorted_rps")):
            ratio = rps / local[INT8][key]
            out.append(f"{hi} clients, {INT8} >= 0.8x in-process batched throughput ({label}, "
                       f"{local[INT8][key]:.1f}/s): {ratio:.2f}x: {verdict(ratio >= 0.8)}")
        vs_peer = rps / med(peer_hi, "rps")
        out.append(f"{hi} clients, {INT8} >= 10x the peer: {vs_peer:.2f}x: {verdict(vs_peer >= 10)}")
        p50, p99 = med(int8_hi, "p50"), med(int8_hi, "p99")
        out.append(f"{hi} clients, {INT8} p99 <= 4x p50: {p99:.1f} / {p50:.1f} ms = {p99 / p50:.2f}x: "
                   f"{verdict(p99 <= 4 * p50)}")
    non2xx = sum(r["non2xx"] for rows in results.values() for r in rows)
    out.append(f"0 non-2xx (and socket errors) over every run: {non2xx:.0f}: {verdict(non2xx == 0)}")
    if soak:
        minutes = soak["seconds"] / 60
        out.append(f"0 non-2xx in a {minutes:g}-minute run at {soak['clients']:.0f} clients: {soak['non2xx']:.0f}: "
                   f"{verdict(soak['non2xx'] == 0 and minutes >= 10)}"
                   + ("" if minutes >= 10 else " (shorter than the 10 minutes asked)"))
    else:
        out.append("0 non-2xx in a 10-minute run at 32 clients: not run (`--soak 600`)")
    return out


if __name__ == "__main__":
    main()
