"""Mixed precision: the measured most INT8-sensitive layers stay fp32, the rest are INT8."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from slimbert.compression.mixed_int8 import layer_nodes, quantize_mixed_int8
from tests.unit.conftest import make_tiny_bert
from tests.unit.test_onnx_int8 import (
    INT8_REL_TOL,
    assert_close_to_spread,
    ort_logits,
    save_tiny_checkpoint,
    tiny_inputs,
    torch_logits,
)
from tests.unit.test_precision import calibration_texts


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-layer tiny BERT whose layer 1 has outlier weights, so INT8 hurts that layer most."""
    model = make_tiny_bert(num_layers=3, seed=0)
    with torch.no_grad():
        w = model.bert.encoder.layer[1].intermediate.dense.weight
        w[0, :] *= 60.0  # one huge row stretches the per-tensor INT8 scale of the whole matrix
    return save_tiny_checkpoint(tmp_path_factory.mktemp("mixed-ckpt"), model=model)


def _layer_ops(path: Path) -> dict[int, set[str]]:
    graph = onnx.load(str(path)).graph
    by_name = {n.name: n.op_type for n in graph.node}
    return {layer: {by_name[n] for n in names} for layer, names in layer_nodes(graph).items()}


def test_keeps_the_most_sensitive_layer_fp32(checkpoint: Path, tmp_path: Path) -> None:
    result = quantize_mixed_int8(checkpoint, tmp_path, calibration_texts(48), keep_fp32_layers=1)
    scores = result.params["layer_int8_sensitivity"]
    assert [s["layer"] for s in scores] == [0, 1, 2]
    assert all(s["kl"] >= 0 and s["probes"] == 48 for s in scores)
    worst = max(scores, key=lambda s: s["kl"])["layer"]
    assert result.params["fp32_layers"] == [worst] == [1]
    ops = _layer_ops(tmp_path / "model.onnx")
    assert "MatMul" in ops[1] and "MatMulInteger" not in ops[1]
    assert all("MatMulInteger" in ops[i] for i in (0, 2))
    assert_close_to_spread(ort_logits(tmp_path / "model.onnx", tiny_inputs()),
                           torch_logits(checkpoint, tiny_inputs()), INT8_REL_TOL)


def test_keep_zero_quantizes_every_layer(checkpoint: Path, tmp_path: Path) -> None:
    result = quantize_mixed_int8(checkpoint, tmp_path, calibration_texts(16), keep_fp32_layers=0)
    assert result.params["fp32_layers"] == []
    assert all("MatMulInteger" in ops and "MatMul" not in ops for ops in _layer_ops(tmp_path / "model.onnx").values())


def test_rejects_keeping_every_layer(tmp_path: Path) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", num_layers=2)
    with pytest.raises(ValueError, match="keep_fp32_layers"):
        quantize_mixed_int8(ckpt, tmp_path / "out", calibration_texts(8), keep_fp32_layers=2)
