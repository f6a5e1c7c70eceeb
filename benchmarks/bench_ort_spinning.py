"""ONNX Runtime thread spinning: what it buys an ONNX variant alone, and what it costs a torch variant
timed (or served) beside it. Interleaved runs in one process, batch 1, 128 tokens.

    .venv/bin/python benchmarks/bench_ort_spinning.py [--family F] [--runs 30]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slimbert.benchmark.environment import describe_environment  # noqa: E402
from slimbert.benchmark.latency import interleaved  # noqa: E402
from slimbert.benchmark.runner import _inputs, model_call  # noqa: E402
from slimbert.config import get_settings  # noqa: E402
from slimbert.inference.loader import load_variant  # noqa: E402
from slimbert.inference.predictor import Predictor  # noqa: E402
from slimbert.store.store import VariantStore  # noqa: E402

TEXT = ["a gorgeous , witty , seductive movie ."]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default=None)
    parser.add_argument("--torch-variant", default="baseline-fp32")
    parser.add_argument("--onnx-variant", default="pruned-int8")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    store = VariantStore(get_settings().store_dir)
    family = args.family or store.newest_family()

    def load(variant: str, spinning: bool = False) -> Predictor:
        return load_variant(store.manifest(family, variant), store.variant_dir(family, variant),
                            ort_spinning=spinning)

    torch_p = load(args.torch_variant)
    calls = {"torch": model_call(torch_p, _inputs(torch_p, TEXT, 128))}
    rows = []
    for spinning in (True, False):
        onnx_p = load(args.onnx_variant, spinning)
        onnx_call = model_call(onnx_p, _inputs(onnx_p, TEXT, 128))
        mixed = interleaved({**calls, "onnx": onnx_call}, warmup=3, runs=args.runs)
        alone = interleaved({"onnx": onnx_call}, warmup=3, runs=args.runs)
        rows.append((spinning, mixed["torch"], mixed["onnx"], alone["onnx"]))
    env = describe_environment()
    print(f"# ONNX Runtime spinning, family {family}: {args.torch_variant} (torch) beside {args.onnx_variant} "
          f"(ONNX Runtime)\n\nCPU {env['cpu']['model_name']}, {env['torch_threads']} threads, batch 1, 128 tokens, "
          f"{args.runs} runs after 3 warm-up, p50 (std) ms, model time only.\n")
    print("| spinning | torch, interleaved with ONNX | ONNX, interleaved with torch | ONNX alone |")
    print("|---|---|---|---|")
    for spinning, t, o, a in rows:
        print(f"| {'on' if spinning else 'off'} | {t.p50:.2f} ({t.std:.2f}) | {o.p50:.2f} ({o.std:.2f}) | "
              f"{a.p50:.2f} ({a.std:.2f}) |")
    on, off = rows
    print(f"\nSpinning off: torch beside ONNX {on[1].p50 / off[1].p50:.2f}x faster; ONNX alone "
          f"{off[3].p50 / on[3].p50:.2f}x slower.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
