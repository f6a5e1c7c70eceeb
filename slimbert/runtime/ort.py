"""ONNX Runtime: the one set of session options every caller uses, and a check that a model suits this CPU."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort

from slimbert.hardware import has_vnni, is_x86


def saturation_risk(params: Mapping[str, Any], flags: set[str] | frozenset[str] | None = None) -> str | None:
    """Why an ONNX INT8 model made with full-range int8 weights may compute wrong logits on this CPU.

    x86 CPUs without VNNI multiply u8 activations by s8 weights with vpmaddubsw, which sums pairs in
    int16 and saturates when weights use the full -127..127 range. Measured on an AVX2-only EPYC: 15%
    of the logit spread off on a tiny BERT (1% with 7-bit weights). ``reduce_range`` models are safe.
    """
    if params.get("reduce_range", True) or params.get("weights_dtype", "QInt8") != "QInt8":
        return None
    if not is_x86() or has_vnni(flags):
        return None
    return ("full-range int8 weights on an x86 CPU without VNNI: ONNX Runtime's u8*s8 kernel can saturate and "
            "shift the logits; rebuild the variant on this CPU (its preset quantizes weights to 7 bits)")


def ort_session(
    path: str | Path,
    intra_op_threads: int | None = None,
    providers: Iterable[str] = ("CPUExecutionProvider",),
    *,
    spinning: bool = False,
) -> ort.InferenceSession:
    """An ONNX Runtime session tuned for CPU inference of one model.

    All graph optimizations are on; ``intra_op_threads=None`` keeps ORT's default (one per physical
    core); threads do not spin between runs unless ``spinning``.
    Inter-op parallelism is off because a BERT graph is a single chain of ops.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    # Spinning threads keep the cores busy after each run. Alone that buys ~1 ms at batch 1, but
    # beside torch models (serving several variants, or an interleaved benchmark) it stole the
    # cores: a torch model timed after an ONNX run measured 39 ms instead of 15 (docs/PERFORMANCE.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
