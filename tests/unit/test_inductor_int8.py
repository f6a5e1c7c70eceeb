"""INT8 through torch.export + torchao's X86InductorQuantizer, compiled by Inductor, on a tiny random BERT.

Compiling takes a few seconds per shape family, so the quantized program is built once per module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from slimbert.compression.inductor_int8 import quantize_inductor_int8
from slimbert.inference.loader import load_variant
from slimbert.inference.predictor import Predictor
from slimbert.runtime.inductor import PROGRAM_FILE, CompiledProgram
from slimbert.store.manifest import Technique, VariantManifest
from tests.unit.test_onnx_int8 import assert_close_to_spread, save_tiny_checkpoint, tiny_inputs, torch_logits
from tests.unit.test_precision import STATIC_REL_TOL, calibration_texts


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def quantized(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inductor-int8")
    made = quantize_inductor_int8(checkpoint, out, calibration_texts(32), max_length=32)
    assert made.runtime == "torch-inductor" and made.precision == "int8"
    assert PROGRAM_FILE in made.files and "config.json" in made.files and "vocab.txt" in made.files
    return out


def test_program_holds_int8_weights_and_no_fp32_copies(quantized: Path, checkpoint: Path) -> None:
    program = torch.export.load(quantized / PROGRAM_FILE)
    tensors = {**program.state_dict, **program.constants}
    int8 = [name for name, t in tensors.items() if isinstance(t, torch.Tensor) and t.dtype == torch.int8]
    # 4 layers x 6 Linear (Q, K, V, attention output, FFN in and out), plus pooler and classifier.
    assert len(int8) >= 24
    big_fp32 = [name for name, t in tensors.items() if isinstance(t, torch.Tensor)
                and t.dtype == torch.float32 and t.dim() == 2 and "embeddings" not in name]
    assert big_fp32 == [], f"fp32 weight matrices left beside their int8 copies: {big_fp32}"
    # The weights shrink; on a model this tiny the file itself is mostly the serialized graph.
    stored = sum(t.numel() * t.element_size() for t in tensors.values() if isinstance(t, torch.Tensor))
    fp32_bytes = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    assert stored < 0.8 * fp32_bytes


COMPILED_AT_LOAD: dict[str, int] = {}


@pytest.fixture(scope="module")
def predictor(quantized: Path) -> Predictor:
    """Loaded (and so compiled, for batch 1 and for larger batches) once for the module."""
    manifest = VariantManifest(
        family="tiny", variant="pruned-int8-inductor", runtime="torch-inductor", precision="int8",
        base_model_id="tiny", technique=Technique(name="int8-inductor"), labels={0: "negative", 1: "positive"},
        num_parameters=1000, num_layers=4)
    loaded = load_variant(manifest, quantized, "cpu")
    COMPILED_AT_LOAD.update(counters["stats"])  # what Dynamo had compiled when load_variant returned
    return loaded


def test_compiled_logits_close_to_fp32_at_any_batch_and_length(predictor: Predictor, checkpoint: Path) -> None:
    inputs = tiny_inputs()
    expected = torch_logits(checkpoint, inputs)
    program = predictor.model  # type: ignore[attr-defined]
    assert isinstance(program, CompiledProgram)
    out = program(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    assert out.shape == expected.shape
    assert_close_to_spread(out, expected, STATIC_REL_TOL)
    # Dynamic shapes: one row, a shorter sequence, no recompilation error, same answer as the batch.
    one = program(**{k: torch.from_numpy(v[:1, :9]) for k, v in inputs.items()}).logits.numpy()
    ref_one = torch_logits(checkpoint, {k: v[:1, :9] for k, v in inputs.items()})
    assert_close_to_spread(one, ref_one, STATIC_REL_TOL)


def test_load_variant_serves_it_warm(predictor: Predictor, checkpoint: Path) -> None:
    assert predictor.runtime == "torch-inductor"
    # load_variant compiled before it returned (batch 1 and the general batch), so no request pays for it.
    assert COMPILED_AT_LOAD.get("unique_graphs", 0) >= 1
    compiled_before = dict(counters["stats"])
    texts = ["w1 w2 w3", "w4", "w9 w17 w33 w65 w90 w100 w5 w6 w7", "w120 w3", "w40 w41 w42 w43 w44"]
    out = predictor.predict(texts)
    assert np.isfinite(out.logits).all() and out.logits.shape == (len(texts), 2)
    # The served logits are the fp32 checkpoint's on the same tokens, to int8 precision.
    enc = predictor.tokenizer(texts, padding=True, return_tensors="np")  # type: ignore[attr-defined]
    expected = torch_logits(checkpoint, {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()})
    assert_close_to_spread(out.logits, expected, STATIC_REL_TOL)
    # Labels and scores are read off those logits, with the manifest's label names.
    probs = torch.softmax(torch.from_numpy(out.logits).double(), dim=-1).numpy()
    assert [p.label_id for p in out.predictions] == out.logits.argmax(axis=1).tolist()
    assert [p.label for p in out.predictions] == [["negative", "positive"][i] for i in out.logits.argmax(axis=1)]
    for p, row in zip(out.predictions, probs, strict=True):
        assert p.scores == pytest.approx({"negative": row[0], "positive": row[1]})
    # A text alone (batch 1, its own length) gets the answer it got in the padded batch.
    spread = float(expected.max() - expected.min())
    for text, row in zip(texts, out.logits, strict=True):
        np.testing.assert_allclose(predictor.predict([text]).logits[0], row, rtol=0, atol=STATIC_REL_TOL * spread)
    # Warmed: these calls met new batch sizes and lengths, and every one found a compiled graph.
    assert dict(counters["stats"]) == compiled_before
