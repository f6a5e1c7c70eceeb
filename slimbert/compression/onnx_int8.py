"""ONNX export and dynamic INT8 quantization with ONNX Runtime.

Every function takes a directory holding a Hugging Face fp32 sequence-classification checkpoint
(``save_pretrained`` output: safetensors, config.json, tokenizer files) and writes a variant into an
existing, empty output directory. The quantized graph is always called ``model.onnx`` so the loader
has a single file name to open.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.optimizer import optimize_model
from optimum.exporters.onnx import main_export, onnx_export_from_model
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
from transformers import AutoConfig, AutoModelForSequenceClassification

from slimbert.hardware import detect_isa
from slimbert.records import ISAS, Isa
from slimbert.runtime.shapes import from_pretrained_pruned, from_pretrained_rebuilds

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
# Files that ``save_pretrained`` of a tokenizer may write; copied beside every variant.
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)


@dataclass
class PrecisionResult:
    """What a precision stage produced, for the caller's manifest.

    ``files`` are names relative to the output directory; ``params`` is JSON-serializable.
    """
    runtime: Literal["onnxruntime", "torch", "bitsandbytes", "torch-inductor"]
    precision: Literal["int8", "bf16", "fp16", "int4"]
    files: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, ready for ``json.dumps``."""
        return dataclasses.asdict(self)


def list_files(out_dir: Path) -> list[str]:
    """Sorted relative names of the regular files under ``out_dir``."""
    return sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Return ``out_dir`` as a Path, refusing a non-empty directory so no stale file survives."""
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise FileExistsError(
            f"output directory {path} must be empty; write each variant to a fresh directory"
        )
    return path


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    """Copy the tokenizer files that exist in ``src`` but not yet in ``dst``; return their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file() and not (dst / name).exists():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def export_onnx(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Export an fp32 checkpoint to ``out_dir/model.onnx`` with optimum; return that path.

    Inputs are the model's own (input_ids, attention_mask, token_type_ids for BERT) with dynamic
    ``batch_size`` and ``sequence_length`` axes; the output is ``logits``. config.json and the tokenizer
    files are written beside the graph.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not _rebuilt_by_from_pretrained(Path(model_dir)):
        # from_pretrained cannot rebuild per-layer FFN widths (nor DeBERTa-v2's pruned heads): build the
        # model ourselves and export it.

        model = from_pretrained_pruned(AutoModelForSequenceClassification, model_dir)
        onnx_export_from_model(model, out, task="text-classification", do_validation=False)
        path = out / ONNX_FILE
        if not path.is_file():
            raise RuntimeError(f"optimum export did not write {path}")
        logger.info("exported FFN-pruned %s to %s", model_dir, path)
        return path
    # Validation is left to the tests (logits within 1e-4 of torch); it would double the export time.
    main_export(
        str(model_dir),
        output=out,
        task="text-classification",
        do_validation=False,
        local_files_only=True,
    )
    path = out / ONNX_FILE
    if not path.is_file():
        raise RuntimeError(f"optimum export did not write {path}")
    logger.info("exported %s to %s", model_dir, path)
    return path


def _rebuilt_by_from_pretrained(model_dir: Path) -> bool:
    config = model_dir / "config.json"
    return not config.is_file() or from_pretrained_rebuilds(json.loads(config.read_text()))


def optimize_transformer_graph(onnx_path: Path, config: Any) -> dict[str, int]:
    """Fuse attention, LayerNorm and GELU in place with ORT's transformer optimizer; return fused-op counts.

    The fused ops live in the ``com.microsoft`` domain, which ONNX's own shape inference does not know,
    so their outputs come out untyped; the quantizer then fails with "Unable to find data type for
    weight_name ... MatMul_output_0". ORT's symbolic shape inference knows the contrib ops, so running
    it (``quant_pre_process`` with its graph optimization skipped) types every tensor and makes the
    fused graph quantizable by the ordinary ``ORTQuantizer`` path.
    """
    # opt_level=0: only the Python fusions, so the file carries no provider-specific rewrites;
    # the session applies its own level-all optimizations at load time.
    optimized = optimize_model(
        str(onnx_path),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        opt_level=0,
        use_gpu=False,
    )
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    fused_path = onnx_path.with_name("fused.onnx")
    optimized.save_model_to_file(str(fused_path))
    # auto_merge: RoBERTa's and DeBERTa-v2's position terms slice a fixed-size table to the sequence
    # (Min(max_positions, sequence_length)), which strict symbolic inference cannot prove equal to
    # sequence_length ("Incomplete symbolic shape inference"); merging the two symbols types the graph.
    quant_pre_process(str(fused_path), str(onnx_path), skip_optimization=True, auto_merge=True)
    fused_path.unlink()
    logger.info("fused transformer graph: %s", stats)
    return stats


def quantization_config(
    isa: str, *, is_static: bool, per_channel: bool | None = None, operators: Sequence[str] | None = None
) -> Any:
    """optimum's ``AutoQuantizationConfig`` preset for ``isa`` ('avx512_vnni', 'avx2' or 'arm64').

    ``per_channel=None`` means per-channel exactly where weights get 7 bits ('avx2'): one 7-bit scale per
    matrix cost the 4-layer MiniLM 3.6 points on an AVX2 EPYC (a run not kept in docs/: no script made it;
    ``benchmarks/bench_int8_weight_formats.py`` measures the formats on a stored family). With VNNI's full
    8 bits per-tensor loses little.
    """
    ops = list(operators) if operators else None
    kwargs: dict[str, Any] = {
        "is_static": is_static,
        "per_channel": isa == "avx2" if per_channel is None else per_channel,
        "operators_to_quantize": ops,
    }
    if isa == "avx512_vnni":
        return AutoQuantizationConfig.avx512_vnni(**kwargs)
    if isa == "avx2":
        # Without VNNI, u8*s8 products are summed in int16 by vpmaddubsw and can saturate;
        # 7-bit weights keep the sums in range (ONNX Runtime's own advice for non-VNNI x86).
        return AutoQuantizationConfig.avx2(reduce_range=True, **kwargs)
    if isa == "arm64":
        return AutoQuantizationConfig.arm64(**kwargs)
    raise ValueError(f"unknown isa {isa!r}; allowed: 'auto', {', '.join(repr(i) for i in ISAS)}")


def qconfig_params(qconfig: Any) -> dict[str, Any]:
    """The JSON-serializable fields of an optimum ``QuantizationConfig``."""
    return {
        "is_static": bool(qconfig.is_static),
        "format": qconfig.format.name,
        "mode": qconfig.mode.name,
        "activations_dtype": qconfig.activations_dtype.name,
        "activations_symmetric": bool(qconfig.activations_symmetric),
        "weights_dtype": qconfig.weights_dtype.name,
        "weights_symmetric": bool(qconfig.weights_symmetric),
        "per_channel": bool(qconfig.per_channel),
        "reduce_range": bool(qconfig.reduce_range),
        "operators_to_quantize": [getattr(op, "value", op) for op in qconfig.operators_to_quantize],
    }


def quantize_dynamic_int8(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    per_channel: bool | None = None,
    isa: Isa = "auto",
    optimize: bool = False,
    operators: Sequence[str] | None = None,
    signed_weights: bool = False,
) -> PrecisionResult:
    """Export to ONNX and quantize weights to INT8 with dynamic activation quantization (ORT IntegerOps).

    Writes ``out_dir/model.onnx`` (the quantized graph), config.json, ort_config.json (optimum's record
    of the quantization config) and the tokenizer files. ``isa='auto'`` picks the preset from the CPU
    flags. ``operators`` overrides the preset's op types to quantize (default: MatMul, Attention, Gather,
    ...; embeddings included). ``optimize=True`` fuses attention/LayerNorm/GELU before quantizing (see
    ``optimize_transformer_graph`` for why that needs ORT's symbolic shape inference).
    ``signed_weights=True`` stores s8 weights whatever the preset (the avx2 preset's are u8): a symmetric
    s8 grid is the one QAT folds weights onto, and with the avx2 preset's 7 bits it cannot saturate.
    """
    out = prepare_out_dir(out_dir)
    chosen = detect_isa() if isa == "auto" else isa
    qconfig = quantization_config(chosen, is_static=False, per_channel=per_channel, operators=operators)
    if signed_weights:
        qconfig.weights_dtype = QuantType.QInt8
    config = AutoConfig.from_pretrained(model_dir)
    params: dict[str, Any] = {"isa": chosen, "isa_requested": isa, "optimize": optimize}

    with tempfile.TemporaryDirectory(prefix="slimbert-onnx-") as tmp:
        fp32_path = export_onnx(model_dir, Path(tmp))
        opsets = onnx.load(str(fp32_path), load_external_data=False).opset_import
        params["opset"] = int(next(o.version for o in opsets if o.domain in ("", "ai.onnx")))
        if optimize:
            params["fused_ops"] = optimize_transformer_graph(fp32_path, config)
        quantizer = ORTQuantizer(fp32_path, config=config)
        # file_suffix=None keeps the name model.onnx; the fp32 graph stays in the temporary directory.
        quantizer.quantize(quantization_config=qconfig, save_dir=out, file_suffix=None)

    copy_tokenizer_files(Path(model_dir), out)
    params.update(qconfig_params(qconfig))
    params["onnxruntime_version"] = ort.__version__
    files = list_files(out)
    logger.info("dynamic int8 (%s, per_channel=%s, optimize=%s) -> %s", chosen, per_channel, optimize, out)
    return PrecisionResult(runtime="onnxruntime", precision="int8", files=files, params=params)
