"""Which ONNX Runtime INT8 option is fastest on this CPU? (a measurement, not a test)

Builds a random-weight bert-base (12 layers, hidden 768; speed does not depend on the weights' values),
exports it to ONNX and makes the dynamic INT8 variants through slimbert's own functions:

    fp32         the exported graph
    int8         quantize_dynamic_int8 (per-tensor weights)
    int8_pc      quantize_dynamic_int8(per_channel=True)
    opt_int8     quantize_dynamic_int8(optimize=True): fused attention/LayerNorm/GELU, then INT8
    static_qdq   (--static) static INT8, QDQ format, minmax on 32 random texts
    static_qop   (--static) quantize_static_int8: the same ranges in QOperator format

Runs are interleaved (A B C D A B C D ...) so drift in machine load hits every variant alike, and the
script prints the median, p90, throughput and the ratio to fp32 per batch size, with thread count and
library versions. Default run: about 3 minutes on 2 cores (--static adds ~1.5).

    python benchmarks/bench_ort_int8_options.py [--rounds-b1 30] [--rounds-b32 5] [--threads N] [--static]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from slimbert.compression.onnx_int8 import export_onnx, quantize_dynamic_int8
from slimbert.hardware import detect_isa  # noqa: E402
from slimbert.runtime.ort import ort_session

SEQ = 128


def build_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(num_labels=2)).eval().save_pretrained(path)
    vocab = path / "vocab.txt"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(1000)]
    vocab.write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(vocab), model_max_length=512).save_pretrained(path)
    return path


def static_variants(ckpt: Path, root: Path) -> dict[str, Path]:
    """Static INT8 in QOperator (slimbert's choice) and in QDQ format, with the same minmax ranges."""
    from onnxruntime.quantization import QuantFormat, QuantizationMode
    from optimum.onnxruntime import ORTQuantizer

    from slimbert.compression.onnx_int8 import quantization_config
    from slimbert.compression.precision import quantize_static_int8

    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(0, 1000, 100)) for _ in range(32)]
    quantize_static_int8(ckpt, root / "static_qop", texts, method="minmax")
    # QDQ: rerun optimum with the preset's own format, calibrated on the same texts.
    from datasets import Dataset
    from optimum.onnxruntime.configuration import AutoCalibrationConfig

    fp32 = root / "fp32" / "model.onnx"
    tok = BertTokenizerFast.from_pretrained(ckpt)
    enc = tok(texts, truncation=True, max_length=SEQ, padding="longest")
    dataset = Dataset.from_dict({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    qconfig = quantization_config(detect_isa(), is_static=True, per_channel=False, operators=["MatMul"])
    assert qconfig.format == QuantFormat.QDQ and qconfig.mode == QuantizationMode.QLinearOps
    quantizer = ORTQuantizer(fp32)
    ranges = quantizer.fit(dataset, AutoCalibrationConfig.minmax(dataset), root / "aug.onnx", ["MatMul"])
    quantizer.quantize(qconfig, root / "static_qdq", file_suffix=None, calibration_tensors_range=ranges)
    return {name: root / name / "model.onnx" for name in ("static_qdq", "static_qop")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds-b1", type=int, default=30)
    parser.add_argument("--rounds-b32", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--static", action="store_true", help="also time static INT8 QDQ vs QOperator")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        ckpt = build_checkpoint(root / "ckpt")
        paths = {"fp32": export_onnx(ckpt, root / "fp32")}
        quantize_dynamic_int8(ckpt, root / "int8")
        quantize_dynamic_int8(ckpt, root / "int8_pc", per_channel=True)
        quantize_dynamic_int8(ckpt, root / "opt_int8", optimize=True)
        for name in ("int8", "int8_pc", "opt_int8"):
            paths[name] = root / name / "model.onnx"
        if args.static:
            paths.update(static_variants(ckpt, root))
        print(f"built {len(paths)} variants in {time.perf_counter() - t0:.0f}s")
        sizes = {name: p.stat().st_size / 2**20 for name, p in paths.items()}
        sessions = {name: ort_session(p, intra_op_threads=args.threads) for name, p in paths.items()}

        print(
            f"cpu={platform.processor() or platform.machine()} isa={detect_isa()} threads={args.threads} "
            f"onnxruntime={ort.__version__} torch={torch.__version__} transformers={transformers.__version__}"
        )
        print("size MB: " + ", ".join(f"{n}={s:.0f}" for n, s in sizes.items()))
        rng = np.random.default_rng(0)
        for batch, rounds in ((1, args.rounds_b1), (32, args.rounds_b32)):
            ids = rng.integers(1000, 30000, (batch, SEQ)).astype(np.int64)
            mask, types = np.ones_like(ids), np.zeros_like(ids)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            for s in sessions.values():  # warm-up: first runs allocate and pick kernels
                s.run(None, feed)
                s.run(None, feed)
            times: dict[str, list[float]] = {n: [] for n in sessions}
            for _ in range(rounds):
                for name, s in sessions.items():
                    start = time.perf_counter()
                    s.run(None, feed)
                    times[name].append(time.perf_counter() - start)
            base = statistics.median(times["fp32"])
            print(f"\nbatch={batch} seq={SEQ} rounds={rounds}")
            print(f"{'variant':<11} {'p50 ms':>9} {'p90 ms':>9} {'seq/s':>8} {'fp32/this':>10}")
            for name, ts in times.items():
                p50 = statistics.median(ts)
                p90 = float(np.percentile(ts, 90))
                print(f"{name:<11} {p50 * 1e3:9.1f} {p90 * 1e3:9.1f} {batch / p50:8.1f} {base / p50:9.2f}x")


if __name__ == "__main__":
    main()
