"""Mixed precision (stage 7): ONNX Runtime dynamic INT8 everywhere except the encoder layers that
quantization hurts most, measured, which stay fp32.

The measurement quantizes one encoder layer at a time (every other op stays fp32) and compares the
logits with the fp32 graph's on probe sentences: the mean KL divergence of the class distributions,
and how many predictions flip. The ``keep_fp32_layers`` layers with the largest divergence are left out
of the final quantization (``nodes_to_exclude``); everything else is quantized as ``pruned-int8`` is.
Probe sentences come from SST-2 train, never from the dev split the variant is then scored on.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from optimum.onnxruntime import ORTQuantizer
from scipy.special import softmax
from transformers import AutoConfig, AutoTokenizer

from slimbert.compression.onnx_int8 import (
    PrecisionResult,
    copy_tokenizer_files,
    export_onnx,
    list_files,
    prepare_out_dir,
    qconfig_params,
    quantization_config,
)
from slimbert.data import Text, tokenize
from slimbert.hardware import detect_isa
from slimbert.runtime.ort import ort_session

logger = logging.getLogger(__name__)

# optimum's exporter names nodes after the torch module path: /bert/encoder/layer.3/attention/self/query/MatMul
# (RoBERTa, ELECTRA, DeBERTa-v2 alike); DistilBERT's layers live at /distilbert/transformer/layer.3/.
_LAYER = re.compile(r"/(?:encoder|transformer)/layer\.(\d+)/")


@dataclass(frozen=True)
class LayerQuantSensitivity:
    layer: int
    kl: float  # mean KL(p_fp32 || p_layer_int8) over the probe sentences
    flips: int  # probe predictions that differ from fp32's
    probes: int

    def to_json(self) -> dict[str, Any]:
        # Significant digits, not decimals: a small model's KL can be 1e-8 and must still rank.
        return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in asdict(self).items()}


def layer_nodes(graph: onnx.GraphProto) -> dict[int, list[str]]:
    """Encoder layer index -> the names of that layer's nodes."""
    by_layer: dict[int, list[str]] = {}
    for node in graph.node:
        if match := _LAYER.search(node.name):
            by_layer.setdefault(int(match.group(1)), []).append(node.name)
    return dict(sorted(by_layer.items()))


def _logits(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = ort_session(path)
    names = {i.name for i in session.get_inputs()}
    return np.concatenate([session.run(["logits"], {k: v for k, v in f.items() if k in names})[0] for f in feeds])


def _kl(ref: np.ndarray, other: np.ndarray) -> float:
    p, q = softmax(ref.astype(np.float64), axis=-1), softmax(other.astype(np.float64), axis=-1)
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=-1)))


def _quantize(fp32_path: Path, config: Any, qconfig: Any, out: Path) -> Path:
    ORTQuantizer(fp32_path, config=config).quantize(quantization_config=qconfig, save_dir=out, file_suffix=None)
    return out / "model.onnx"


def quantize_mixed_int8(
    model_dir: str | Path,
    out_dir: str | Path,
    probe_texts: Sequence[Text],
    *,
    keep_fp32_layers: int = 1,
    per_channel: bool | None = None,
    max_length: int = 128,
    batch_size: int = 32,
) -> PrecisionResult:
    """Measure each encoder layer's sensitivity to INT8, then quantize all but the most sensitive ones."""

    if not probe_texts:
        raise ValueError("probe_texts is empty; pass a few hundred representative texts")
    out = prepare_out_dir(out_dir)
    isa = detect_isa()
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not 0 <= keep_fp32_layers < config.num_hidden_layers:
        raise ValueError(f"keep_fp32_layers must be in [0, {config.num_hidden_layers - 1}] for a "
                         f"{config.num_hidden_layers}-layer model, got {keep_fp32_layers}")
    texts = list(probe_texts)
    feeds = [dict(tokenize(tokenizer, texts[i : i + batch_size], truncation=True, max_length=max_length, padding=True,
                            return_tensors="np")) for i in range(0, len(texts), batch_size)]
    with tempfile.TemporaryDirectory(prefix="slimbert-mixed-") as tmp:
        fp32_path = export_onnx(model_dir, Path(tmp) / "fp32")
        nodes = layer_nodes(onnx.load(str(fp32_path), load_external_data=False).graph)
        if sorted(nodes) != list(range(config.num_hidden_layers)):
            raise RuntimeError(f"could not map the graph's nodes to {config.num_hidden_layers} encoder layers "
                               f"(found layers {sorted(nodes)})")
        reference = _logits(fp32_path, feeds)
        scores: list[LayerQuantSensitivity] = []
        for layer, names in nodes.items():
            qconfig = quantization_config(isa, is_static=False, per_channel=per_channel)
            qconfig.nodes_to_quantize = names
            quantized = _logits(_quantize(fp32_path, config, qconfig, Path(tmp) / f"layer{layer}"), feeds)
            flips = int((quantized.argmax(-1) != reference.argmax(-1)).sum())
            scores.append(LayerQuantSensitivity(layer, _kl(reference, quantized), flips, len(texts)))
            logger.info("int8 sensitivity of layer %d: KL %.2e, %d flips", layer, scores[-1].kl, flips)
        kept = sorted(s.layer for s in sorted(scores, key=lambda s: (-s.kl, -s.flips))[:keep_fp32_layers])
        qconfig = quantization_config(isa, is_static=False, per_channel=per_channel)
        qconfig.nodes_to_exclude = [name for layer in kept for name in nodes[layer]]
        _quantize(fp32_path, config, qconfig, out)
        mixed = _logits(out / "model.onnx", feeds)

    copy_tokenizer_files(Path(model_dir), out)
    params: dict[str, Any] = {
        "isa": isa,
        "fp32_layers": kept,
        "keep_fp32_layers": keep_fp32_layers,
        "layer_int8_sensitivity": [s.to_json() for s in scores],
        "probe_examples": len(texts),
        "probe_kl_after": float(f"{_kl(reference, mixed):.4g}"),
        "probe_flips_after": int((mixed.argmax(-1) != reference.argmax(-1)).sum()),
        **qconfig_params(qconfig),
    }
    logger.info("mixed int8 (fp32 layers %s) -> %s", kept, out)
    return PrecisionResult(runtime="onnxruntime", precision="int8", files=list_files(out), params=params)
