"""OpenMP's wait policy for a worker's training: ACTIVE (spinning, libgomp's default) against PASSIVE.

Times MiniLM-L6 training steps (batch 32, one short question) in a fresh process per policy, interleaved
over rounds, with torch's default threads; prints the CPU and the load average beside the ratio, because
the policies differ most when another process wants the cores (as the API does beside a worker).

    .venv/bin/python benchmarks/bench_omp_wait_policy.py [--rounds 2] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slimbert.hardware import cpu_label  # noqa: E402

CHILD = """
import sys, time, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from slimbert.models import _packaged_dir
p = str(_packaged_dir("sentence-transformers/all-MiniLM-L6-v2"))
tok = AutoTokenizer.from_pretrained(p)
m = AutoModelForSequenceClassification.from_pretrained(p, num_labels=6)
opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
enc = tok(["what is the capital city of the country of france ?"] * 32, return_tensors="pt", padding=True)
y = torch.zeros(32, dtype=torch.long)
def step():
    m(**enc, labels=y).loss.backward(); opt.step(); opt.zero_grad()
for _ in range(2):
    step()
t = time.perf_counter()
for _ in range(int(sys.argv[1])):
    step()
print((time.perf_counter() - t) / int(sys.argv[1]), torch.get_num_threads())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"ACTIVE": [], "PASSIVE": []}
    threads = 0
    for _ in range(args.rounds):
        for policy in seconds:
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.steps)], cwd=ROOT, check=True,
                                 capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": policy})
            value, threads_s = out.stdout.split()[-2:]
            seconds[policy].append(float(value))
            threads = int(threads_s)
    print(f"CPU {cpu_label()}, {os.cpu_count()} cores, {threads} torch threads, load average "
          f"{os.getloadavg()[0]:.1f}; {args.rounds} rounds x {args.steps} steps, batch 32")
    for policy, values in seconds.items():
        print(f"{policy:>7}: {', '.join(f'{v:.3f}' for v in values)} s per step")
    ratio = min(seconds["ACTIVE"]) / min(seconds["PASSIVE"])
    print(f"ACTIVE / PASSIVE (best of each): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
