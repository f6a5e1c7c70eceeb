"""Dynamic INT8 weight formats against SST-2 dev accuracy (a measurement, not a test).

Exports one stored fp32 variant (default: the newest family's ``pruned-fp32``) to ONNX once and
quantizes it with ONNX Runtime dynamic INT8 (optimum's ``ORTQuantizer``, the preset's own operators,
embeddings included, as ``quantize_dynamic_int8`` does) in four weight formats, each per tensor and per
output channel:

    u8, 7 bits     the avx2 preset (``AutoQuantizationConfig.avx2(reduce_range=True)``; slimbert's choice
                   on CPUs without VNNI)
    s8, full range the avx512_vnni preset (-127..127)
    s8, 7 bits     the avx512_vnni preset with ``reduce_range``
    u8, full range the avx2 preset without ``reduce_range``

Each graph classifies every SST-2 dev sentence in length-sorted batches of 32 (``classify_all``).
Accuracy depends on the CPU as well as the format: without VNNI, ONNX Runtime sums u8 x s8 products
in int16 (``vpmaddubsw``), which can saturate with full-range weights; the CPU and its flags are printed
first. ``--timing-runs N`` also times each graph on N single sentences, interleaved, p50 ms.

    .venv/bin/python benchmarks/bench_int8_weight_formats.py [--family F] [--variant pruned-fp32]
        [--model-dir DIR] [--dev-examples N] [--timing-runs 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slimbert.compression.onnx_int8 import export_onnx  # noqa: E402
from slimbert.config import get_settings  # noqa: E402
from slimbert.data import load_sst2  # noqa: E402
from slimbert.hardware import cpu_label, describe_environment, detect_isa  # noqa: E402
from slimbert.inference.bucketing import classify_all  # noqa: E402
from slimbert.inference.predictor import OrtPredictor  # noqa: E402
from slimbert.metrics import wilson_interval  # noqa: E402
from slimbert.runtime.ort import ort_session  # noqa: E402
from slimbert.store.bucket import open_variant_store  # noqa: E402

# name -> (optimum preset, reduce_range)
FORMATS: dict[str, tuple[str, bool]] = {
    "u8, 7 bits (avx2 preset, `reduce_range=True`)": ("avx2", True),
    "s8, full range (avx512_vnni preset)": ("avx512_vnni", False),
    "s8, 7 bits (avx512_vnni preset, `reduce_range=True`)": ("avx512_vnni", True),
    "u8, full range (avx2 preset, `reduce_range=False`)": ("avx2", False),
}


def quantize(fp32: Path, out: Path, preset: str, reduce_range: bool, per_channel: bool) -> Path:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    qconfig = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=per_channel)
    qconfig.reduce_range = reduce_range  # only the avx2 preset takes it as an argument
    ORTQuantizer(fp32).quantize(quantization_config=qconfig, save_dir=out, file_suffix=None)
    return out / "model.onnx"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default=None, help="default: the newest family in the store")
    parser.add_argument("--variant", default="pruned-fp32", help="a torch fp32 variant of the family")
    parser.add_argument("--model-dir", type=Path, default=None, help="an fp32 checkpoint instead of a stored variant")
    parser.add_argument("--dev-examples", type=int, default=None, help="first N dev sentences (default: all 872)")
    parser.add_argument("--timing-runs", type=int, default=0, help="single sentences timed per graph, interleaved")
    args = parser.parse_args()
    settings = get_settings()
    if args.model_dir is not None:
        src, what = args.model_dir, str(args.model_dir)
    else:
        store = open_variant_store(settings)
        family = args.family or store.newest_family()
        src, what = store.variant_dir(family, args.variant), f"{family}/{args.variant}"
    dev = load_sst2("validation", settings.sst2_dir, offline=settings.offline)
    texts, gold = dev.texts[: args.dev_examples], dev.labels[: args.dev_examples]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    labels: dict[int, str] = {0: "negative", 1: "positive"}

    def score(path: Path) -> tuple[float, int, OrtPredictor]:
        predictor = OrtPredictor(ort_session(path), tokenizer, labels)
        ids = classify_all(predictor, texts, batch_size=32, bucket=True).label_ids
        return sum(int(p == y) for p, y in zip(ids, gold, strict=True)) / len(texts), len(texts), predictor

    rows: dict[str, dict[bool, tuple[float, int]]] = {}
    predictors: dict[str, OrtPredictor] = {}
    with tempfile.TemporaryDirectory(prefix="slimbert-wformats-") as tmp:
        fp32 = export_onnx(src, Path(tmp) / "fp32")
        acc, n, predictors["fp32 (ONNX export)"] = score(fp32)
        rows["fp32 (ONNX export, not quantized)"] = {False: (acc, n), True: (acc, n)}
        for name, (preset, rr) in FORMATS.items():
            rows[name] = {}
            for per_channel in (False, True):
                out = Path(tmp) / f"{preset}-{rr}-{per_channel}"
                acc, n, pred = score(quantize(fp32, out, preset, rr, per_channel))
                rows[name][per_channel] = (acc, n)
                predictors[f"{name}, {'per-channel' if per_channel else 'per-tensor'}"] = pred
        timing: dict[str, list[float]] = {k: [] for k in predictors}
        for i in range(args.timing_runs):
            for name, pred in predictors.items():
                start = time.perf_counter()
                pred.predict([texts[i % len(texts)]])
                timing[name].append((time.perf_counter() - start) * 1000)

    env = describe_environment()
    cpu = cpu_label(env)
    print(f"# Dynamic INT8 weight formats: {what}\n")
    print(f"CPU {cpu} (slimbert's preset here: {detect_isa()}), "
          f"{env['torch_threads']} threads, onnxruntime {env['libraries']['onnxruntime']}; SST-2 dev, "
          f"{len(texts)} sentences, length-sorted batches of 32; accuracy [95% Wilson interval]\n")
    print("| weights | per-tensor accuracy | per-channel accuracy |")
    print("|---|---|---|")

    def cell(v: tuple[float, int]) -> str:
        lo, hi = wilson_interval(round(v[0] * v[1]), v[1])
        return f"{v[0]:.4f} [{lo:.3f}, {hi:.3f}]"

    for name, by in rows.items():
        print(f"| {name} | {cell(by[False])} | {cell(by[True])} |")
    if args.timing_runs:
        print(f"\nBatch 1, {args.timing_runs} single sentences per graph, interleaved, tokenization included: "
              "p50 ms (min-max)\n")
        print("| graph | p50 ms |")
        print("|---|---|")
        for name, values in timing.items():
            print(f"| {name} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
