"""The whole GPU path once, on a machine with one NVIDIA GPU (run by scripts/gpu_check.sh).

Starts Redis (if none answers), the API, a real GPU worker and a CPU worker (the INT8 half of a job runs
on the cpu queue); runs the ``every-stage-tiny`` job on a tiny random BERT queued on the GPU worker; then
a benchmark on both devices; prints the stages with the device each ran on, the showdown with its GPU
columns, and a short summary. Exits non-zero when anything that should have run on the GPU did not.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.ensure_redis import answers, start  # noqa: E402
from scripts.up import follow, spawn, wait_ready  # noqa: E402
from slimbert.config import get_settings  # noqa: E402

PORT = 8077


def tiny_encoder(path: Path) -> Path:
    """A random 4-layer BERT encoder with the packaged MiniLM tokenizer: the job fine-tunes it (on the GPU)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from slimbert.models import _packaged_dir

    tokenizer = AutoTokenizer.from_pretrained(str(_packaged_dir("sentence-transformers/all-MiniLM-L6-v2")))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device visible to torch: nothing to check (scripts/gpu_check.sh installs a CUDA wheel)")
        return 2
    settings = get_settings()
    if not answers(settings.redis_url):
        start(settings.redis_url, ROOT / "var" / "redis")
    logs = ROOT / "var" / "logs" / "gpu-check"
    logs.mkdir(parents=True, exist_ok=True)
    model = tiny_encoder(ROOT / "var" / "gpu-check" / "tiny-encoder")
    py = sys.executable
    procs = [spawn("api", [py, "-m", "app.serve", "--factory", "app.main:create_app", "--host", "127.0.0.1",
                           "--port", str(PORT)], logs)]
    for queue in ("gpu", "cpu"):
        procs.append(spawn(f"worker-{queue}", [py, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queue,
                                               "-c", "1", "-n", f"{queue}-check@%h", "--loglevel", "INFO"], logs))
    failures: list[str] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=60) as client:
            wait_ready(client, "gpu")
            family = "gpu-check-tiny"
            resp = client.post("/jobs/compress", json={"preset": "every-stage-tiny", "device": "gpu", "recipe": {
                "base_model": str(model), "family": family}, "benchmark": None})
            resp.raise_for_status()
            job = follow(client, resp.json()["job_id"])
            print(f"\ncompress job: {job['state']} {job.get('error') or ''}")
            for s in job["stages"]:
                print(f"  {s['name']:<32} {s['state']:<8} {s.get('device') or '-':<7} {s.get('queue') or '-':<4} "
                      f"{(s.get('detail') or {}).get('reason', '')}")
            if job["state"] != "succeeded":
                failures.append(f"compress job {job['state']}: {job.get('error')}")
            trained = [s for s in job["stages"] if s["name"] in ("finetune", "prune-layers", "prune-heads-ffn")
                       and s["state"] == "done"]
            failures += [f"{s['name']} ran on {s.get('device')}, not cuda:0" for s in trained
                         if s.get("device") != "cuda:0"]
            resp = client.post("/jobs/benchmark", json={"family": family, "devices": ["cpu", "gpu"],
                                                        "batch_sizes": [1, 8], "runs": 10, "warmup": 2})
            resp.raise_for_status()
            bench = follow(client, resp.json()["job_id"])
            report = client.get("/reports/showdown", params={"family": family}).json()
            print("\n" + client.get("/reports/showdown", params={"family": family, "format": "markdown"}).text)
            gpu_rows = {r["variant"]: r["gpu"] for r in report["rows"]}
            measured = [v for v, cell in gpu_rows.items() if cell.get("latency_ms")]
            if not measured:
                failures.append("no variant has a GPU latency in the showdown")
            summary = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                       "compress": job["state"], "benchmark": bench["state"],
                       "stages_on_cuda": [s["name"] for s in trained if s.get("device") == "cuda:0"],
                       "gpu_latency_ms_batch1": {v: gpu_rows[v]["latency_ms"] for v in measured},
                       "gpu_na": {v: c["na"] for v, c in gpu_rows.items() if c.get("na")},
                       "failures": failures}
            print("summary:", json.dumps(summary, indent=1))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except Exception:
                os.killpg(p.pid, signal.SIGKILL)
    return 1 if failures else 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"gpu check finished in {time.monotonic() - started:.0f} s with exit code {code}")
    sys.exit(code)
