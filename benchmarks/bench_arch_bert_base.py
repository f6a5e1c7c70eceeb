"""Architecture-only timing of bert-base through the showdown harness.

A random-weight bert-base (12 layers, hidden 768) and its 8-layer cut, FP32 eager, ONNX Runtime
dynamic INT8 (plain and fused) and PT2E INT8 compiled by Inductor, measured interleaved in one run
by the same harness as every showdown
(``slimbert.benchmark.runner.run_device_benchmark``). Random weights: latency and size only, no
accuracy. The published table (bert-base, CPU, batch 1, 128 tokens) stands beside it for scale.

    .venv/bin/python benchmarks/bench_arch_bert_base.py [--batch-sizes 1 8 32] [--runs 10] [--layers 8]
        [--max-autotune]

Every variant is built with slimbert's defaults; ``--max-autotune`` adds one more,
``pruned-int8-inductor-autotuned``, compiled with Inductor's ``max_autotune`` (off by default in recipes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification  # noqa: E402

from slimbert.benchmark.runner import BenchmarkSpec, run_device_benchmark  # noqa: E402
from slimbert.compression.inductor_int8 import quantize_inductor_int8  # noqa: E402
from slimbert.compression.layers import drop_layers  # noqa: E402
from slimbert.compression.onnx_int8 import quantize_dynamic_int8  # noqa: E402
from slimbert.compression.sensitivity import choose_layers_to_drop  # noqa: E402
from slimbert.config import Settings  # noqa: E402
from slimbert.data import load_sst2  # noqa: E402
from slimbert.hardware import cpu_label  # noqa: E402
from slimbert.models import resolve_model  # noqa: E402
from slimbert.store.manifest import Technique, VariantManifest  # noqa: E402
from slimbert.store.store import VariantStore  # noqa: E402

FAMILY = "bert-base-arch"
# The published bert-base table (CPU, batch 1, 128 tokens), for scale only: other hardware.
PUBLISHED_MS: dict[str, float | None] = {"baseline-fp32": 167.87, "pruned-fp32": 107.95, "pruned-int8": 67.02}


def publish(store: VariantStore, variant: str, src: Path, runtime: str, precision: str, params: int,
            layers: int, parent: str | None) -> None:
    with store.staging(FAMILY, variant) as staged:
        shutil.copytree(src, staged, dirs_exist_ok=True)
        store.publish(staged, VariantManifest(
            family=FAMILY, variant=variant, runtime=runtime, precision=precision,  # type: ignore[arg-type]
            base_model_id="random bert-base (12 layers, hidden 768)", parent=parent,
            technique=Technique(name="architecture-only", params={"random_weights": True}),
            labels={0: "negative", 1: "positive"}, num_parameters=params, num_layers=layers))


def build(store: VariantStore, work: Path, keep_layers: int, autotune: bool) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(settings.default_model_id, settings))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()  # bert-base defaults
    base_dir, pruned_dir, int8_dir = work / "base", work / "pruned", work / "int8"
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    publish(store, "baseline-fp32", base_dir, "torch", "fp32", model.num_parameters(), 12, None)
    drop = choose_layers_to_drop(12, 12 - keep_layers, "alternate")
    drop_layers(model, drop)
    model.save_pretrained(pruned_dir)
    tokenizer.save_pretrained(pruned_dir)
    publish(store, "pruned-fp32", pruned_dir, "torch", "fp32", model.num_parameters(), keep_layers, "baseline-fp32")
    int8_dir.mkdir()
    quantize_dynamic_int8(pruned_dir, int8_dir)
    publish(store, "pruned-int8", int8_dir, "onnxruntime", "int8", model.num_parameters(), keep_layers,
            "pruned-fp32")
    # The same cut with ONNX Runtime's attention/LayerNorm/GELU fusions applied before quantizing.
    fused_dir = work / "int8-fused"
    fused_dir.mkdir()
    quantize_dynamic_int8(pruned_dir, fused_dir, optimize=True)
    publish(store, "pruned-int8-fused", fused_dir, "onnxruntime", "int8", model.num_parameters(), keep_layers,
            "pruned-fp32")
    # The same cut through PT2E quantization and Inductor (oneDNN: AMX-INT8 where the CPU has it).
    # Random weights, so any sentences calibrate; these are SST-2 dev sentences.
    inductor_dir = work / "int8-inductor"
    texts = load_sst2("validation", settings.sst2_dir, offline=True).subset(64, seed=0).texts
    quantize_inductor_int8(pruned_dir, inductor_dir, texts, max_length=128)
    publish(store, "pruned-int8-inductor", inductor_dir, "torch-inductor", "int8", model.num_parameters(),
            keep_layers, "pruned-fp32")
    if autotune:  # Inductor's own AMX GEMM template where it beats oneDNN: minutes more to compile
        tuned_dir = work / "int8-inductor-autotuned"
        quantize_inductor_int8(pruned_dir, tuned_dir, texts, max_length=128, max_autotune=True)
        publish(store, "pruned-int8-inductor-autotuned", tuned_dir, "torch-inductor", "int8",
                model.num_parameters(), keep_layers, "pruned-fp32")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--layers", type=int, default=8, help="depth of the cut")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw run here")
    parser.add_argument("--max-autotune", action="store_true",
                        help="also time the Inductor program compiled with max_autotune, which the recipe's "
                             "precision.int8_inductor.max_autotune turns on (off by default); ~10 minutes more "
                             "of compiling")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slimbert-arch-") as tmp:
        store_dir = Path(tmp) / "store"
        store = VariantStore(store_dir)
        build(store, Path(tmp), args.layers, args.max_autotune)
        # The dev split only supplies the sentences that get padded to 128 tokens.
        settings = Settings(store_dir=store_dir, _env_file=None)  # type: ignore[call-arg]
        spec = BenchmarkSpec(family=FAMILY, batch_sizes=args.batch_sizes, seq_len=128, runs=args.runs,
                             warmup=args.warmup, accuracy=False, peak_memory=True)
        run = run_device_benchmark(settings, spec, "cpu")
    if args.json:
        args.json.write_text(json.dumps(run, indent=1))
    env = run["environment"]
    cpu = cpu_label(env)
    print(f"# Architecture-only timing: random bert-base, 12 -> {args.layers} layers (alternate cut)\n")
    print(f"CPU: {cpu}, torch threads {env['torch_threads']}, "
          f"onnxruntime {env['libraries']['onnxruntime']}, torch {env['libraries']['torch']}; seq_len 128; "
          f"{args.runs} runs after {args.warmup} warm-up, variants interleaved; model time only.\n")
    header = "| variant | size MB | " + " | ".join(
        f"p50 bs{b} ms (±std) | speed-up bs{b}" for b in args.batch_sizes) + " | peak RSS MB | published bs1 ms |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    base = run["variants"]["baseline-fp32"]["latency"]
    for name, row in run["variants"].items():
        cells = [name, f"{row['size_mb']:.1f}"]
        for b in args.batch_sizes:
            lat = row["latency"][str(b)]
            cells += [f"{lat['p50']:.1f} (±{lat['std']:.1f})", f"{base[str(b)]['p50'] / lat['p50']:.2f}x"]
        published = PUBLISHED_MS.get(name)
        cells += [f"{row['peak_memory']['peak_mb']:.0f}", f"{published:.2f}" if published else "-"]
        print("| " + " | ".join(cells) + " |")
    pub = 167.87 / 67.02
    print(f"\nPublished speed-up of pruned+INT8 at batch 1: {pub:.2f}x.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
