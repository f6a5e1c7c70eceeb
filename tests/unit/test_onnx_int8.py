"""ONNX export and dynamic INT8 quantization on a tiny random BERT.

A random BERT's logits sit near zero (initializer_range 0.02), so absolute quantization noise means
little on its own; tolerances are stated relative to the spread (max - min) of the fp32 logits over the
batch, the scale on which a wrong argmax would show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import BertTokenizerFast, PreTrainedModel

from slimbert.compression.onnx_int8 import PrecisionResult, export_onnx, quantize_dynamic_int8
from slimbert.hardware import detect_isa
from slimbert.runtime.ort import ort_session, saturation_risk
from tests.unit.conftest import make_tiny_bert

# Dynamic int8 on a 4-layer, hidden-32 model: observed max error is 0.7-2.2% of the spread (4x margin).
INT8_REL_TOL = 0.08
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tiny_checkpoint(
    path: Path, num_layers: int = 4, seed: int = 0, model: PreTrainedModel | None = None
) -> Path:
    """Save a tiny random BERT (or ``model``) plus a 128-token WordPiece tokenizer, like a real checkpoint."""
    path.mkdir(parents=True, exist_ok=True)
    (model if model is not None else make_tiny_bert(num_layers=num_layers, seed=seed)).save_pretrained(path)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL_TOKENS + [f"w{i}" for i in range(128 - len(SPECIAL_TOKENS))]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab), model_max_length=64).save_pretrained(path)
    return path


def tiny_inputs() -> dict[str, np.ndarray]:
    """Eight rows of random ids, two of them padded, as int64 numpy arrays."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 128, (8, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    mask[5, 4:] = 0
    return {
        "input_ids": ids.numpy(),
        "attention_mask": mask.numpy(),
        "token_type_ids": np.zeros_like(ids.numpy()),
    }


def torch_logits(model_dir: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits
    return np.asarray(out.float().numpy())


def ort_logits(onnx_path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort_session(onnx_path, intra_op_threads=1)
    names = {i.name for i in session.get_inputs()}
    return np.asarray(session.run(["logits"], {k: v for k, v in inputs.items() if k in names})[0])


def assert_close_to_spread(actual: np.ndarray, expected: np.ndarray, rel: float) -> None:
    spread = float(expected.max() - expected.min())
    err = float(np.abs(actual - expected).max())
    assert err <= rel * spread, f"max error {err:.3g} exceeds {rel} x logit spread {spread:.3g}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def fp32_onnx(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(checkpoint, tmp_path_factory.mktemp("fp32"))


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> np.ndarray:
    return torch_logits(checkpoint, tiny_inputs())


def test_export_matches_torch_with_dynamic_axes(fp32_onnx: Path, reference: np.ndarray) -> None:
    session = ort_session(fp32_onnx)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    for inp in session.get_inputs():
        assert all(isinstance(d, str) for d in inp.shape), f"{inp.name} has fixed axes {inp.shape}"
    np.testing.assert_allclose(ort_logits(fp32_onnx, tiny_inputs()), reference, atol=1e-4, rtol=0)
    # A different batch size and sequence length through the same graph.
    small = {k: v[:3, :7] for k, v in tiny_inputs().items()}
    assert ort_logits(fp32_onnx, small).shape == (3, 2)
    assert (fp32_onnx.parent / "config.json").is_file() and (fp32_onnx.parent / "tokenizer.json").is_file()


@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_int8_close_and_smaller(
    checkpoint: Path, fp32_onnx: Path, reference: np.ndarray, tmp_path: Path, per_channel: bool
) -> None:
    result = quantize_dynamic_int8(checkpoint, tmp_path, per_channel=per_channel)
    assert isinstance(result, PrecisionResult)
    assert (result.runtime, result.precision) == ("onnxruntime", "int8")
    assert result.params["per_channel"] is per_channel and result.params["isa"] == detect_isa()
    assert sorted(result.files) == sorted(p.name for p in tmp_path.iterdir())
    assert [f for f in result.files if f.endswith(".onnx")] == ["model.onnx"]
    for name in ("config.json", "tokenizer.json", "vocab.txt"):
        assert name in result.files
    import json

    json.dumps(result.to_dict())
    q = tmp_path / "model.onnx"
    assert q.stat().st_size < fp32_onnx.stat().st_size
    assert_close_to_spread(ort_logits(q, tiny_inputs()), reference, INT8_REL_TOL)


def test_optimize_then_quantize(checkpoint: Path, reference: np.ndarray, tmp_path: Path) -> None:
    import onnx

    result = quantize_dynamic_int8(checkpoint, tmp_path, optimize=True)
    fused = result.params["fused_ops"]
    assert fused.get("Attention", 0) == 4 and fused.get("SkipLayerNormalization", 0) > 0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert "QAttention" in ops and "MatMulInteger" in ops
    assert_close_to_spread(ort_logits(tmp_path / "model.onnx", tiny_inputs()), reference, INT8_REL_TOL)


@pytest.mark.parametrize("isa", ["avx2", "arm64"])
def test_explicit_isa_presets_run(checkpoint: Path, reference: np.ndarray, tmp_path: Path, isa: str) -> None:
    result = quantize_dynamic_int8(checkpoint, tmp_path, isa=isa)  # type: ignore[arg-type]
    assert result.params["isa"] == isa
    assert_close_to_spread(ort_logits(tmp_path / "model.onnx", tiny_inputs()), reference, INT8_REL_TOL)


def test_rejects_bad_isa_and_non_empty_dir(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="avx512_vnni"):
        quantize_dynamic_int8(checkpoint, tmp_path / "a", isa="sse")  # type: ignore[arg-type]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "stale.onnx").write_bytes(b"")
    with pytest.raises(FileExistsError):
        quantize_dynamic_int8(checkpoint, tmp_path / "b")


def test_detect_isa_is_a_known_preset() -> None:
    assert detect_isa() in {"avx512_vnni", "avx2", "arm64"}


def test_ort_session_threads(fp32_onnx: Path) -> None:
    session = ort_session(fp32_onnx, intra_op_threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1
    # One chain of ops: inter-op parallelism off, ops run in sequence, every graph optimization on.
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads do not spin between runs (they would steal the cores from other models).
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # The count asked for is the count the session runs with, not a fixed 1.
    assert ort_session(fp32_onnx, intra_op_threads=2).get_session_options().intra_op_num_threads == 2
    # None keeps ORT's default (0: one thread per physical core, chosen by ORT).
    assert ort_session(fp32_onnx).get_session_options().intra_op_num_threads == 0


def test_saturation_risk_flags_full_range_weights_without_vnni(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    full, reduced = {"reduce_range": False, "weights_dtype": "QInt8"}, {"reduce_range": True, "weights_dtype": "QInt8"}
    assert "VNNI" in (saturation_risk(full, flags={"avx2", "fma"}) or "")
    assert saturation_risk(full, flags={"avx2", "avx512_vnni"}) is None
    assert saturation_risk(full, flags={"avx2", "avx_vnni"}) is None
    assert saturation_risk(reduced, flags={"avx2"}) is None
    assert saturation_risk({}, flags={"avx2"}) is None  # not an int8 weight record
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert saturation_risk(full, flags=set()) is None


def test_avx2_preset_reduces_weight_range() -> None:
    from slimbert.compression.onnx_int8 import quantization_config

    assert quantization_config("avx2", is_static=False, per_channel=True).reduce_range is True
    assert quantization_config("avx512_vnni", is_static=False, per_channel=True).reduce_range is False
    # Unset, per-channel goes with 7-bit weights: one 7-bit scale per matrix loses points.
    assert quantization_config("avx2", is_static=False).per_channel is True
    assert quantization_config("avx512_vnni", is_static=False).per_channel is False
    assert quantization_config("avx2", is_static=True, per_channel=False).per_channel is False
