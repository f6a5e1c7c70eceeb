"""FLOPs: the config formula ('computed') against FlopCounterMode on a real forward ('measured')."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from slimbert.benchmark.flops import COMPUTED_LABEL, MEASURED_LABEL, computed_gflops, measured_gflops
from slimbert.benchmark.runner import BenchmarkSpec, run_device_benchmark
from slimbert.config import Settings
from tests.conftest import BENCH_FAMILY
from tests.unit.conftest import make_tiny_bert

SEQ_LEN = 16


def _unpadded_batch(batch_size: int = 3, seq_len: int = SEQ_LEN) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 128, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(batch_size, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _assert_close(computed: float, measured: float) -> None:
    assert measured > 0
    assert computed == pytest.approx(measured, rel=0.05)


def test_labels(bench_settings: Settings) -> None:
    # The labels are the ones a benchmark run reports: a torch variant is counted on its real forward, an
    # ONNX Runtime one (which FlopCounterMode cannot see) is computed from its config.
    assert MEASURED_LABEL != COMPUTED_LABEL
    spec = BenchmarkSpec(family=BENCH_FAMILY, batch_sizes=[1], runs=1, warmup=0, accuracy=False, peak_memory=False)
    variants = run_device_benchmark(bench_settings, spec, "cpu")["variants"]
    torch_row = variants["baseline-fp32"]["gflops_per_sequence"]
    onnx_row = variants["pruned-int8"]["gflops_per_sequence"]
    assert torch_row["method"] == MEASURED_LABEL
    assert onnx_row["method"].startswith(COMPUTED_LABEL) and MEASURED_LABEL not in onnx_row["method"]
    assert torch_row["value"] > 0 and onnx_row["value"] > 0


def test_computed_matches_measured_on_tiny_bert() -> None:
    model = make_tiny_bert()
    measured = measured_gflops(model, _unpadded_batch())
    _assert_close(computed_gflops(model.config, SEQ_LEN), measured)
    # Per sequence: the batch size must not change the figure.
    assert measured_gflops(model, _unpadded_batch(batch_size=1)) == pytest.approx(measured)


def test_measured_counts_attention_matmuls() -> None:
    # Without counting the CPU SDPA kernel the measured figure would equal the linear layers only.
    model = make_tiny_bert(num_layers=2)
    cfg = model.config
    linear_only = computed_gflops(cfg, SEQ_LEN) - 2 * 2 * 2 * SEQ_LEN * SEQ_LEN * cfg.hidden_size / 1e9
    assert measured_gflops(model, _unpadded_batch()) > linear_only * 1.01


def test_pruned_heads_shrink_attention() -> None:
    model = make_tiny_bert()
    full = computed_gflops(model.config, SEQ_LEN)
    model.prune_heads({0: [0, 1], 2: [3]})
    pruned = computed_gflops(model.config, SEQ_LEN)
    assert pruned < full
    _assert_close(pruned, measured_gflops(model, _unpadded_batch()))
    # Keys become strings after a JSON round trip of the config; the count must not change.
    as_dict = json.loads(json.dumps(model.config.to_dict()))
    assert computed_gflops(as_dict, SEQ_LEN) == pytest.approx(pruned)


def test_per_layer_intermediate_sizes() -> None:
    model = make_tiny_bert()
    sizes = [64, 16, 40, 8]
    h = model.config.hidden_size
    for layer, size in zip(model.bert.encoder.layer, sizes, strict=True):
        layer.intermediate.dense = nn.Linear(h, size)
        layer.output.dense = nn.Linear(size, h)
    model.config.intermediate_sizes = sizes
    _assert_close(computed_gflops(model.config, SEQ_LEN), measured_gflops(model, _unpadded_batch()))
    with pytest.raises(ValueError):
        computed_gflops({**model.config.to_dict(), "intermediate_sizes": [8]}, SEQ_LEN)


def test_fewer_layers_cost_proportionally_less() -> None:
    two, four = make_tiny_bert(num_layers=2), make_tiny_bert(num_layers=4)
    _assert_close(computed_gflops(two.config, SEQ_LEN), measured_gflops(two, _unpadded_batch()))
    assert computed_gflops(two.config, SEQ_LEN) < computed_gflops(four.config, SEQ_LEN)


def test_bert_base_hand_computed() -> None:
    s, h, i, layers = 128, 768, 3072, 12
    per_layer = 8 * s * h * h + 4 * s * s * h + 4 * s * h * i
    expected = (layers * per_layer + 2 * h * h + 2 * h * 2) / 1e9
    config = {"hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": 12,
              "intermediate_size": i, "num_labels": 2}
    assert computed_gflops(config, s) == pytest.approx(expected)
    assert computed_gflops(config, s) == pytest.approx(22.35, abs=0.01)  # the familiar ~11.2 GMACs
    distil = {"dim": h, "n_layers": 6, "n_heads": 12, "hidden_dim": i, "id2label": {"0": "a", "1": "b"}}
    assert computed_gflops(distil, s) == pytest.approx((6 * per_layer + 2 * h * h + 2 * h * 2) / 1e9)
    assert computed_gflops(config, s, include_head=False) == pytest.approx(layers * per_layer / 1e9)


def test_measured_accepts_a_tensor_of_ids() -> None:
    model = make_tiny_bert(num_layers=1)
    batch = _unpadded_batch()
    assert measured_gflops(model, batch["input_ids"]) == pytest.approx(measured_gflops(model, batch))
