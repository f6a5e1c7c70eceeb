"""Where the Inductor INT8 program spends its time, and what bf16 autocast buys it (a measurement).

Builds the architecture benchmark's model (``bench_arch_bert_base.py``: random-weight bert-base, cut
12 -> 8 layers by the alternate rule), quantizes it with ``quantize_inductor_int8`` (PT2E, torchao's
X86InductorQuantizer, 64 SST-2 dev sentences for calibration, 128 tokens) and compiles it twice with
``slimbert.runtime.inductor.load_compiled``: with bf16 autocast for the unquantized ops (what the loader
does where the CPU has native bf16 math, ``cpu_supports_bf16``) and without. Then, at batch 1 and 128 tokens:

1. both programs timed interleaved (A B A B ...), p50 (std) of ``--runs`` after 3 warm-up calls;
2. ``torch.profiler`` over ``--profile-calls`` calls of the program the loader would use, split into
   the quantized linears (oneDNN ``qlinear`` ops), attention (``scaled_dot_product``), other recorded
   aten ops, and the rest of the forward's wall time (Inductor's generated C++ kernels, which the
   profiler does not see, and glue); with the linears' throughput in GOPS from the config's shapes.

``--max-autotune`` adds the same program compiled with Inductor's ``max_autotune`` (its C++ GEMM
template benchmarked against oneDNN per shape, as ``precision.int8_inductor.max_autotune`` does):
minutes more of compiling. Random weights: latency only.

    .venv/bin/python benchmarks/profile_inductor_int8.py [--runs 20] [--profile-calls 5] [--max-autotune]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification  # noqa: E402

from slimbert.benchmark.latency import interleaved  # noqa: E402
from slimbert.compression.inductor_int8 import quantize_inductor_int8  # noqa: E402
from slimbert.compression.layers import drop_layers  # noqa: E402
from slimbert.compression.sensitivity import choose_layers_to_drop  # noqa: E402
from slimbert.config import Settings  # noqa: E402
from slimbert.data import load_sst2  # noqa: E402
from slimbert.hardware import cpu_label, cpu_supports_bf16, describe_environment  # noqa: E402
from slimbert.models import resolve_model  # noqa: E402
from slimbert.runtime.inductor import load_compiled  # noqa: E402

SEQ = 128


def build(work: Path, keep_layers: int, autotune: bool) -> tuple[dict[str, Path], BertConfig]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(settings.default_model_id, settings))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
    drop_layers(model, choose_layers_to_drop(12, 12 - keep_layers, "alternate"))
    pruned = work / "pruned"
    model.save_pretrained(pruned)
    tokenizer.save_pretrained(pruned)
    texts = load_sst2("validation", settings.sst2_dir, offline=True).subset(64, seed=0).texts
    out = {"plain": work / "int8-inductor"}
    quantize_inductor_int8(pruned, out["plain"], texts, max_length=SEQ)
    if autotune:
        out["max_autotune"] = work / "int8-inductor-autotuned"
        quantize_inductor_int8(pruned, out["max_autotune"], texts, max_length=SEQ, max_autotune=True)
    return out, model.config


def compiled_call(path: Path, bf16: bool, enc: dict[str, torch.Tensor]) -> tuple[Callable[[], Any], float]:
    program = load_compiled(path, bf16_mixed=bf16)
    start = time.perf_counter()
    program(**enc)  # the first call compiles
    return (lambda: program(**enc)), time.perf_counter() - start


def profile(call: Callable[[], Any], calls: int) -> dict[str, float]:
    """Milliseconds per call: the forward's wall time and each category's self CPU time."""
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            with record_function("slimbert_forward"):
                call()
    out = {"forward": 0.0, "quantized linears": 0.0, "attention": 0.0, "other aten ops": 0.0}
    for event in prof.key_averages():
        name, self_ms = event.key, event.self_cpu_time_total / 1000
        if name == "slimbert_forward":
            out["forward"] = event.cpu_time_total / 1000
        elif "qlinear" in name:
            out["quantized linears"] += self_ms
        elif "scaled_dot_product" in name:
            out["attention"] += self_ms
        elif name.startswith(("aten::", "onednn::", "quantized::")):
            out["other aten ops"] += self_ms
    return {k: v / calls for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--profile-calls", type=int, default=5)
    parser.add_argument("--layers", type=int, default=8, help="depth of the cut")
    parser.add_argument("--max-autotune", action="store_true",
                        help="also compile and profile the max_autotune program (minutes more)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine, before ours starts
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slimbert-inductor-profile-") as tmp:
        paths, config = build(Path(tmp), args.layers, args.max_autotune)
        tokenizer = AutoTokenizer.from_pretrained(paths["plain"])
        enc = dict(tokenizer(["a gorgeous , witty , seductive movie ."], padding="max_length", truncation=True,
                             max_length=SEQ, return_tensors="pt"))
        default_bf16 = cpu_supports_bf16()
        programs: dict[str, tuple[Callable[[], Any], float]] = {
            "int8, unquantized ops fp32": compiled_call(paths["plain"], False, enc)}
        if default_bf16:
            programs["int8, unquantized ops bf16 (autocast)"] = compiled_call(paths["plain"], True, enc)
        if args.max_autotune:
            programs["int8 max_autotune" + (", bf16 autocast" if default_bf16 else "")] = compiled_call(
                paths["max_autotune"], default_bf16, enc)
    stats = interleaved({k: v[0] for k, v in programs.items()}, warmup=3, runs=args.runs)
    default_name = "int8, unquantized ops bf16 (autocast)" if default_bf16 else "int8, unquantized ops fp32"
    profiled = {name: profile(programs[name][0], args.profile_calls)
                for name in programs if name == default_name or "max_autotune" in name}

    env = describe_environment()
    cpu = cpu_label(env)
    h, i = config.hidden_size, config.intermediate_size
    gop = 2 * SEQ * args.layers * (4 * h * h + 2 * h * i) / 1e9  # the encoder's linears, batch 1
    print(f"# Inductor INT8, random bert-base 12 -> {args.layers} layers, batch 1, {SEQ} tokens\n")
    print(f"CPU {cpu}, {env['torch_threads']} torch threads, torch "
          f"{env['libraries']['torch']}, torchao {env['libraries']['torchao']}; native bf16: {default_bf16}; "
          f"built and compiled in {time.perf_counter() - t0:.0f} s; 1-min load average before the run "
          f"{load_before:.1f}\n")
    print(f"Interleaved: p50 (std) of {args.runs} calls after 3 warm-up, model time only.\n")
    print("| program | compile s | p50 ms (std) | vs first row |")
    print("|---|---|---|---|")
    first = next(iter(stats.values())).p50
    for name, s in stats.items():
        print(f"| {name} | {programs[name][1]:.0f} | {s.p50:.2f} ({s.std:.2f}) | {first / s.p50:.2f}x |")
    if not default_bf16:
        print("\n(no native bf16 on this CPU: the loader compiles without autocast, so there is no bf16 row)")
    for name, p in profiled.items():
        print(f"\nProfile of `{name}`: torch.profiler, {args.profile_calls} calls, ms per call "
              f"(forward {p['forward']:.2f} ms)\n")
        print("| part | ms per call | share of forward |")
        print("|---|---|---|")
        rest = p["forward"] - p["quantized linears"] - p["attention"] - p["other aten ops"]
        for part, ms in [("quantized linears (oneDNN qlinear)", p["quantized linears"]),
                         ("attention (scaled_dot_product_*)", p["attention"]),
                         ("other recorded aten ops", p["other aten ops"]),
                         ("rest: Inductor's generated kernels and glue", rest)]:
            print(f"| {part} | {ms:.2f} | {100 * ms / p['forward']:.0f}% |")
        if p["quantized linears"]:
            print(f"\nQuantized linears: {gop:.1f} GOP per call -> {gop / (p['quantized linears'] / 1000):.0f} GOPS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
