"""NF4 through bitsandbytes on tiny random BERTs, unpruned and head/FFN-pruned.

Tolerances are relative to the spread (max - min) of the fp32 logits, as in test_precision.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from slimbert.compression.heads import prune_ffn, prune_heads
from slimbert.compression.nf4 import quantize_nf4
from slimbert.runtime.nf4 import fit_cpu_packing, load_nf4
from slimbert.runtime.shapes import from_pretrained_pruned
from tests.unit.test_onnx_int8 import assert_close_to_spread, save_tiny_checkpoint, tiny_inputs

bnb = pytest.importorskip("bitsandbytes")

# NF4 weights (16 levels per 64-block): observed ~5-10% of the spread on a hidden-64 model.
NF4_REL_TOL = 0.3


def _model64() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def checkpoint64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt64"), model=_model64())


@pytest.fixture(scope="module")
def pruned64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One head of four gone in layer 0 (attention width 48) and FFN widths 100 and 77: what
    head/FFN pruning makes, and what transformers' own 4-bit loading cannot rebuild."""
    model = _model64()
    prune_heads(model, {0: [2]})
    prune_ffn(model, {0: list(range(100)), 1: list(range(51, 128))})
    return save_tiny_checkpoint(tmp_path_factory.mktemp("pruned64"), model=model)


def _logits(model: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in tiny_inputs().items()}).logits
    return np.asarray(out.float().numpy())


def _fp32_logits(path: Path) -> np.ndarray:
    return _logits(from_pretrained_pruned(BertForSequenceClassification, path))


def test_nf4_quantizes_every_linear_but_the_classifier(checkpoint64: Path, tmp_path: Path) -> None:
    result = quantize_nf4(checkpoint64, tmp_path, compute_dtype="bf16")
    assert (result.runtime, result.precision) == ("bitsandbytes", "int4")
    assert result.params["storage"] == "nf4" and result.params["nf4_layers"] == 2 * 6 + 1  # 6 per layer + pooler
    model = load_nf4(tmp_path)
    assert isinstance(model.get_submodule("bert.encoder.layer.0.attention.self.query"), bnb.nn.Linear4bit)
    assert isinstance(model.get_submodule("bert.pooler.dense"), bnb.nn.Linear4bit)
    classifier = model.get_submodule("classifier")
    assert type(classifier) is torch.nn.Linear and classifier.weight.dtype == torch.float32
    assert_close_to_spread(_logits(model), _fp32_logits(checkpoint64), NF4_REL_TOL)
    assert (tmp_path / "model.safetensors").stat().st_size < (checkpoint64 / "model.safetensors").stat().st_size


def test_unpruned_nf4_also_loads_with_plain_from_pretrained(checkpoint64: Path, tmp_path: Path) -> None:
    """The stored form is transformers' own 4-bit checkpoint, not a private one."""
    quantize_nf4(checkpoint64, tmp_path, compute_dtype="fp32")
    ours = _logits(load_nf4(tmp_path))
    theirs = AutoModelForSequenceClassification.from_pretrained(tmp_path, device_map="cpu", dtype=torch.float32)
    assert isinstance(theirs.get_submodule("bert.encoder.layer.1.output.dense"), bnb.nn.Linear4bit)
    np.testing.assert_allclose(_logits(theirs.eval()), ours, rtol=0, atol=1e-5)


def test_nf4_of_a_head_and_ffn_pruned_model(pruned64: Path, tmp_path: Path) -> None:
    result = quantize_nf4(pruned64, tmp_path, compute_dtype="fp32")
    model = load_nf4(tmp_path)
    layer0, layer1 = (model.get_submodule(f"bert.encoder.layer.{i}") for i in (0, 1))
    assert isinstance(layer0.attention.output.dense, bnb.nn.Linear4bit)
    assert layer0.attention.output.dense.in_features == 48
    assert [layer0.intermediate.dense.out_features, layer1.intermediate.dense.out_features] == [100, 77]
    assert [layer0.output.dense.in_features, layer1.output.dense.in_features] == [100, 77]
    assert_close_to_spread(_logits(model), _fp32_logits(pruned64), NF4_REL_TOL)
    # Widths 48, 100 and 77 do not fit the AVX512-BF16 repacking (out in 32s, in in 64s); those stay generic:
    # layer 0: query/key/value (out 48), attention output (in 48), FFN up (out 100), FFN down (in 100);
    # layer 1: FFN up (out 77), FFN down (in 77).
    assert result.params["generic_cpu_path_layers"] == 8
    assert all(m.support_avx512bf16_for_cpu is False for m in (layer0.attention.output.dense, layer1.output.dense))


def test_fit_cpu_packing_leaves_aligned_layers_alone() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 48), torch.nn.Linear(48, 64))
    from slimbert.compression.nf4 import quantize_linear

    for i in range(3):
        model[i] = quantize_linear(model[i], torch.float32)
        model[i].support_avx512bf16_for_cpu = True  # as on a CPU with AVX512-BF16
    assert fit_cpu_packing(model) == 2
    assert [m.support_avx512bf16_for_cpu for m in model] == [True, False, False]


def test_load_nf4_refuses_a_checkpoint_that_is_not_nf4(checkpoint64: Path) -> None:
    with pytest.raises(ValueError, match="no NF4 checkpoint"):
        load_nf4(checkpoint64)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="NF4 on CUDA needs a GPU")
def test_nf4_runs_on_cuda_and_matches_the_cpu_path(pruned64: Path, tmp_path: Path) -> None:
    """The same stored NF4 variant (pruned widths included) served on the GPU: bitsandbytes' CUDA kernels
    give the CPU path's logits to NF4 precision, and the weights stay 4-bit on the device."""
    quantize_nf4(pruned64, tmp_path, compute_dtype="bf16")
    model = load_nf4(tmp_path, device="cuda")
    dense = model.get_submodule("bert.encoder.layer.1.output.dense")
    assert isinstance(dense, bnb.nn.Linear4bit) and dense.weight.device.type == "cuda"
    assert dense.weight.dtype == torch.uint8  # packed 4-bit pairs, not an fp copy
    with torch.no_grad():
        gpu = model(**{k: torch.from_numpy(v).cuda() for k, v in tiny_inputs().items()}).logits.float().cpu().numpy()
    assert_close_to_spread(gpu, _fp32_logits(pruned64), NF4_REL_TOL)
