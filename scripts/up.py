"""The main job: the stack up, the default compression job, the showdown, a sample prediction.

Starts Redis if needed, the API (uvicorn) and a CPU Celery worker (plus a GPU worker where CUDA is
present), submits a compression job through the HTTP API, follows it with a progress bar, prints
the result table and a prediction with its latency, then serves until Ctrl-C (or exits with
``--exit-when-done``). Logs go to ``var/logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.ensure_redis import answers, start  # noqa: E402
from slimbert.config import get_settings  # noqa: E402

SAMPLE = "a gorgeous , witty , seductive movie ."
SAMPLE_PAIR = ("The company said profits rose 5 percent .", "Profits at the company were up 5 percent , it said .")


def spawn(name: str, args: list[str], logs: Path) -> subprocess.Popen[bytes]:
    log = (logs / f"{name}.log").open("ab")
    print(f"starting {name}: {' '.join(args)}  (log: var/logs/{name}.log)")
    # A new session, so Ctrl-C in this terminal reaches us first and we stop the children in order.
    return subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(client: httpx.Client, need_queue: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            body = client.get("/readyz").json()
            if body.get("ready") and need_queue in body.get("live_queues", []):
                return body
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the stack did not become ready in {timeout:.0f}s (last /readyz: {body}); see var/logs/")


def follow(client: httpx.Client, job_id: str) -> dict[str, Any]:
    with tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}] {postfix}") as bar:
        while True:
            job = client.get(f"/jobs/{job_id}").json()
            bar.n = job.get("progress", 0)
            bar.set_description(f"{job['state']}: {job.get('stage') or '-'}")
            bar.refresh()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(1)


def store_dataset(args: argparse.Namespace, client: httpx.Client) -> str:
    """``--dataset``: one PATH (a file, or a folder of train/validation/test files) stored through POST /datasets
    by path, or SPLIT=FILE items uploaded as those splits (GLUE's dev.tsv as ``test``: its test labels are
    hidden). A dataset of that name already stored is used as it is."""
    items = dict(item.split("=", 1) for item in args.dataset if "=" in item)
    paths = [item for item in args.dataset if "=" not in item]
    if (len(paths), bool(items)) not in ((1, False), (0, True)):
        raise SystemExit("--dataset: give one PATH, or SPLIT=FILE items (train=..., validation=..., test=...)")
    name = args.dataset_name or Path(paths[0] if paths else items["train"]).stem.lower()
    if client.get(f"/datasets/{name}").status_code == 200:
        print(f"dataset {name}: already stored, used as it is")
        return name
    fields = {"name": name, "text_column": args.text_column, "label_column": args.label_column,
              **({"text_pair_column": args.text_pair_column} if args.text_pair_column else {})}
    if paths:
        resp = client.post("/datasets", json={**fields, "path": paths[0]})
    else:
        handles = {split: Path(f).open("rb") for split, f in items.items()}
        try:
            resp = client.post("/datasets", data=fields,
                               files={split: (Path(items[split]).name, fh) for split, fh in handles.items()})
        finally:
            for fh in handles.values():
                fh.close()
    if resp.status_code != 201:
        raise SystemExit(f"dataset refused ({resp.status_code}): {resp.text}")
    m = resp.json()
    print(f"dataset {name}: {m['task']} task, labels {m['label_names']}, rows "
          + ", ".join(f"{k} {v['rows']}" for k, v in m["splits"].items()) + f", sha256 {m['sha256'][:12]}")
    return name


def write_results(args: argparse.Namespace, family: str, wall: float, client: httpx.Client) -> None:
    from slimbert.records import Showdown
    from slimbert.report.results import section, write_section
    from slimbert.store.manifest import VariantManifest

    manifests = [VariantManifest.model_validate(m) for m in client.get("/variants", params={"family": family}).json()]
    report = Showdown.model_validate(client.get("/reports/showdown", params={"family": family}).json())
    command = f"./run.sh up {shlex.join(sys.argv[1:])}"  # quoted as typed: the section's command runs as written
    label = args.label or args.preset
    write_section(args.write_results, label, section(label, command, manifests, report, wall))
    print(f"wrote the {label} section of {args.write_results}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--recipe", default="{}", help="JSON overrides merged onto the preset")
    parser.add_argument("--no-benchmark", action="store_true", help="skip the benchmark that follows the job")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--exit-when-done", action="store_true", help="stop the stack after the prediction")
    parser.add_argument("--write-results", type=Path, default=None, metavar="FILE",
                        help="write this run's section (variants, showdown, recipe) into FILE, e.g. docs/RESULTS.md")
    data = parser.add_argument_group("your data (default: the embedded GLUE SST-2)")
    data.add_argument("--dataset", metavar="PATH|SPLIT=FILE", action="append", default=[],
                      help="a file or folder of train/validation/test files (CSV, TSV, JSONL, Parquet) under "
                      "SLIMBERT_ALLOWED_DATA_ROOTS, or repeated SPLIT=FILE uploads; stored through POST /datasets")
    data.add_argument("--dataset-name", help="its name in the store (default: the file or folder name)")
    data.add_argument("--text-column", default="text")
    data.add_argument("--text-pair-column", default=None, help="the second sentence of a pair task")
    data.add_argument("--label-column", default="label")
    parser.add_argument("--label", default=None, help="the results section's name (default: the preset's)")
    args = parser.parse_args()

    # The API learns where it listens, so it can refuse to listen beyond loopback without keys.
    os.environ["SLIMBERT_API_HOST"] = args.host
    settings = get_settings()
    if not answers(settings.redis_url):
        start(settings.redis_url, ROOT / "var" / "redis")
    print(f"redis: {settings.redis_url} answers")
    logs = ROOT / "var" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    procs = [
        # app.serve: uvicorn with SLIMBERT_API_WORKERS processes
        spawn("api", [py, "-m", "app.serve", "--factory", "app.main:create_app", "--host", args.host,
                      "--port", str(args.port)], logs),
        spawn("worker-cpu", [py, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "cpu", "-c", "1",
                             "-n", f"cpu-{args.port}@%h", "--loglevel", "INFO"], logs),
    ]
    import torch

    if torch.cuda.is_available():
        procs.append(spawn("worker-gpu", [py, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "gpu",
                                          "-c", "1", "-n", f"gpu-{args.port}@%h", "--loglevel", "INFO"], logs))
    else:
        print("no CUDA here: no GPU worker; GPU-preferring stages fall back to the cpu queue")

    def stop(*_: Any) -> None:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    headers = {"X-API-Key": k} if (k := next(iter(settings.api_keys), None)) else {}
    base = f"http://{args.host}:{args.port}"
    try:
        with httpx.Client(base_url=base, timeout=60, headers=headers) as client:
            wait_ready(client, "cpu")
            print(f"API ready at {base} (docs at {base}/docs); workers: "
                  + ", ".join(w["name"] for w in client.get("/workers").json()))
            started = time.monotonic()
            body: dict[str, Any] = {"preset": args.preset, "recipe": json.loads(args.recipe)}
            if args.dataset:
                body["recipe"]["dataset"] = store_dataset(args, client)
            if args.no_benchmark:
                body["benchmark"] = None
            resp = client.post("/jobs/compress", json=body)
            if resp.status_code != 202:
                raise SystemExit(f"job refused ({resp.status_code}): {resp.text}")
            accepted = resp.json()
            print(f"job {accepted['job_id']} queued on {accepted['queue']}"
                  + (f" ({accepted['fallback']})" if accepted.get("fallback") else ""))
            job = follow(client, accepted["job_id"])
            wall = time.monotonic() - started
            if job["state"] != "succeeded":
                raise SystemExit(f"job {job['state']}: {job.get('error')} (hint: {job.get('hint')})")
            print(f"\njob succeeded in {wall:.0f}s wall time; variants: {', '.join(job['variants'])}")
            bench_id = job["results"].get("benchmark_job_id")
            if bench_id:
                print(f"benchmark job {bench_id}: every variant, interleaved, on every live device")
                bench = follow(client, bench_id)
                if bench["state"] != "succeeded":
                    print(f"benchmark {bench['state']}: {bench.get('error')}")
            print()
            print(client.get("/reports/showdown", params={"family": job["family"], "format": "markdown"}).text)
            if args.write_results:
                write_results(args, job["family"], wall, client)
            # The first request loads the variant into the cache; time the second, warm one.
            sample: dict[str, Any] = ({"pairs": [list(SAMPLE_PAIR)]} if args.text_pair_column else {"text": SAMPLE})
            client.post("/predict", params={"family": job["family"]}, json=sample).raise_for_status()
            body = client.post("/predict", params={"family": job["family"]}, json=sample).json()
            p = body["predictions"][0]
            print(f"POST /predict?variant={body['variant']}  {sample}\n  -> {p['label']} (score {p['score']:.3f}); "
                  f"latency {body['latency_ms']:.1f} ms (model {body['model_ms']:.1f} ms, "
                  f"tokenize {body['tokenize_ms']:.2f} ms; {body['runtime']} on {body['device']}, batch 1)")
            if args.exit_when_done:
                return 0
            print(f"\nserving at {base}; Ctrl-C to stop")
            while all(p.poll() is None for p in procs):
                time.sleep(1)
            print("a process of the stack exited; see var/logs/")
            return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
