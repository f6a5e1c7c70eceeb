"""End to end on SST-2 dev: time to classify all 872 sentences, tokenization included.

Three contenders from one family, measured interleaved (A B C A B C ...) in one process:
- ``baseline-fp32`` eager, every batch padded to 128 tokens (the naive way);
- the peer: optimum's default dynamic INT8 of the unpruned baseline, exactly as optimum's docs make it
  (``ORTQuantizer`` + ``AutoQuantizationConfig.<this CPU's preset>(is_static=False)`` with the preset's own
  defaults: per-channel, full range), dynamic padding, no bucketing;
- the winner (default ``pruned-int8``): length bucketing + dynamic padding.
Accuracy comes with 95% Wilson intervals and a McNemar test against the baseline.

    .venv/bin/python benchmarks/bench_e2e_dev.py [--family F] [--winner pruned-int8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from slimbert.benchmark.stats import mcnemar  # noqa: E402
from slimbert.compression.onnx_int8 import copy_tokenizer_files, export_onnx  # noqa: E402
from slimbert.config import get_settings  # noqa: E402
from slimbert.data import load_sst2  # noqa: E402
from slimbert.hardware import cpu_label, describe_environment, detect_isa  # noqa: E402
from slimbert.inference.bucketing import classify_all  # noqa: E402
from slimbert.inference.loader import load_variant  # noqa: E402
from slimbert.metrics import wilson_interval  # noqa: E402
from slimbert.store.bucket import open_variant_store  # noqa: E402
from slimbert.store.manifest import Technique, VariantManifest  # noqa: E402


def optimum_default_int8(model_dir: Path, out: Path) -> str:
    """The peer as a user of optimum makes it: the preset for this CPU, nothing changed. Returns the preset."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoConfig

    isa = detect_isa()
    qconfig = getattr(AutoQuantizationConfig, isa)(is_static=False)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model_dir, Path(tmp))
        ORTQuantizer(fp32, config=AutoConfig.from_pretrained(model_dir)).quantize(
            quantization_config=qconfig, save_dir=out, file_suffix=None)
    copy_tokenizer_files(model_dir, out)
    return f"{isa}, per_channel={qconfig.per_channel}, reduce_range={qconfig.reduce_range}"


def padded_baseline(predictor: object, texts: list[str], batch_size: int) -> Callable[[], list[int]]:
    model, tokenizer = predictor.model, predictor.tokenizer  # type: ignore[attr-defined]

    def run() -> list[int]:
        out: list[int] = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(texts[i : i + batch_size], padding="max_length", truncation=True, max_length=128,
                                return_tensors="pt")
                out.extend(model(**enc).logits.argmax(-1).tolist())
        return out

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default=None)
    parser.add_argument("--winner", default="pruned-int8")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-batch1-runs", type=int, default=200, help="single-sentence runs for the peer check")
    args = parser.parse_args()
    settings = get_settings()
    store = open_variant_store(settings)
    family = args.family or store.newest_family()
    dev = load_sst2("validation", settings.sst2_dir, offline=settings.offline)
    texts = dev.texts
    base_m, win_m = store.manifest(family, "baseline-fp32"), store.manifest(family, args.winner)
    base = load_variant(base_m, store.variant_dir(family, "baseline-fp32"))
    winner = load_variant(win_m, store.variant_dir(family, args.winner))
    with tempfile.TemporaryDirectory() as tmp:
        preset = optimum_default_int8(store.variant_dir(family, "baseline-fp32"), Path(tmp))
        peer_manifest = VariantManifest(family=family, variant="peer-int8", runtime="onnxruntime", precision="int8",
                                        base_model_id=base_m.base_model_id, technique=Technique(name="optimum-default"),
                                        labels=base_m.labels, num_parameters=base_m.num_parameters)
        peer = load_variant(peer_manifest, Path(tmp))
        contenders: dict[str, Callable[[], list[int]]] = {
            "baseline-fp32 padded to 128": padded_baseline(base, texts, args.batch_size),
            f"peer: optimum dynamic INT8 ({preset}), unpruned": lambda: classify_all(
                peer, texts, batch_size=args.batch_size, bucket=False).label_ids,
            f"winner: {args.winner}, bucketed": lambda: classify_all(
                winner, texts, batch_size=args.batch_size, bucket=True).label_ids,
        }
        times: dict[str, list[float]] = {k: [] for k in contenders}
        labels: dict[str, list[int]] = {}
        for fn in contenders.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name, fn in contenders.items():
                start = time.perf_counter()
                labels[name] = fn()
                times[name].append(time.perf_counter() - start)
        # Batch 1: the winner against the peer, single sentences, interleaved.
        b1: dict[str, list[float]] = {"peer": [], "winner": []}
        for i in range(args.peer_batch1_runs):
            text = [texts[i % len(texts)]]
            for name, pred in (("peer", peer), ("winner", winner)):
                start = time.perf_counter()
                pred.predict(text)
                b1[name].append((time.perf_counter() - start) * 1000)
    env = describe_environment()
    cpu = cpu_label(env)
    print(f"# End to end on SST-2 dev ({len(texts)} sentences), family {family}\n")
    print(f"CPU {cpu}, torch threads {env['torch_threads']}, batch {args.batch_size}, "
          f"{args.repeats} interleaved repeats after one warm-up; wall time includes tokenization.\n")
    print("| contender | median s (min-max) | speed-up | accuracy [95% CI] | McNemar p vs baseline |")
    print("|---|---|---|---|---|")
    base_name = next(iter(contenders))
    base_med = statistics.median(times[base_name])
    for name in contenders:
        med = statistics.median(times[name])
        correct = sum(int(p == y) for p, y in zip(labels[name], dev.labels, strict=True))
        lo, hi = wilson_interval(correct, len(texts))
        p = "-" if name == base_name else f"{mcnemar(labels[name], labels[base_name], dev.labels).p_value:.3f}"
        print(f"| {name} | {med:.2f} ({min(times[name]):.2f}-{max(times[name]):.2f}) | {base_med / med:.2f}x | "
              f"{correct / len(texts):.4f} [{lo:.3f}, {hi:.3f}] | {p} |")
    pm, wm = statistics.median(b1["peer"]), statistics.median(b1["winner"])
    print(f"\nBatch 1 ({args.peer_batch1_runs} sentences each, interleaved, tokenization included): peer p50 "
          f"{pm:.2f} ms, winner p50 {wm:.2f} ms: winner {pm / wm:.2f}x faster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
