"""Does batching lower the cost per text, in one process? (a measurement, not a test)

The same two variants as ``bench_serving.py`` (the embedded MiniLM-L6 under a fresh random 2-label head,
``baseline-fp32`` in torch and ``baseline-int8`` through ONNX Runtime dynamic INT8 with
``quantize_dynamic_int8``; speed does not depend on the head's weights), loaded with ``load_variant``
as the API loads them. Each variant classifies the first ``--texts`` SST-2 dev sentences three ways:
one per call, in dev order in batches of ``--batch-size`` (each padded to its longest sentence), and
sorted by length first in the same batches. A pass is all the sentences once; passes are interleaved
(A B C A B C ...) ``--repeats`` times after one warm-up pass. Prints wall ms per text
(``predict``: tokenization and model) as median (min-max) over the repeats, the model-only share, and
the tokenization time of one sentence, with the CPU, its flags and the thread count.

    .venv/bin/python benchmarks/bench_ort_batching.py [--texts 64] [--batch-size 8] [--repeats 5]   # < 1 minute
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import FAMILY, build_store  # noqa: E402

from slimbert.config import Settings  # noqa: E402
from slimbert.hardware import cpu_label, describe_environment  # noqa: E402
from slimbert.inference.loader import load_variant  # noqa: E402
from slimbert.inference.predictor import Predictor  # noqa: E402


def one_pass(predictor: Predictor, batches: list[list[str]]) -> tuple[float, float, list[float]]:
    """Wall ms for all batches, the model-only ms among them, and each batch's tokenize ms."""
    model_ms, tok = 0.0, []
    start = time.perf_counter()
    for batch in batches:
        out = predictor.predict(batch)
        model_ms += out.model_ms
        tok.append(out.tokenize_ms)
    return (time.perf_counter() - start) * 1000, model_ms, tok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=64, help="SST-2 dev sentences, from the top of dev.tsv")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine, before ours starts

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    dev = (settings.sst2_dir or Path()) / "dev.tsv"
    if not dev.is_file():
        raise SystemExit(f"SST-2 dev split not found at {dev} (SLIMBERT_SST2_DIR)")
    texts = [ln.split("\t")[0] for ln in dev.read_text().splitlines()[1:]][: args.texts]
    tmp = tempfile.TemporaryDirectory(prefix="bench-ort-batching-")  # kept until the end: the variants' files
    store = build_store(Path(tmp.name) / "store")
    predictors = {v: load_variant(store.manifest(FAMILY, v), store.variant_dir(FAMILY, v))
                  for v in ("baseline-int8", "baseline-fp32")}
    tok = predictors["baseline-int8"].tokenizer
    by_length = sorted(texts, key=lambda t: len(tok(t)["input_ids"]))
    b = args.batch_size
    layouts: dict[str, list[list[str]]] = {
        "batch 1": [[t] for t in texts],
        f"batch {b}, dev order": [texts[i : i + b] for i in range(0, len(texts), b)],
        f"batch {b}, sorted by length": [by_length[i : i + b] for i in range(0, len(by_length), b)],
    }
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    single_tok: list[float] = []
    passes: list[tuple[str, str, Callable[[], tuple[float, float, list[float]]]]] = [
        (v, name, functools.partial(one_pass, p, bs)) for v, p in predictors.items() for name, bs in layouts.items()]
    for _, _, run in passes:  # warm-up pass
        run()
    for _ in range(args.repeats):
        for v, name, run in passes:
            wall_ms, model_ms, toks = run()
            runs.setdefault((v, name), []).append((wall_ms / len(texts), model_ms / len(texts)))
            if name == "batch 1":
                single_tok += toks

    env = describe_environment()
    cpu = cpu_label(env)
    print(f"CPU {cpu}, {env['torch_threads']} torch threads, onnxruntime "
          f"{env['libraries']['onnxruntime']} (intra-op threads as the API sets them), "
          f"torch {env['libraries']['torch']}; "
          f"{len(texts)} SST-2 dev sentences, {args.repeats} interleaved passes after 1 warm-up; "
          f"ms per text, median (min-max) over passes; 1-min load average before the run "
          f"{load_before:.1f}\n")
    print("| variant | layout | ms per text (predict) | of which model |")
    print("|---|---|---|---|")
    for (v, name), rows in runs.items():
        wall = [r[0] for r in rows]
        model = [r[1] for r in rows]
        print(f"| {v} | {name} | {statistics.median(wall):.2f} ({min(wall):.2f}-{max(wall):.2f}) | "
              f"{statistics.median(model):.2f} |")
    q = statistics.quantiles(single_tok, n=20)
    tmp.cleanup()
    print(f"\nTokenization of one sentence (batch 1, both variants): median {statistics.median(single_tok):.2f} ms, "
          f"5-95% {q[0]:.2f}-{q[-1]:.2f} ms over {len(single_tok)} calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
